package tun

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/imsec/imsec/esp"
)

// PeerConfig describes a peer.
type PeerConfig struct {
	Name     string         // for logs and counters
	Endpoint netip.AddrPort // where ESP goes (may be learned later if FollowSource)
	// FollowSource lets authenticated inbound ESP move Endpoint (NAT
	// rebinding). The gateway sets it for UEs; a UE does not for its gateway.
	FollowSource bool
	// Allowed are the inner source prefixes accepted from the peer: the UE's
	// lease (/32) at the gateway, 0.0.0.0/0 and ::/0 at the UE.
	Allowed []netip.Prefix
	// Routes are the inner destinations sent to the peer: the UE's lease at
	// the gateway, 0.0.0.0/0 at the UE. Host routes (/32, /128) are exact
	// matches; others are searched longest first.
	Routes []netip.Prefix
	// Keepalive sends an RFC 3948 NAT-keepalive (one 0xFF octet) to the
	// peer when nothing else was sent to it for this long; 0 is off.
	Keepalive time.Duration
}

// Peer is the far end of one tunnel. Its methods are safe for concurrent use.
//
// Every field the data path reads is atomic, and the pointers point at
// values that are never modified once stored (a change stores a new one):
// packets never wait for a lock.
type Peer struct {
	id        uint64                         // set once by AddPeer: its key in peerTables.peers
	name      string                         // set once by AddPeer
	follow    bool                           // set once by AddPeer
	pump      *Pump                          // set once by AddPeer
	keepalive atomic.Int64                   // nanoseconds; 0: off
	endpoint  atomic.Pointer[netip.AddrPort] // moved by SetEndpoint and, if follow, by authenticated ESP
	out       atomic.Pointer[outSet]         // nil: no outbound SA
	allowed   atomic.Pointer[prefixSet]      // never nil once AddPeer returns
	routes    []netip.Prefix                 // guarded by Pump.wmu
	// inbound are the SPIs of the inbound SAs it owns (so that RemovePeer
	// need not search the SPI table): written under Pump.wmu, a new set
	// each time; read without a lock (SACounters).
	inbound  atomic.Pointer[spiSet]
	lastSent atomic.Int64 // unix nanos of the last datagram sent to it
	lastRecv atomic.Int64 // unix nanos of the last authenticated ESP from it
	ctr      peerCounters // atomic
	// endpoint0 is the endpoint AddPeer stores: part of the Peer, so that
	// a peer costs one object fewer (a P-CSCF holds two per UE). Never
	// written after AddPeer; a move stores a new value.
	endpoint0 netip.AddrPort
}

// prefixSet is an immutable list of prefixes (Peer.allowed) in one
// object: the list points into buf when it fits (a UE's lease; a
// dual-stack UE's two take a second object). The empty set is shared.
type prefixSet struct {
	list []netip.Prefix
	buf  [1]netip.Prefix
}

var noPrefixes = &prefixSet{}

func newPrefixSet(ps []netip.Prefix) *prefixSet {
	if len(ps) == 0 {
		return noPrefixes
	}
	s := &prefixSet{}
	if len(ps) <= len(s.buf) {
		s.list = s.buf[:len(ps):len(ps)]
		copy(s.list, ps)
	} else {
		s.list = slices.Clone(ps)
	}
	return s
}

// spiSet is an immutable list of SPIs (Peer.inbound) in one object: the
// list points into buf when it fits.
type spiSet struct {
	list []esp.SPI
	buf  [2]esp.SPI // one SA set's two inbound SAs
}

// newSPISet returns the set holding base with add appended and every
// SPI for which drop is true left out (drop may be nil); nil when empty.
func newSPISet(base *spiSet, add []esp.SPI, drop func(esp.SPI) bool) *spiSet {
	s := &spiSet{}
	s.list = s.buf[:0:len(s.buf)]
	keep := func(spi esp.SPI) {
		if drop == nil || !drop(spi) {
			s.list = append(s.list, spi) // past buf, append moves to the heap
		}
	}
	if base != nil {
		for _, spi := range base.list {
			keep(spi)
		}
	}
	for _, spi := range add {
		keep(spi)
	}
	if len(s.list) == 0 {
		return nil
	}
	return s
}

// AddPeer adds a peer with its routes; it has no SAs yet.
func (p *Pump) AddPeer(c PeerConfig) (*Peer, error) {
	peer := &Peer{name: c.Name, follow: c.FollowSource, pump: p}
	peer.SetKeepalive(c.Keepalive)
	peer.endpoint0 = c.Endpoint
	peer.endpoint.Store(&peer.endpoint0)
	peer.allowed.Store(newPrefixSet(c.Allowed))
	err := p.write(func(t *peerTables) error {
		if err := t.checkRoutes(peer, c.Routes); err != nil {
			return err
		}
		p.lastID++
		peer.id = p.lastID
		t.peers.put(peer.id, peer)
		t.setRoutes(peer, c.Routes)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return peer, nil
}

// SetRoutes replaces the inner destinations routed to peer (the gateway
// adds the UE's lease once DHCP has bound it). On error nothing changes.
func (p *Pump) SetRoutes(peer *Peer, routes []netip.Prefix) error {
	return p.write(func(t *peerTables) error {
		if err := t.checkRoutes(peer, routes); err != nil {
			return err
		}
		t.setRoutes(peer, routes)
		return nil
	})
}

// RemovePeer removes a peer, its routes and every inbound SA it owns.
func (p *Pump) RemovePeer(peer *Peer) error {
	return p.write(func(t *peerTables) error {
		peer.out.Store(nil)
		t.setRoutes(peer, nil)
		if spis := peer.inbound.Load(); spis != nil {
			for _, spi := range spis.list {
				if s, _ := t.bySPI.get(spi); s != nil && s.peer == peer {
					t.bySPI.remove(spi)
				}
			}
			peer.inbound.Store(nil)
		}
		if q, _ := t.peers.get(peer.id); q == peer {
			t.peers.remove(peer.id)
		}
		return nil
	})
}

// AddInbound installs an inbound SA for peer. Several may be installed at
// once (during rekeying the old and the new set both open).
func (p *Pump) AddInbound(peer *Peer, in *esp.Inbound) error {
	return p.write(func(t *peerTables) error {
		spi := in.SPI()
		if _, used := t.bySPI.get(spi); used {
			return fmt.Errorf("tun: inbound SPI %#x is in use", uint32(spi))
		}
		t.bySPI.put(spi, &inSA{in: in, peer: peer})
		peer.inbound.Store(newSPISet(peer.inbound.Load(), []esp.SPI{spi}, nil))
		return nil
	})
}

// RemoveInbound deletes the inbound SA with spi.
func (p *Pump) RemoveInbound(spi esp.SPI) error {
	return p.write(func(t *peerTables) error {
		s, ok := t.bySPI.remove(spi)
		if !ok {
			return fmt.Errorf("tun: no inbound SPI %#x", uint32(spi))
		}
		if cur := s.peer.inbound.Load(); cur != nil {
			s.peer.inbound.Store(newSPISet(cur, nil, func(x esp.SPI) bool { return x == spi }))
		}
		return nil
	})
}

// SetOutbound makes o the SA that seals everything sent to the peer from now
// on (rekeying swaps it atomically; packets already sealed under the old one
// are still opened by the peer's old inbound SA). nil stops sending.
func (peer *Peer) SetOutbound(o *esp.Outbound) { peer.SetOutboundSAs(o, nil) }

// OutboundSA is an outbound SA with a port selector (TS 33.203 binds each
// SA to a pair of protected ports): it seals the peer's UDP and TCP packets
// whose source and destination ports match (0 matches any).
type OutboundSA struct {
	SrcPort, DstPort uint16
	SA               *esp.Outbound
}

// SetOutboundSAs installs the SAs that seal traffic to the peer: the first
// selector that matches a packet's ports wins, and def seals the rest
// (DHCP, ICMP, media). def nil stops everything that no selector takes.
// Counters carry over for SAs already installed.
func (peer *Peer) SetOutboundSAs(def *esp.Outbound, sel []OutboundSA) {
	if def == nil && len(sel) == 0 {
		peer.out.Store(nil)
		return
	}
	// An SA that stays keeps its wrapper, and with it its counters. The
	// sets are a few SAs: linear scans, no maps (this runs several times
	// per registration).
	var prev []*outSA
	if cur := peer.out.Load(); cur != nil {
		prev = cur.all
	}
	set := &outSet{}
	set.all = set.allBuf[:0:len(set.allBuf)]
	set.sel = set.selBuf[:0:len(set.selBuf)]
	if len(sel) > len(set.selBuf) { // past the buffers, append moves to the heap
		set.sel = make([]outSel, 0, len(sel))
		set.all = make([]*outSA, 0, len(sel)+1)
	}
	// New wrappers come from one array, sized for the worst case.
	var fresh []outSA
	wrap := func(o *esp.Outbound) *outSA {
		if o == nil {
			return nil
		}
		for _, s := range set.all {
			if s.out == o {
				return s
			}
		}
		var w *outSA
		for _, s := range prev {
			if s.out == o {
				w = s
				break
			}
		}
		if w == nil {
			if fresh == nil {
				fresh = make([]outSA, 0, len(sel)+1)
			}
			fresh = fresh[:len(fresh)+1]
			w = &fresh[len(fresh)-1]
			w.out = o
		}
		set.all = append(set.all, w)
		return w
	}
	set.def = wrap(def)
	for _, x := range sel {
		if x.SA == nil {
			continue
		}
		set.sel = append(set.sel, outSel{src: x.SrcPort, dst: x.DstPort, sa: wrap(x.SA)})
	}
	peer.out.Store(set)
}

// Outbound returns the default outbound SA, or nil.
func (peer *Peer) Outbound() *esp.Outbound {
	if s := peer.out.Load(); s != nil && s.def != nil {
		return s.def.out
	}
	return nil
}

// SetAllowed replaces the inner source prefixes accepted from the peer.
func (peer *Peer) SetAllowed(prefixes []netip.Prefix) {
	peer.allowed.Store(newPrefixSet(prefixes))
}

// Name is the peer's name.
func (peer *Peer) Name() string { return peer.name }

// SetKeepalive changes the keepalive interval (0 turns keepalives off).
func (peer *Peer) SetKeepalive(d time.Duration) {
	peer.keepalive.Store(int64(d))
	if d > 0 && peer.pump != nil {
		peer.pump.keepalivesWanted.Store(true)
	}
}

// Endpoint is where ESP to the peer goes now.
func (peer *Peer) Endpoint() netip.AddrPort { return *peer.endpoint.Load() }

// SetEndpoint moves the peer's endpoint by hand.
func (peer *Peer) SetEndpoint(ep netip.AddrPort) { peer.endpoint.Store(&ep) }

// LastReceived is when authenticated ESP last came from the peer (zero if
// never). Keepalives do not count.
func (peer *Peer) LastReceived() time.Time {
	if n := peer.lastRecv.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// pickSA returns the outbound SA that seals pkt to peer, or nil.
func (peer *Peer) pickSA(pkt []byte) *outSA {
	if set := peer.out.Load(); set != nil {
		return set.pick(pkt)
	}
	return nil
}
