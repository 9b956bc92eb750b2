package tun

import (
	"encoding/binary"
	"net/netip"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/inet"
)

// Transport mode (RFC 4303 §3.1.1). An SA in esp.Transport mode carries
// the upper-layer segment (UDP, TCP, ICMP) of a packet, not the packet:
// the outer IP header is the real one, between the two ends' own
// addresses. The Device still speaks whole IP packets, so the Pump
// converts at the SA:
//
//   - outbound, it seals the segment that follows the Device packet's IP
//     header, with that header's protocol as the Next Header, and fixes the
//     UDP or TCP checksum for the outer addresses the segment travels
//     between (TransportConfig.Outer4/Outer6 and the peer's endpoint),
//     since the Device computed it for the packet's own addresses;
//   - inbound, it writes an IP header in front of the opened segment: its
//     source is the address the ESP packet came from, its destination
//     TransportConfig.Local4 or Local6, and it recomputes the UDP or TCP
//     checksum for that header. This is also RFC 3948 §3.1.2's transport
//     mode decapsulation through a NAT: the segment's checksum was made for
//     the sender's address, which the NAT changed; a full recomputation
//     (the third of the RFC's options) accepts it, and the SA's ICV is what
//     vouches for the segment.
//
// The Device's IP header beyond the addresses and protocol is not sent:
// options, TOS and TTL of the inner packet are lost, as in any transport
// mode IPsec, and fragments are not reassembled (a fragmented inner packet
// is dropped as not_ip).

// TransportConfig gives the addresses transport mode needs (see above).
// A zero address of a family turns that family off for transport mode:
// inbound segments are dropped (counted as not_ip), outbound checksums
// are left as the Device made them (IPv4 UDP: zeroed, which RFC 768
// allows).
type TransportConfig struct {
	Local4, Local6 netip.Addr // destination of the inbound packets handed to the Device
	Outer4, Outer6 netip.Addr // our outer source address, for outbound checksums
}

// IP protocol numbers the checksum fix-ups know.
const (
	protoTCP = 6
	protoUDP = 17
)

// transportSegment returns where the segment of a Device packet starts and
// its protocol, for an outbound transport mode SA; ok false for a packet
// that cannot go (not IP, a fragment, IPv6 extension headers).
func transportSegment(pkt []byte) (hl int, proto byte, ok bool) {
	if len(pkt) < 1 {
		return 0, 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return 0, 0, false
		}
		hl = int(pkt[0]&0x0f) * 4
		if hl < 20 || hl > len(pkt) || binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or an offset: a fragment
			return 0, 0, false
		}
		return hl, pkt[9], true
	case 6:
		if len(pkt) < 40 {
			return 0, 0, false
		}
		switch pkt[6] {
		case protoTCP, protoUDP, inet.ProtoICMPv6:
			return 40, pkt[6], true
		}
	}
	return 0, 0, false
}

// fixOutboundChecksum rewrites the UDP or TCP checksum of seg (sent with
// protocol proto) for the outer addresses src -> dst. An invalid src
// leaves a TCP or IPv6 checksum as it is and zeroes an IPv4 UDP one.
func fixOutboundChecksum(seg []byte, proto byte, src, dst netip.Addr) {
	off := checksumOffset(proto, dst.Is6())
	if off < 0 || len(seg) < off+2 {
		return
	}
	if !src.IsValid() || src.Is6() != dst.Is6() {
		if proto == protoUDP && dst.Is4() {
			seg[off], seg[off+1] = 0, 0
		}
		return
	}
	setChecksum(seg, off, proto, src, dst)
}

// checksumOffset is where the checksum field of proto's header sits, or
// -1 for a protocol whose checksum does not cover the addresses.
func checksumOffset(proto byte, v6 bool) int {
	switch {
	case proto == protoUDP:
		return 6
	case proto == protoTCP:
		return 16
	case proto == inet.ProtoICMPv6 && v6:
		return 2
	}
	return -1
}

// setChecksum computes the checksum of seg over its pseudo-header
// (RFC 768, RFC 793, RFC 8200 §8.1) into seg[off:off+2].
func setChecksum(seg []byte, off int, proto byte, src, dst netip.Addr) {
	seg[off], seg[off+1] = 0, 0
	c := pseudoChecksum(seg, proto, src, dst)
	if c == 0 && proto == protoUDP {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(seg[off:], c)
}

// pseudoChecksum is the checksum of seg as it stands, pseudo-header
// included: what setChecksum writes, or 0 when a received seg checks out.
func pseudoChecksum(seg []byte, proto byte, src, dst netip.Addr) uint16 {
	return inet.Checksum(inet.Sum(inet.PseudoSum(src, dst, proto, len(seg)), seg))
}

// transportHeader writes an IP header for a segment of protocol proto,
// src -> dst, into the hl bytes of buf just before seg (hl: 20 for IPv4,
// 40 for IPv6), and fixes the segment's checksum for it. The segment must
// be in the same array as buf, right after it.
func transportHeader(hdr, seg []byte, proto byte, src, dst netip.Addr) {
	if src.Is4() {
		total := 20 + len(seg)
		hdr[0], hdr[1] = 0x45, 0
		binary.BigEndian.PutUint16(hdr[2:], uint16(total))
		hdr[4], hdr[5], hdr[6], hdr[7] = 0, 0, 0x40, 0 // DF
		hdr[8], hdr[9] = 64, proto
		hdr[10], hdr[11] = 0, 0
		s, d := src.As4(), dst.As4()
		copy(hdr[12:16], s[:])
		copy(hdr[16:20], d[:])
		binary.BigEndian.PutUint16(hdr[10:], inet.Checksum(inet.Sum(0, hdr[:20])))
	} else {
		hdr[0], hdr[1], hdr[2], hdr[3] = 0x60, 0, 0, 0
		binary.BigEndian.PutUint16(hdr[4:], uint16(len(seg)))
		hdr[6], hdr[7] = proto, 64
		s, d := src.As16(), dst.As16()
		copy(hdr[8:24], s[:])
		copy(hdr[24:40], d[:])
	}
	if off := checksumOffset(proto, src.Is6()); off >= 0 && len(seg) >= off+2 {
		if proto == protoUDP && src.Is4() && seg[off] == 0 && seg[off+1] == 0 {
			return // no checksum sent (RFC 768): none to fix
		}
		setChecksum(seg, off, proto, src, dst)
	}
}

// transportIn turns an opened transport mode segment into the packet the
// Device gets: it returns the packet (an IP header written before payload
// in buf) or nil if there is no local address of the family of src, or the
// segment is too long for one IP packet. start is payload's offset in buf.
func (p *Pump) transportIn(buf []byte, start int, payload []byte, nh byte, src netip.Addr) []byte {
	local, hl := p.cfg.Transport.Local4, 20
	if src.Is6() {
		local, hl = p.cfg.Transport.Local6, 40
	}
	if !local.IsValid() || start < hl+MinOffset || len(payload) > 0xffff-hl {
		return nil
	}
	transportHeader(buf[start-hl:start], payload, nh, src, local)
	return buf[start-hl : start+len(payload)]
}

// transportOut prepares an outbound job of a transport mode SA: it fixes
// the segment's checksum for the outer addresses and returns the segment's
// offset in the packet and its protocol.
func (p *Pump) transportOut(pkt []byte, peer *Peer) (hl int, proto byte, ok bool) {
	hl, proto, ok = transportSegment(pkt)
	if !ok {
		return 0, 0, false
	}
	dst := peer.Endpoint().Addr()
	src := p.cfg.Transport.Outer4
	if dst.Is6() {
		src = p.cfg.Transport.Outer6
	}
	if dst.IsValid() {
		fixOutboundChecksum(pkt[hl:], proto, src, dst)
	}
	return hl, proto, true
}

// isTransport reports whether an SA is in transport mode.
func isTransport(m esp.Mode) bool { return m == esp.Transport }
