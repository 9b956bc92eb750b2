// Package inet is the Internet checksum (RFC 1071) and the ICMP echo
// (RFC 792, RFC 4443) for the IP packets imsec builds and checks by hand,
// outside a network stack: the pump's transport mode, inner sockets and
// pinhole ping, DHCP inside the tunnels, the pcap writer, the test packet
// builders and the load generator.
package inet

import "gvisor.dev/gvisor/pkg/tcpip/checksum"

// Sum adds b to the running sum acc as big-endian 16-bit words, an odd
// last byte padded with zero (RFC 1071 §4.1). The result is folded to 16
// bits, so any number of calls can be chained. The words are added eight
// bytes at a time by gVisor's checksum package (byte pairs one by one
// showed in the profile of a P-CSCF answering a UE's echo stream).
func Sum(acc uint32, b []byte) uint32 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint32(checksum.Checksum(b, uint16(acc)))
}

// Checksum is the ones' complement of the folded sum acc: the value a
// checksum field gets, and 0 for data whose own checksum field is right.
func Checksum(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return ^uint16(acc)
}
