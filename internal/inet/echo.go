package inet

import (
	"encoding/binary"
	"net/netip"
)

// ICMP echo (RFC 792; ICMPv6, RFC 4443 §4): the message types and the IP
// protocol numbers.
const (
	EchoReply    = 0
	EchoRequest  = 8
	Echo6Request = 128
	Echo6Reply   = 129
	ProtoICMP    = 1
	ProtoICMPv6  = 58
)

// PseudoSum is the sum of the pseudo-header of an n-byte segment of
// protocol proto from src to dst (RFC 768, RFC 793, RFC 8200 §8.1), to
// chain with Sum over the segment. src and dst are of one family.
func PseudoSum(src, dst netip.Addr, proto byte, n int) uint32 {
	var acc uint32
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		acc = Sum(Sum(acc, s[:]), d[:])
	} else {
		s, d := src.As16(), dst.As16()
		acc = Sum(Sum(acc, s[:]), d[:])
	}
	return acc + uint32(proto) + uint32(n)>>16 + uint32(n)&0xffff
}

// AppendEcho appends an ICMP echo request or reply (typ EchoRequest or
// EchoReply): ICMPv4 in IPv4 (TTL 64) between IPv4 addresses, else ICMPv6
// in IPv6 (hop limit 64, no extension header, the type mapped to ICMPv6's
// and the checksum over the pseudo-header, RFC 4443 §2.3).
func AppendEcho(b []byte, typ byte, src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	start := len(b)
	hl := 20
	if !src.Is4() {
		hl = 40
	}
	b = append(b, make([]byte, hl+8)...)
	b = append(b, payload...)
	ip, ic := b[start:start+hl], b[start+hl:]
	if src.Is4() {
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(ic)))
		ip[8], ip[9] = 64, ProtoICMP
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], Checksum(Sum(0, ip)))
		ic[0] = typ
	} else {
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ic)))
		ip[6], ip[7] = ProtoICMPv6, 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		ic[0] = Echo6Request
		if typ == EchoReply {
			ic[0] = Echo6Reply
		}
	}
	binary.BigEndian.PutUint16(ic[4:], id)
	binary.BigEndian.PutUint16(ic[6:], seq)
	acc := uint32(0)
	if !src.Is4() {
		acc = PseudoSum(src, dst, ProtoICMPv6, len(ic))
	}
	binary.BigEndian.PutUint16(ic[2:], Checksum(Sum(acc, ic)))
	return b
}
