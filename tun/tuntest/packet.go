package tuntest

import (
	"encoding/binary"
	"net/netip"

	"github.com/imsec/imsec/internal/inet"
)

// UDPPacket returns an IPv4 (RFC 791) or IPv6 (RFC 8200) packet carrying
// one UDP datagram (RFC 768) from src to dst, with valid header and UDP
// checksums, TTL/hop limit 64 and DF set. src and dst must be the same
// family. It panics on a mismatch or a payload that does not fit: it is for
// building test input.
func UDPPacket(src, dst netip.AddrPort, payload []byte) []byte {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() != d.Is4() {
		panic("tuntest: UDPPacket address families differ")
	}
	udpLen := 8 + len(payload)
	if udpLen > 0xffff-40 {
		panic("tuntest: UDPPacket payload too long")
	}
	var pkt []byte
	var ipHdr int
	if s.Is4() {
		ipHdr = 20
		pkt = make([]byte, ipHdr+udpLen)
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[6:], 0x4000) // DF
		pkt[8] = 64
		pkt[9] = 17
		sa, da := s.As4(), d.As4()
		copy(pkt[12:16], sa[:])
		copy(pkt[16:20], da[:])
		binary.BigEndian.PutUint16(pkt[10:], inet.Checksum(inet.Sum(0, pkt[:20])))
	} else {
		ipHdr = 40
		pkt = make([]byte, ipHdr+udpLen)
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(udpLen))
		pkt[6] = 17
		pkt[7] = 64
		sa, da := s.As16(), d.As16()
		copy(pkt[8:24], sa[:])
		copy(pkt[24:40], da[:])
	}
	u := pkt[ipHdr:]
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	copy(u[8:], payload)
	c := inet.Checksum(inet.Sum(inet.PseudoSum(s, d, 17, udpLen), u))
	if c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return pkt
}
