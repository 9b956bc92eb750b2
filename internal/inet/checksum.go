// Package inet is the Internet checksum (RFC 1071) and the ICMP echo
// (RFC 792, RFC 4443) for the IP packets imsec builds and checks by hand,
// outside a network stack: the pump's transport mode, inner sockets and
// pinhole ping, DHCP inside the tunnels, the pcap writer, the test packet
// builders and the load generator.
package inet

// Sum adds b to the running sum acc as big-endian 16-bit words, an odd
// last byte padded with zero (RFC 1071 §4.1). Carries are folded back in
// at the end, so any number of calls can be chained; one call takes up to
// 128 KiB without overflowing.
func Sum(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return acc
}

// Checksum is the ones' complement of the folded sum acc: the value a
// checksum field gets, and 0 for data whose own checksum field is right.
func Checksum(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return ^uint16(acc)
}
