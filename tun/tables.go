package tun

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/imsec/imsec/esp"
)

// peerTables is the copy-on-write routing state read per packet. A
// published peerTables (Pump.peers) is immutable: update builds a new one
// under Pump.wmu and swaps it in.
type peerTables struct {
	bySPI    map[esp.SPI]*inSA
	byAddr   map[netip.Addr]*Peer // exact inner addresses (the gateway's UEs)
	prefixes []prefixRoute        // other routes, longest first (the UE's default)
	peers    []*Peer
}

type prefixRoute struct {
	p    netip.Prefix
	peer *Peer
}

// inSA is an inbound SA with its owner and counters.
type inSA struct {
	in      *esp.Inbound // set once (AddInbound); the inbound goroutine alone opens with it
	peer    *Peer        // set once
	packets atomic.Uint64
	bytes   atomic.Uint64
}

// outSet is the immutable set of outbound SAs of a peer (Peer.out, swapped
// whole by SetOutboundSAs): the first selector matching a packet's
// transport ports wins, else def.
type outSet struct {
	def *outSA
	sel []outSel
	all []*outSA // each SA once, for counters
}

type outSel struct {
	src, dst uint16 // 0 matches any port
	sa       *outSA
}

// pick returns the SA for an inner packet.
func (o *outSet) pick(pkt []byte) *outSA {
	if len(o.sel) > 0 {
		if sp, dp, ok := transportPorts(pkt); ok {
			for i := range o.sel {
				s := &o.sel[i]
				if (s.src == 0 || s.src == sp) && (s.dst == 0 || s.dst == dp) {
					return s.sa
				}
			}
		}
	}
	return o.def
}

// transportPorts returns the UDP or TCP ports of an IP packet.
func transportPorts(pkt []byte) (src, dst uint16, ok bool) {
	var off int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		if pkt[9] != 6 && pkt[9] != 17 || (uint16(pkt[6])<<8|uint16(pkt[7]))&0x1fff != 0 {
			return 0, 0, false
		}
		off = int(pkt[0]&0xf) * 4
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		if pkt[6] != 6 && pkt[6] != 17 {
			return 0, 0, false
		}
		off = 40
	default:
		return 0, 0, false
	}
	if len(pkt) < off+4 {
		return 0, 0, false
	}
	return uint16(pkt[off])<<8 | uint16(pkt[off+1]), uint16(pkt[off+2])<<8 | uint16(pkt[off+3]), true
}

// outSA is an outbound SA with its counters.
type outSA struct {
	out     *esp.Outbound // set once; esp.Outbound is safe for concurrent sealing
	packets atomic.Uint64
	bytes   atomic.Uint64
}

// update copies the tables, applies f and publishes the copy.
func (p *Pump) update(f func(t *peerTables) error) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.closed() {
		return ErrClosedPump
	}
	old := p.peers.Load()
	t := &peerTables{
		bySPI:    make(map[esp.SPI]*inSA, len(old.bySPI)+1),
		byAddr:   make(map[netip.Addr]*Peer, len(old.byAddr)+1),
		prefixes: append([]prefixRoute(nil), old.prefixes...),
		peers:    append([]*Peer(nil), old.peers...),
	}
	for k, v := range old.bySPI {
		t.bySPI[k] = v
	}
	for k, v := range old.byAddr {
		t.byAddr[k] = v
	}
	if err := f(t); err != nil {
		return err
	}
	p.peers.Store(t)
	return nil
}

func addRoutes(t *peerTables, peer *Peer, routes []netip.Prefix) error {
	for _, r := range routes {
		if !r.IsValid() {
			return fmt.Errorf("tun: invalid route %v", r)
		}
		r = r.Masked()
		if r.IsSingleIP() {
			if other := t.byAddr[r.Addr()]; other != nil && other != peer {
				return fmt.Errorf("tun: %v is already routed to peer %q", r.Addr(), other.name)
			}
			t.byAddr[r.Addr()] = peer
			continue
		}
		t.prefixes = append(t.prefixes, prefixRoute{r, peer})
	}
	// Longest prefix first.
	for i := 1; i < len(t.prefixes); i++ {
		for j := i; j > 0 && t.prefixes[j].p.Bits() > t.prefixes[j-1].p.Bits(); j-- {
			t.prefixes[j], t.prefixes[j-1] = t.prefixes[j-1], t.prefixes[j]
		}
	}
	return nil
}

func removeRoutes(t *peerTables, peer *Peer) {
	for a, q := range t.byAddr {
		if q == peer {
			delete(t.byAddr, a)
		}
	}
	kept := t.prefixes[:0]
	for _, r := range t.prefixes {
		if r.peer != peer {
			kept = append(kept, r)
		}
	}
	t.prefixes = kept
}

// route returns the peer for an inner destination.
func (t *peerTables) route(dst netip.Addr) *Peer {
	if peer := t.byAddr[dst]; peer != nil {
		return peer
	}
	for _, r := range t.prefixes {
		if r.p.Contains(dst) {
			return r.peer
		}
	}
	return nil
}

// innerAddrs returns the source and destination of an IP packet.
func innerAddrs(pkt []byte) (src, dst netip.Addr, ok bool) {
	if len(pkt) == 0 {
		return src, dst, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return src, dst, false
		}
		return netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20])), true
	case 6:
		if len(pkt) < 40 {
			return src, dst, false
		}
		return netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40])), true
	}
	return src, dst, false
}

func allowed(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
