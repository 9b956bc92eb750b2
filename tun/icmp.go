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

// parseEcho returns an ICMP echo's fields (an ICMPv6 echo's type as
// ICMPv4's).
func parseEcho(pkt []byte) (typ byte, src, dst netip.Addr, id, seq uint16, payload []byte, ok bool) {
	if len(pkt) >= 48 && pkt[0]>>4 == 6 && pkt[6] == inet.ProtoICMPv6 {
		return parseEcho6(pkt)
	}
	if len(pkt) < 28 || pkt[0]>>4 != 4 || pkt[9] != inet.ProtoICMP {
		return
	}
	ihl := int(pkt[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if ihl < 20 || total > len(pkt) || total < ihl+8 || binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
		return
	}
	ic := pkt[ihl:total]
	if inet.Checksum(inet.Sum(0, ic)) != 0 {
		return
	}
	typ = ic[0]
	if (typ != inet.EchoRequest && typ != inet.EchoReply) || ic[1] != 0 {
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
	if pseudoChecksum(ic, inet.ProtoICMPv6, s, d) != 0 || ic[1] != 0 {
		return
	}
	switch ic[0] {
	case inet.Echo6Request:
		typ = inet.EchoRequest
	case inet.Echo6Reply:
		typ = inet.EchoReply
	default:
		return
	}
	return typ, s, d,
		binary.BigEndian.Uint16(ic[4:]), binary.BigEndian.Uint16(ic[6:]), ic[8:], true
}

func parseEchoReply(pkt []byte) (id, seq uint16, ok bool) {
	typ, _, _, id, seq, _, ok := parseEcho(pkt)
	return id, seq, ok && typ == inet.EchoReply
}

// echoReplyFor appends to b the reply to an echo request addressed to
// self, or returns nil for anything else.
func echoReplyFor(b, pkt []byte, self netip.Addr) []byte {
	typ, src, dst, id, seq, payload, ok := parseEcho(pkt)
	if !ok || typ != inet.EchoRequest || dst != self {
		return nil
	}
	return inet.AppendEcho(b, inet.EchoReply, self, src, id, seq, payload)
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
	if err := p.Inject(peer, inet.AppendEcho(nil, inet.EchoRequest, src, dst, id, seq, []byte("imsec pinhole"))); err != nil {
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
