package dhcp

import (
	"encoding/binary"
	"net/netip"

	"github.com/imsec/imsec/internal/inet"
)

// Ports of RFC 2131 §4.1.
const (
	ServerPort = 67
	ClientPort = 68
)

const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
	protoUDP      = 17
)

// appendIPv4UDP builds an IPv4 packet (no options, TTL 64, DF clear) with a
// UDP header and payload, with both checksums filled in.
func appendIPv4UDP(b []byte, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	total := ipv4HeaderLen + udpHeaderLen + len(payload)
	start := len(b)
	b = append(b, make([]byte, ipv4HeaderLen+udpHeaderLen)...)
	b = append(b, payload...)
	ip := b[start : start+ipv4HeaderLen]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(total))
	ip[8] = 64
	ip[9] = protoUDP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], inet.Checksum(inet.Sum(0, ip)))
	udp := b[start+ipv4HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpHeaderLen+len(payload)))
	c := inet.Checksum(inet.Sum(inet.PseudoSum(src, dst, protoUDP, len(udp)), udp))
	if c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return b
}

// udpDatagram is the parsed view of an IPv4/UDP packet.
type udpDatagram struct {
	src, dst     netip.Addr
	sport, dport uint16
	payload      []byte
}

// parseIPv4UDP returns the UDP datagram in pkt, or ok=false for anything
// else (not IPv4, not UDP, fragments, bad lengths or checksums).
func parseIPv4UDP(pkt []byte) (d udpDatagram, ok bool) {
	if len(pkt) < ipv4HeaderLen || pkt[0]>>4 != 4 {
		return d, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if ihl < ipv4HeaderLen || total < ihl+udpHeaderLen || total > len(pkt) || pkt[9] != protoUDP {
		return d, false
	}
	if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 { // MF set or fragment offset
		return d, false
	}
	if inet.Checksum(inet.Sum(0, pkt[:ihl])) != 0 {
		return d, false
	}
	udp := pkt[ihl:total]
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < udpHeaderLen || ulen > len(udp) {
		return d, false
	}
	d.src = netip.AddrFrom4([4]byte(pkt[12:16]))
	d.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	if binary.BigEndian.Uint16(udp[6:]) != 0 {
		if inet.Checksum(inet.Sum(inet.PseudoSum(d.src, d.dst, protoUDP, ulen), udp[:ulen])) != 0 {
			return d, false
		}
	}
	d.sport = binary.BigEndian.Uint16(udp[0:])
	d.dport = binary.BigEndian.Uint16(udp[2:])
	d.payload = udp[udpHeaderLen:ulen]
	return d, true
}

// IsToServer reports cheaply whether an inner packet is UDP to port 67: the
// server's data plane hands such packets to Server.Handle instead of routing
// them.
func IsToServer(pkt []byte) bool { return isUDPToPort(pkt, ServerPort) }

// IsToClient reports cheaply whether an inner packet is UDP to port 68.
func IsToClient(pkt []byte) bool { return isUDPToPort(pkt, ClientPort) }

func isUDPToPort(pkt []byte, port uint16) bool {
	if len(pkt) < ipv4HeaderLen+udpHeaderLen || pkt[0]>>4 != 4 || pkt[9] != protoUDP {
		return false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < ipv4HeaderLen || len(pkt) < ihl+udpHeaderLen {
		return false
	}
	return binary.BigEndian.Uint16(pkt[ihl+2:]) == port
}

// limitedBroadcast is 255.255.255.255.
var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})
