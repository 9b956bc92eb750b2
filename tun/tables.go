package tun

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/imsec/imsec/esp"
)

// peerTables is the routing state the data path reads per packet: the
// Pump's (Pump.tables). Reads take no lock and do not allocate. Writes
// happen under Pump.wmu only, and each changes one entry of one table (a
// bucket of it: see table), so installing or removing an SA or a peer
// costs the same with 100k UEs as with ten. The price is that a change
// touching several tables (RemovePeer) is seen one table at a time: a
// packet may meet a peer whose routes are gone and whose SAs are not yet,
// as it may meet a peer removed just after it was looked up.
type peerTables struct {
	bySPI  table[esp.SPI, *inSA]
	byAddr table[netip.Addr, *Peer] // exact inner addresses (the gateway's UEs)
	peers  table[uint64, *Peer]     // every peer, by Peer.id
	// prefixes are the other routes, longest first (the UE's default):
	// few, so copy-on-write; nil is none.
	prefixes atomic.Pointer[[]prefixRoute]
}

func (t *peerTables) init() {
	t.bySPI.init(hashSPI)
	t.byAddr.init(hashAddr)
	t.peers.init(hashID)
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
	// sel and all point into these when they fit (a sec-agree set's two
	// selectors and SAs): a set is one object.
	selBuf [2]outSel
	allBuf [3]*outSA
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

// write runs f under wmu, unless the Pump is closed.
func (p *Pump) write(f func(t *peerTables) error) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.closed() {
		return ErrClosedPump
	}
	return f(&p.tables)
}

// checkRoutes reports whether routes can be peer's: every prefix is valid
// and no other peer holds one of its host routes. wmu must be held.
func (t *peerTables) checkRoutes(peer *Peer, routes []netip.Prefix) error {
	for _, r := range routes {
		if !r.IsValid() {
			return fmt.Errorf("tun: invalid route %v", r)
		}
		if r = r.Masked(); r.IsSingleIP() {
			if other, _ := t.byAddr.get(r.Addr()); other != nil && other != peer {
				return fmt.Errorf("tun: %v is already routed to peer %q", r.Addr(), other.name)
			}
		}
	}
	return nil
}

// setRoutes replaces peer.routes by routes, which checkRoutes has passed.
// Host routes go in byAddr one by one (the new ones first, so an address
// the peer keeps is routed throughout); the prefix list is copied only if
// the peer has or had a prefix route. wmu must be held.
func (t *peerTables) setRoutes(peer *Peer, routes []netip.Prefix) {
	old := peer.routes
	prefixes := false
	for _, r := range routes {
		if r = r.Masked(); !r.IsSingleIP() {
			prefixes = true
		} else if q, _ := t.byAddr.get(r.Addr()); q != peer {
			t.byAddr.put(r.Addr(), peer)
		}
	}
	for _, r := range old {
		if r = r.Masked(); !r.IsSingleIP() {
			prefixes = true
		} else if !hasHost(routes, r.Addr()) {
			if q, _ := t.byAddr.get(r.Addr()); q == peer {
				t.byAddr.remove(r.Addr())
			}
		}
	}
	peer.routes = append([]netip.Prefix(nil), routes...)
	if !prefixes {
		return
	}
	var list []prefixRoute
	if cur := t.prefixes.Load(); cur != nil {
		for _, r := range *cur {
			if r.peer != peer {
				list = append(list, r)
			}
		}
	}
	for _, r := range routes {
		if r = r.Masked(); !r.IsSingleIP() {
			list = append(list, prefixRoute{r, peer})
		}
	}
	// Longest prefix first; among equals, the older first.
	slices.SortStableFunc(list, func(a, b prefixRoute) int { return b.p.Bits() - a.p.Bits() })
	if len(list) == 0 {
		t.prefixes.Store(nil)
		return
	}
	t.prefixes.Store(&list)
}

// hasHost reports whether routes holds a as a host route.
func hasHost(routes []netip.Prefix, a netip.Addr) bool {
	for _, r := range routes {
		if r = r.Masked(); r.IsSingleIP() && r.Addr() == a {
			return true
		}
	}
	return false
}

// route returns the peer for an inner destination.
func (t *peerTables) route(dst netip.Addr) *Peer {
	if peer, _ := t.byAddr.get(dst); peer != nil {
		return peer
	}
	if list := t.prefixes.Load(); list != nil {
		for _, r := range *list {
			if r.p.Contains(dst) {
				return r.peer
			}
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
