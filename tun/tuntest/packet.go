package tuntest

import (
	"net/netip"

	"github.com/imsec/imsec/internal/inet"
)

// UDPPacket returns an IPv4 (RFC 791) or IPv6 (RFC 8200) packet carrying
// one UDP datagram (RFC 768) from src to dst, with valid header and UDP
// checksums, TTL/hop limit 64 and DF set. src and dst must be the same
// family. It panics on a mismatch or a payload that does not fit: it is for
// building test input.
func UDPPacket(src, dst netip.AddrPort, payload []byte) []byte {
	if src.Addr().Unmap().Is4() != dst.Addr().Unmap().Is4() {
		panic("tuntest: UDPPacket address families differ")
	}
	pkt, err := inet.AppendUDP(nil, src, dst, payload)
	if err != nil {
		panic("tuntest: UDPPacket: " + err.Error())
	}
	return pkt
}
