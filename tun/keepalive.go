package tun

import (
	"net/netip"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/udp"
)

// keepalives sends RFC 3948 NAT-keepalives to idle peers that want them:
// a round every keepaliveTick, on a timer of the Pump's clock
// (Config.NewTimer) that it stops when Close stops it. The timer is reset
// as soon as it fires, so rounds start a tick apart, as with a time.Ticker.
func (p *Pump) keepalives() {
	defer p.wg.Done()
	t := p.cfg.NewTimer(keepaliveTick)
	defer t.Stop()
	ka := []udp.Message{{Buf: esp.Keepalive(), N: 1}}
	for {
		select {
		case <-p.stop:
			return
		case <-t.C():
		}
		t.Reset(keepaliveTick)
		p.SendKeepalives(ka)
	}
}

// SendKeepalives sends a keepalive to every peer idle for its Keepalive
// interval. It runs every second on its own (keepalives); tests with a fake
// clock call it.
func (p *Pump) SendKeepalives(scratch []udp.Message) {
	if len(scratch) == 0 {
		scratch = []udp.Message{{Buf: esp.Keepalive(), N: 1}}
	}
	if !p.keepalivesWanted.Load() {
		return // no peer ever asked: a P-CSCF's 100k peers cost no walk
	}
	now := p.cfg.Now().UnixNano()
	for peer := range p.tables.peers.values() {
		if ka := peer.keepalive.Load(); ka <= 0 || now-peer.lastSent.Load() < ka {
			continue
		}
		ep := peer.Endpoint()
		if !ep.IsValid() {
			continue
		}
		scratch[0].Addr = ep
		if _, err := p.conn.WriteBatch(scratch[:1]); err != nil {
			p.ctr.sendErrors.Add(1)
			continue
		}
		peer.lastSent.Store(now)
		peer.ctr.keepalives.Add(1)
		p.ctr.keepalivesSent.Add(1)
		p.sendDummy(peer, ep)
	}
}

// sendDummy follows a NAT-keepalive with an RFC 4303 dummy packet under
// the peer's current outbound SA. The keepalive holds the NAT mapping open
// (RFC 3948 §2.3) but is unauthenticated, so it must not move the far end's
// idea of our address; the dummy is authenticated, so after a NAT rebinding
// it lets the far end follow us even when we have nothing else to send.
func (p *Pump) sendDummy(peer *Peer, ep netip.AddrPort) {
	set := peer.out.Load()
	if set == nil || set.def == nil {
		return
	}
	var buf [outOffset + esp.TailRoom]byte
	pkt, err := set.def.out.SealDummy(buf[:], outOffset)
	if err != nil {
		p.ctr.drops[esp.ReasonOf(err)].Add(1)
		return
	}
	if _, err := p.conn.WriteBatch([]udp.Message{{Buf: pkt, N: len(pkt), Addr: ep}}); err != nil {
		p.ctr.sendErrors.Add(1)
		return
	}
	p.ctr.dummiesSent.Add(1)
}
