package inet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// IP and UDP headers as imsec writes them by hand (the pcap taps, the
// pump's inner sockets, test input): no options, TTL or hop limit 64, DF
// set on IPv4.

// ErrTooLarge is returned for a packet whose transport part does not fit
// in one IP packet (without an IPv6 jumbogram).
var ErrTooLarge = errors.New("datagram too large for one IP packet")

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
	protoUDP      = 17
	defaultTTL    = 64
	flagDF        = 0x4000
)

// AppendUDP appends to b an IP packet carrying one UDP datagram from src to
// dst with payload, with both checksums, and returns the extended slice (it
// allocates only if b lacks room). Addresses are handled as AppendIP says;
// a payload too large gives ErrTooLarge and b unchanged.
func AppendUDP(b []byte, src, dst netip.AddrPort, payload []byte) ([]byte, error) {
	b, u, acc, err := AppendIP(b, protoUDP, src.Addr(), dst.Addr(), udpHeaderLen+len(payload))
	if err != nil {
		return b, err
	}
	binary.BigEndian.PutUint16(u[0:], src.Port())
	binary.BigEndian.PutUint16(u[2:], dst.Port())
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	u[6], u[7] = 0, 0
	copy(u[8:], payload)
	c := Checksum(Sum(acc, u))
	if c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return b, nil
}

// AppendIP appends an IP header for a packet carrying l4Len bytes of
// protocol proto, and room for them. IPv4-mapped IPv6 addresses are
// unmapped first; the header is IPv4 when both addresses then are IPv4,
// else IPv6 (an IPv4 address becomes IPv4-mapped). An invalid (zero)
// address is written as the unspecified address of the family chosen. It
// returns the extended slice, the transport part of it (to fill in), and
// the sum of the pseudo-header (RFC 768; RFC 9293 §3.1; RFC 8200 §8.1:
// addresses, protocol and transport length) to chain with Sum. A packet too
// large gives ErrTooLarge and b unchanged.
func AppendIP(b []byte, proto uint8, src, dst netip.Addr, l4Len int) ([]byte, []byte, uint32, error) {
	s, d := src.Unmap(), dst.Unmap()
	v4 := (s.Is4() || !s.IsValid()) && (d.Is4() || !d.IsValid())
	ipLen, maxL4 := ipv6HeaderLen, 0xffff // IPv6: the payload length is 16 bits
	if v4 {
		ipLen, maxL4 = ipv4HeaderLen, 0xffff-ipv4HeaderLen // IPv4: the total length is
	}
	if l4Len > maxL4 {
		return b, nil, 0, ErrTooLarge
	}
	start := len(b)
	b = grow(b, ipLen+l4Len)
	pkt := b[start:]
	ip := pkt[:ipLen]
	clear(ip)
	var acc uint32
	if v4 {
		sa, da := as4(s), as4(d)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(ipLen+l4Len))
		binary.BigEndian.PutUint16(ip[6:], flagDF)
		ip[8] = defaultTTL
		ip[9] = proto
		copy(ip[12:16], sa[:])
		copy(ip[16:20], da[:])
		binary.BigEndian.PutUint16(ip[10:], Checksum(Sum(0, ip)))
		acc = Sum(0, ip[12:20])
	} else {
		sa, da := as16(s), as16(d)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(l4Len))
		ip[6] = proto
		ip[7] = defaultTTL
		copy(ip[8:24], sa[:])
		copy(ip[24:40], da[:])
		acc = Sum(0, ip[8:40])
	}
	acc += uint32(proto) + uint32(l4Len)
	return b, pkt[ipLen:], acc, nil
}

func as4(a netip.Addr) [4]byte {
	if !a.IsValid() {
		return [4]byte{}
	}
	return a.As4()
}

func as16(a netip.Addr) [16]byte {
	if !a.IsValid() {
		return [16]byte{}
	}
	return a.As16() // an IPv4 address comes out IPv4-mapped
}

// grow extends b by n bytes, reallocating only when its capacity is short.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}
