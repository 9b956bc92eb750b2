package tun

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/imsec/imsec/internal/inet"
)

// ICMPv4 echo (RFC 792), or ICMPv6 echo (RFC 4443), for the UE's "pinhole" ping: right after its SAs are
// installed the UE sends one UDP-encapsulated echo request to the gateway's
// inner address, so the home NAT opens a mapping for the gateway's ESP to
// come back through (the seed, §3.1, "SIP Client A", step 1).

const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
	protoICMP       = 1
	// ICMPv6 (RFC 4443 §4), for a UE whose inner address is IPv6.
	icmp6EchoRequest = 128
	icmp6EchoReply   = 129
	protoICMPv6      = 58
)

// csum is the Internet checksum of b (RFC 1071).
func csum(b []byte) uint16 { return inet.Checksum(inet.Sum(0, b)) }

// appendEcho builds an ICMP echo request or reply: ICMPv4 between IPv4
// addresses, else ICMPv6 (typ is given as ICMPv4's and mapped).
func appendEcho(b []byte, typ byte, src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	if !src.Is4() {
		return appendEcho6(b, typ, src, dst, id, seq, payload)
	}
	start := len(b)
	total := 20 + 8 + len(payload)
	b = append(b, make([]byte, 28)...)
	b = append(b, payload...)
	ip := b[start : start+20]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(total))
	ip[8] = 64
	ip[9] = protoICMP
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], csum(ip))
	ic := b[start+20:]
	ic[0] = typ
	binary.BigEndian.PutUint16(ic[4:], id)
	binary.BigEndian.PutUint16(ic[6:], seq)
	binary.BigEndian.PutUint16(ic[2:], csum(ic))
	return b
}

// appendEcho6 builds an ICMPv6 echo (hop limit 64, no extension headers),
// the checksum over the IPv6 pseudo-header (RFC 4443 §2.3).
func appendEcho6(b []byte, typ byte, src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	start := len(b)
	n := 8 + len(payload)
	b = append(b, make([]byte, 48)...)
	b = append(b, payload...)
	ip := b[start : start+40]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(n))
	ip[6] = protoICMPv6
	ip[7] = 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	ic := b[start+40:]
	ic[0] = icmp6EchoRequest
	if typ == icmpEchoReply {
		ic[0] = icmp6EchoReply
	}
	binary.BigEndian.PutUint16(ic[4:], id)
	binary.BigEndian.PutUint16(ic[6:], seq)
	setChecksum(ic, 2, protoICMPv6, src, dst)
	return b
}

// parseEcho returns an ICMP echo's fields (an ICMPv6 echo's type as
// ICMPv4's).
func parseEcho(pkt []byte) (typ byte, src, dst netip.Addr, id, seq uint16, payload []byte, ok bool) {
	if len(pkt) >= 48 && pkt[0]>>4 == 6 && pkt[6] == protoICMPv6 {
		return parseEcho6(pkt)
	}
	if len(pkt) < 28 || pkt[0]>>4 != 4 || pkt[9] != protoICMP {
		return
	}
	ihl := int(pkt[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if ihl < 20 || total > len(pkt) || total < ihl+8 || binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
		return
	}
	ic := pkt[ihl:total]
	if csum(ic) != 0 {
		return
	}
	typ = ic[0]
	if (typ != icmpEchoRequest && typ != icmpEchoReply) || ic[1] != 0 {
		return
	}
	return typ, netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])),
		binary.BigEndian.Uint16(ic[4:]), binary.BigEndian.Uint16(ic[6:]), ic[8:], true
}

func parseEcho6(pkt []byte) (typ byte, src, dst netip.Addr, id, seq uint16, payload []byte, ok bool) {
	n := int(binary.BigEndian.Uint16(pkt[4:]))
	if n < 8 || 40+n > len(pkt) {
		return
	}
	ic := pkt[40 : 40+n]
	s, d := netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
	if pseudoChecksum(ic, protoICMPv6, s, d) != 0 || ic[1] != 0 {
		return
	}
	switch ic[0] {
	case icmp6EchoRequest:
		typ = icmpEchoRequest
	case icmp6EchoReply:
		typ = icmpEchoReply
	default:
		return
	}
	return typ, s, d,
		binary.BigEndian.Uint16(ic[4:]), binary.BigEndian.Uint16(ic[6:]), ic[8:], true
}

func parseEchoReply(pkt []byte) (id, seq uint16, ok bool) {
	typ, _, _, id, seq, _, ok := parseEcho(pkt)
	return id, seq, ok && typ == icmpEchoReply
}

// echoReplyFor returns the reply to an echo request addressed to self, or nil.
func echoReplyFor(pkt []byte, self netip.Addr) []byte {
	typ, src, dst, id, seq, payload, ok := parseEcho(pkt)
	if !ok || typ != icmpEchoRequest || dst != self {
		return nil
	}
	return appendEcho(nil, icmpEchoReply, self, src, id, seq, payload)
}

// ErrNoEchoReply is returned by Ping when no reply came in time.
var ErrNoEchoReply = errors.New("tun: no ICMP echo reply")

// Ping sends one ICMP echo request from src to dst through peer's tunnel,
// outside the Device (src may be 0.0.0.0: the UE's pinhole ping goes out
// before it has an inner address), and waits for the reply, which the Pump
// takes before the Device sees it. It returns the round-trip time.
func (p *Pump) Ping(ctx context.Context, peer *Peer, src, dst netip.Addr, id, seq uint16) (time.Duration, error) {
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return 0, errors.New("tun: Ping needs two addresses of one family")
	}
	key := uint32(id)<<16 | uint32(seq)
	ch := make(chan time.Time, 1)
	p.pingMu.Lock()
	p.pingWho[key] = ch
	p.pingMu.Unlock()
	defer func() {
		p.pingMu.Lock()
		delete(p.pingWho, key)
		p.pingMu.Unlock()
	}()
	start := time.Now()
	if err := p.Inject(peer, appendEcho(nil, icmpEchoRequest, src, dst, id, seq, []byte("imsec pinhole"))); err != nil {
		return 0, err
	}
	select {
	case t := <-ch:
		return t.Sub(start), nil
	case <-ctx.Done():
		return 0, ErrNoEchoReply
	case <-p.stop:
		return 0, ErrClosedPump
	}
}

// pingDone delivers an echo reply to a waiting Ping; false if none waits.
func (p *Pump) pingDone(id, seq uint16) bool {
	p.pingMu.Lock()
	ch := p.pingWho[uint32(id)<<16|uint32(seq)]
	p.pingMu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- time.Now():
	default:
	}
	return true
}
