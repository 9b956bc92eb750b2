package tun

import (
	"sync/atomic"

	"github.com/imsec/imsec/esp"
)

// peerCounters are a Peer's counters: atomic, added to by the data path
// without a lock, read by Peer.Counters.
type peerCounters struct {
	txPackets, txBytes, rxPackets, rxBytes atomic.Uint64
	spoofed, endpointMoves, keepalives     atomic.Uint64
}

// counters are a Pump's totals: atomic, added to by the data path without
// a lock, read by Pump.Counters.
type counters struct {
	txPackets, txBytes, rxPackets, rxBytes atomic.Uint64
	txPadBytes                             atomic.Uint64
	keepalivesSent, keepalivesRecv         atomic.Uint64
	dummiesSent, dummiesRecv               atomic.Uint64
	nonESP, invalid                        atomic.Uint64
	drops                                  [esp.NumReasons]atomic.Uint64
	noRoute, noSA, spoofed, notIP          atomic.Uint64
	sendErrors, readErrors, deviceErrors   atomic.Uint64
	intercepted, echoes                    atomic.Uint64
	endpointMoves                          atomic.Uint64 // every peer's, removed peers' included
}

// Counters is a snapshot of a Pump's totals.
type Counters struct {
	TxPackets, TxBytes uint64 // ESP packets sent and their inner bytes
	RxPackets, RxBytes uint64 // ESP packets accepted and their inner bytes
	// TxPadBytes is the padding added beyond the cipher's to send packets
	// of one length together (Config.BatchPad): the cost on the wire.
	TxPadBytes         uint64
	KeepalivesSent     uint64
	KeepalivesReceived uint64 // not ESP: never counted as SA liveness
	// DummiesSent and DummiesReceived count RFC 4303 dummy packets: sent
	// with each keepalive, they are authenticated, so they prove liveness and
	// move a following peer's endpoint after a NAT rebinding.
	DummiesSent, DummiesReceived uint64
	NonESP                       uint64 // RFC 3948 non-ESP marker (IKE): we run no IKE
	Invalid                      uint64 // too short to be anything
	// Drops counts ESP packets dropped by the codec, by esp.Reason
	// (unknown_spi, replay, auth, ...).
	Drops        map[string]uint64
	NoRoute      uint64 // outbound packet with no peer for its destination
	NoSA         uint64 // peer has no outbound SA yet
	Spoofed      uint64 // inner source not allowed for the peer
	NotIP        uint64 // device gave a packet that is not IPv4/IPv6
	SendErrors   uint64
	ReadErrors   uint64
	DeviceErrors uint64
	Intercepted  uint64 // consumed by Config.Intercept
	Echoes       uint64 // echo requests answered by EchoResponder
	// EndpointMoves counts authenticated packets that moved a following
	// peer's endpoint (a NAT rebinding), over all peers, removed ones too.
	EndpointMoves uint64
}

// PeerCounters is a snapshot of one peer's traffic.
type PeerCounters struct {
	TxPackets, TxBytes, RxPackets, RxBytes uint64
	Spoofed, EndpointMoves, Keepalives     uint64
}

// SACounters is the traffic of one SA direction.
type SACounters struct {
	SPI      esp.SPI
	Inbound  bool
	Peer     string
	Packets  uint64
	Bytes    uint64
	Sequence uint64 // outbound: last sequence number sent; inbound: highest seen
}

// Counters returns a snapshot of the peer's counters.
func (peer *Peer) Counters() PeerCounters {
	c := &peer.ctr
	return PeerCounters{
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(), RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(),
		Spoofed: c.spoofed.Load(), EndpointMoves: c.endpointMoves.Load(), Keepalives: c.keepalives.Load(),
	}
}

// SACounters lists the counters of every SA of peer (nil: of all peers):
// the current outbound SA and every installed inbound SA. It takes no
// lock: an SA installed or removed meanwhile may or may not be listed.
func (p *Pump) SACounters(peer *Peer) []SACounters {
	t := &p.tables
	var out []SACounters
	outbound := func(q *Peer) {
		if set := q.out.Load(); set != nil {
			for _, s := range set.all {
				out = append(out, SACounters{SPI: s.out.SPI(), Peer: q.name, Packets: s.packets.Load(), Bytes: s.bytes.Load(), Sequence: s.out.Seq()})
			}
		}
	}
	inbound := func(s *inSA) {
		out = append(out, SACounters{SPI: s.in.SPI(), Inbound: true, Peer: s.peer.name, Packets: s.packets.Load(), Bytes: s.bytes.Load(), Sequence: s.in.Highest()})
	}
	if peer == nil {
		for q := range t.peers.values() {
			outbound(q)
		}
		for s := range t.bySPI.values() {
			inbound(s)
		}
		return out
	}
	if q, _ := t.peers.get(peer.id); q == peer {
		outbound(peer)
	}
	if spis := peer.inbound.Load(); spis != nil {
		for _, spi := range spis.list {
			if s, _ := t.bySPI.get(spi); s != nil && s.peer == peer {
				inbound(s)
			}
		}
	}
	return out
}

// InboundPackets returns how many packets the inbound SA spi has accepted
// (the registrar watches the new SA set start carrying traffic).
func (p *Pump) InboundPackets(spi esp.SPI) (uint64, bool) {
	s, _ := p.tables.bySPI.get(spi)
	if s == nil {
		return 0, false
	}
	return s.packets.Load(), true
}

// Counters returns a snapshot of the totals.
func (p *Pump) Counters() Counters {
	c := &p.ctr
	out := Counters{
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(), RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(),
		TxPadBytes: c.txPadBytes.Load(), KeepalivesSent: c.keepalivesSent.Load(), KeepalivesReceived: c.keepalivesRecv.Load(),
		DummiesSent: c.dummiesSent.Load(), DummiesReceived: c.dummiesRecv.Load(),
		NonESP: c.nonESP.Load(), Invalid: c.invalid.Load(), Drops: map[string]uint64{},
		NoRoute: c.noRoute.Load(), NoSA: c.noSA.Load(), Spoofed: c.spoofed.Load(), NotIP: c.notIP.Load(),
		SendErrors: c.sendErrors.Load(), ReadErrors: c.readErrors.Load(), DeviceErrors: c.deviceErrors.Load(),
		Intercepted: c.intercepted.Load(), Echoes: c.echoes.Load(), EndpointMoves: c.endpointMoves.Load(),
	}
	for r := range esp.NumReasons {
		if v := c.drops[r].Load(); v != 0 {
			out.Drops[r.String()] = v
		}
	}
	return out
}
