package tun

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/udp"
)

// PacketConn is the ESP-in-UDP socket a Pump sends and receives on:
// *udp.Conn on real sockets, an in-memory pair in tests. One goroutine calls
// ReadBatch; WriteBatch may be called from several. After Close, ReadBatch
// returns an error.
type PacketConn interface {
	ReadBatch(msgs []udp.Message) (int, error)
	WriteBatch(msgs []udp.Message) (int, error)
	BatchSize() int
	LocalAddr() netip.AddrPort
	Close() error
}

var _ PacketConn = (*udp.Conn)(nil)

// Config configures a Pump. Zero values are the documented defaults.
type Config struct {
	Device Device     // the plaintext side; the Pump closes it on Close
	Conn   PacketConn // the ESP-in-UDP side; the Pump closes it on Close

	// Intercept, if set, sees every authenticated inner packet before the
	// source check and the Device: returning true consumes it (the gateway
	// answers DHCP this way, the UE takes its DHCP replies). pkt is only
	// valid during the call.
	Intercept func(p *Peer, pkt []byte) bool

	// EchoResponder, if valid, is an inner address whose ICMP echo requests
	// the Pump answers itself, from any peer, even one with no inner address
	// yet: the gateway's answer to the UE's "pinhole" ping.
	EchoResponder netip.Addr

	// ParallelSeal has a second goroutine seal half of every large batch
	// the Device gives (16 packets or more) while the first seals the other
	// half, so that one busy SA's encryption uses two cores. Packets keep
	// their order and their sequence numbers follow it.
	ParallelSeal bool

	// BatchPad is the most padding the Pump adds to one packet (RFC 4303
	// §2.4 padding, beyond what the cipher needs) so that consecutive
	// packets to one peer have one length and leave in one segmented UDP
	// send (GSO), which costs the kernel one trip down the stack instead of
	// one per packet. A packet is only padded up to the length of another
	// packet of the same pass, so nothing grows past the path MTU. 0 means
	// DefaultBatchPad; a negative value turns padding off. It does nothing
	// while the socket does not segment (it has no Offload method, as
	// udp.Conn has, or that says no GSO).
	BatchPad int

	Logger *slog.Logger     // default: discard
	Now    func() time.Time // default: time.Now
}

// Pump moves packets between a Device and ESP-in-UDP for a set of peers: the
// UE has one (the gateway, default route), the gateway one per registered
// UE (routed by inner address). Read Config for the hooks.
//
// Outbound: a packet read from the Device is routed by its inner
// destination to a peer, sealed under the peer's current outbound SA and
// sent to the peer's endpoint. Inbound: a datagram is classified (RFC 3948):
// keepalives and non-ESP are counted and dropped; ESP is looked up by SPI,
// opened, and its inner source must be one the peer may use; then it goes to
// the Device. A peer that follows its source (FollowSource) has its endpoint
// moved only by authenticated ESP, so a NAT rebinding is followed and a
// forged or replayed packet moves nothing.
type Pump struct {
	cfg     Config
	dev     Device
	conn    PacketConn
	offload offloader // conn, if it can say whether it segments; else nil
	log     *slog.Logger
	peers   atomic.Pointer[peerTables]
	wmu     sync.Mutex // serialises table writers
	ctr     counters
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	pingMu  sync.Mutex
	pingWho map[uint32]chan time.Time // pinhole pings waiting for a reply
}

// peerTables is the copy-on-write routing state read per packet.
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
	in      *esp.Inbound
	peer    *Peer
	packets atomic.Uint64
	bytes   atomic.Uint64
}

// outSet is the immutable set of outbound SAs of a peer: the first selector
// matching a packet's transport ports wins, else def.
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
	out     *esp.Outbound
	packets atomic.Uint64
	bytes   atomic.Uint64
}

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
type Peer struct {
	name      string
	follow    bool
	keepalive atomic.Int64 // nanoseconds; 0: off
	endpoint  atomic.Pointer[netip.AddrPort]
	out       atomic.Pointer[outSet]
	allowed   atomic.Pointer[[]netip.Prefix]
	routes    []netip.Prefix // guarded by Pump.wmu
	lastSent  atomic.Int64   // unix nanos of the last datagram sent to it
	lastRecv  atomic.Int64   // unix nanos of the last authenticated ESP from it
	ctr       peerCounters
}

type peerCounters struct {
	txPackets, txBytes, rxPackets, rxBytes atomic.Uint64
	spoofed, endpointMoves, keepalives     atomic.Uint64
}

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

// Buffer geometry. Outbound packets are read from the Device at outOffset,
// which leaves room for the ESP header and IV (≤ esp.HeaderRoom) and the
// Device's own scratch (MinOffset); the buffer's tail holds padding and
// ICV. Inbound datagrams are read at inOffset so that, after Open, the inner
// packet has at least MinOffset bytes before it for the Device.
const (
	outOffset = 64
	inOffset  = MinOffset
	// maxPacket bounds one inner packet; the Device MTU must not exceed it.
	maxPacket = 65535
)

// ErrClosedPump is returned by methods called after Close.
var ErrClosedPump = errors.New("tun: pump closed")

// NewPump starts a Pump: one goroutine reads the Device, one seals and
// sends what it read, one reads the socket, one sends keepalives. Close
// stops them.
func NewPump(cfg Config) (*Pump, error) {
	if cfg.Device == nil || cfg.Conn == nil {
		return nil, errors.New("tun: pump needs a Device and a PacketConn")
	}
	if cfg.Device.MTU() > maxPacket-outOffset-esp.TailRoom {
		return nil, fmt.Errorf("tun: device MTU %d too large", cfg.Device.MTU())
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.BatchPad == 0 {
		cfg.BatchPad = DefaultBatchPad
	}
	p := &Pump{cfg: cfg, dev: cfg.Device, conn: cfg.Conn, log: cfg.Logger, stop: make(chan struct{}), pingWho: map[uint32]chan time.Time{}}
	p.offload, _ = cfg.Conn.(offloader)
	p.peers.Store(&peerTables{bySPI: map[esp.SPI]*inSA{}, byAddr: map[netip.Addr]*Peer{}})
	r := newOutRing(cfg.Device.BatchSize(), outOffset+cfg.Device.MTU()+esp.TailRoom)
	var h *sealHelper
	if cfg.ParallelSeal {
		h = &sealHelper{tasks: make(chan sealTask), done: make(chan struct{}, 1)}
		p.wg.Add(1)
		go p.sealHelper(h)
	}
	p.wg.Add(4)
	go p.readDevice(r)
	go p.outbound(r, h)
	go p.inbound()
	go p.keepalives()
	return p, nil
}

// Close stops the Pump, closes its Device and socket and waits for every
// goroutine. It is idempotent.
func (p *Pump) Close() error {
	p.once.Do(func() {
		close(p.stop)
		p.dev.Close()
		p.conn.Close()
	})
	p.wg.Wait()
	return nil
}

func (p *Pump) closed() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// LocalAddr is the socket's bound address.
func (p *Pump) LocalAddr() netip.AddrPort { return p.conn.LocalAddr() }

// ---- peer and SA management (rare writers, copy-on-write) ----

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

// AddPeer adds a peer with its routes; it has no SAs yet.
func (p *Pump) AddPeer(c PeerConfig) (*Peer, error) {
	peer := &Peer{name: c.Name, follow: c.FollowSource}
	peer.keepalive.Store(int64(c.Keepalive))
	ep := c.Endpoint
	peer.endpoint.Store(&ep)
	allowed := append([]netip.Prefix(nil), c.Allowed...)
	peer.allowed.Store(&allowed)
	err := p.update(func(t *peerTables) error {
		if err := addRoutes(t, peer, c.Routes); err != nil {
			return err
		}
		peer.routes = append([]netip.Prefix(nil), c.Routes...)
		t.peers = append(t.peers, peer)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return peer, nil
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

// SetRoutes replaces the inner destinations routed to peer (the gateway
// adds the UE's lease once DHCP has bound it).
func (p *Pump) SetRoutes(peer *Peer, routes []netip.Prefix) error {
	return p.update(func(t *peerTables) error {
		removeRoutes(t, peer)
		if err := addRoutes(t, peer, routes); err != nil {
			return err
		}
		peer.routes = append([]netip.Prefix(nil), routes...)
		return nil
	})
}

// RemovePeer removes a peer, its routes and every inbound SA it owns.
func (p *Pump) RemovePeer(peer *Peer) error {
	return p.update(func(t *peerTables) error {
		removeRoutes(t, peer)
		for spi, s := range t.bySPI {
			if s.peer == peer {
				delete(t.bySPI, spi)
			}
		}
		kept := t.peers[:0]
		for _, q := range t.peers {
			if q != peer {
				kept = append(kept, q)
			}
		}
		t.peers = kept
		peer.out.Store(nil)
		return nil
	})
}

// AddInbound installs an inbound SA for peer. Several may be installed at
// once (during rekeying the old and the new set both open).
func (p *Pump) AddInbound(peer *Peer, in *esp.Inbound) error {
	return p.update(func(t *peerTables) error {
		if s := t.bySPI[in.SPI()]; s != nil {
			return fmt.Errorf("tun: inbound SPI %#x is in use", uint32(in.SPI()))
		}
		t.bySPI[in.SPI()] = &inSA{in: in, peer: peer}
		return nil
	})
}

// RemoveInbound deletes the inbound SA with spi.
func (p *Pump) RemoveInbound(spi esp.SPI) error {
	return p.update(func(t *peerTables) error {
		if t.bySPI[spi] == nil {
			return fmt.Errorf("tun: no inbound SPI %#x", uint32(spi))
		}
		delete(t.bySPI, spi)
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
	old := map[*esp.Outbound]*outSA{}
	if cur := peer.out.Load(); cur != nil {
		for _, s := range cur.all {
			old[s.out] = s
		}
	}
	set := &outSet{}
	wrap := func(o *esp.Outbound) *outSA {
		if o == nil {
			return nil
		}
		if s := old[o]; s != nil {
			return s
		}
		s := &outSA{out: o}
		old[o] = s
		return s
	}
	seen := map[*outSA]bool{}
	add := func(s *outSA) {
		if s != nil && !seen[s] {
			seen[s] = true
			set.all = append(set.all, s)
		}
	}
	set.def = wrap(def)
	add(set.def)
	for _, x := range sel {
		if x.SA == nil {
			continue
		}
		w := wrap(x.SA)
		set.sel = append(set.sel, outSel{src: x.SrcPort, dst: x.DstPort, sa: w})
		add(w)
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
	a := append([]netip.Prefix(nil), prefixes...)
	peer.allowed.Store(&a)
}

// Name is the peer's name.
func (peer *Peer) Name() string { return peer.name }

// SetKeepalive changes the keepalive interval (0 turns keepalives off).
func (peer *Peer) SetKeepalive(d time.Duration) { peer.keepalive.Store(int64(d)) }

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

// Counters returns a snapshot of the peer's counters.
func (peer *Peer) Counters() PeerCounters {
	c := &peer.ctr
	return PeerCounters{
		TxPackets: c.txPackets.Load(), TxBytes: c.txBytes.Load(), RxPackets: c.rxPackets.Load(), RxBytes: c.rxBytes.Load(),
		Spoofed: c.spoofed.Load(), EndpointMoves: c.endpointMoves.Load(), Keepalives: c.keepalives.Load(),
	}
}

// SACounters lists the counters of every SA of peer (nil: of all peers):
// the current outbound SA and every installed inbound SA.
func (p *Pump) SACounters(peer *Peer) []SACounters {
	t := p.peers.Load()
	var out []SACounters
	for _, q := range t.peers {
		if peer != nil && q != peer {
			continue
		}
		if set := q.out.Load(); set != nil {
			for _, s := range set.all {
				out = append(out, SACounters{SPI: s.out.SPI(), Peer: q.name, Packets: s.packets.Load(), Bytes: s.bytes.Load(), Sequence: s.out.Seq()})
			}
		}
	}
	for _, s := range t.bySPI {
		if peer != nil && s.peer != peer {
			continue
		}
		out = append(out, SACounters{SPI: s.in.SPI(), Inbound: true, Peer: s.peer.name, Packets: s.packets.Load(), Bytes: s.bytes.Load(), Sequence: s.in.Highest()})
	}
	return out
}

// InboundPackets returns how many packets the inbound SA spi has accepted
// (the registrar watches the new SA set start carrying traffic).
func (p *Pump) InboundPackets(spi esp.SPI) (uint64, bool) {
	s := p.peers.Load().bySPI[spi]
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
		Intercepted: c.intercepted.Load(), Echoes: c.echoes.Load(),
	}
	for r := range esp.NumReasons {
		if v := c.drops[r].Load(); v != 0 {
			out.Drops[r.String()] = v
		}
	}
	return out
}

// ---- the data path ----

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

// Outbound is a pipeline of two goroutines joined by a ring of packet
// buffers (outRing): readDevice fills the ring from the Device, outbound
// seals what is there and sends it in one WriteBatch. The Device's read
// (a system call per packet on a TUN when there is no offload) runs on one
// core while sealing runs on the other, and under load every WriteBatch
// carries whatever arrived during the previous one: small packets, which a
// TUN hands over one per read, still leave in batches. Packets keep their
// order, and so do their ESP sequence numbers, because one goroutine seals.
//
// The ring holds depth batches of the Device's BatchSize buffers; readDevice
// waits for room for a whole batch (a TUN with segmentation offload fills up
// to BatchSize from one read) and outbound frees slots once sent.
type outRing struct {
	bufs  [][]byte // slots, then the first batch-1 slots again: every Read gets batch contiguous entries
	sizes []int    // of each slot (the mirrored tail is copied back)
	slots uint64
	batch int

	head, tail atomic.Uint64 // slots filled (readDevice), slots sent (outbound)
	filled     chan struct{} // wakes outbound; capacity 1
	drained    chan struct{} // wakes readDevice; capacity 1
}

// outRingBytes bounds the ring's memory; it holds 2 to 8 batches.
const outRingBytes = 2 << 20

func newOutRing(batch, size int) *outRing {
	depth := min(max(outRingBytes/(batch*size), 2), 8)
	slots := depth * batch
	r := &outRing{slots: uint64(slots), batch: batch, sizes: make([]int, slots+batch-1),
		filled: make(chan struct{}, 1), drained: make(chan struct{}, 1)}
	r.bufs = make([][]byte, slots+batch-1)
	for i := range slots {
		r.bufs[i] = make([]byte, size)
	}
	copy(r.bufs[slots:], r.bufs[:batch-1])
	return r
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// readDevice fills the ring from the Device until it is closed.
func (p *Pump) readDevice(r *outRing) {
	defer p.wg.Done()
	defer close(r.filled) // outbound's signal to stop
	head := r.head.Load()
	for {
		for head-r.tail.Load() > r.slots-uint64(r.batch) {
			select {
			case <-r.drained:
			case <-p.stop:
				return
			}
		}
		i := int(head % r.slots)
		n, err := p.dev.Read(r.bufs[i:i+r.batch], r.sizes[i:i+r.batch], outOffset)
		if err != nil && n == 0 {
			if p.closed() || errors.Is(err, ErrClosed) {
				return
			}
			p.ctr.deviceErrors.Add(1)
			continue
		}
		if over := i + n - int(r.slots); over > 0 {
			copy(r.sizes[:over], r.sizes[r.slots:int(r.slots)+over])
		}
		head += uint64(n)
		r.head.Store(head)
		wake(r.filled)
	}
}

// outbound seals the packets readDevice puts in the ring and sends them.
//
// Each pass takes everything in the ring: it routes every packet to a peer
// and an outbound SA, reserves each run's sequence numbers (one atomic
// operation per run of packets under one SA), seals the runs in batches
// (AES-CBC encrypts eight packets at once, HMAC-SHA1 authenticates up to
// four), and sends the lot with one WriteBatch. With ParallelSeal the
// sealHelper goroutine seals the second half of a large pass meanwhile;
// that is off by default because on the two-core machine the targets are
// set on the other core is already busy with readDevice, inbound and the
// kernel, and splitting measured slower (see bench/doc.go).
func (p *Pump) outbound(r *outRing, h *sealHelper) {
	defer p.wg.Done()
	if h != nil {
		defer close(h.tasks)
	}
	var (
		msgs  = make([]udp.Message, r.slots)
		jobs  = make([]esp.SealJob, r.slots)
		sas   = make([]*outSA, r.slots)
		peers = make([]*Peer, r.slots)
	)
	tail := r.tail.Load()
	for {
		head := r.head.Load()
		if head == tail {
			if _, ok := <-r.filled; !ok {
				return
			}
			continue
		}
		t := p.peers.Load()
		k, bytes := 0, 0
		for ; tail != head && !passFull(k, bytes); tail++ {
			i := int(tail % r.slots)
			pkt := r.bufs[i][outOffset : outOffset+r.sizes[i]]
			bytes += len(pkt)
			peer, s := p.outSA(t, pkt)
			if s == nil {
				continue
			}
			jobs[k] = esp.SealJob{Buf: r.bufs[i], Off: outOffset, N: len(pkt)}
			sas[k], peers[k] = s, peer
			k++
		}
		if p.padding() {
			forRuns(jobs[:k], sas, func(out *esp.Outbound, run []esp.SealJob) { padRun(out, run, p.cfg.BatchPad) })
		}
		forRuns(jobs[:k], sas, func(out *esp.Outbound, run []esp.SealJob) { out.Reserve(run) })
		if h != nil && k >= parallelMin {
			half := k / 2
			h.tasks <- sealTask{jobs: jobs[half:k], sas: sas[half:k]}
			sealRuns(jobs[:half], sas)
			<-h.done
		} else {
			sealRuns(jobs[:k], sas)
		}
		p.send(msgs[:p.sealed(jobs[:k], sas, peers, msgs)])
		r.tail.Store(tail)
		wake(r.drained)
	}
}

// passFull reports whether an outbound pass with k packets of bytes bytes
// in all should stop and send: at passSmall packets of under
// passSmallSize bytes on average, else at passMax packets. A pass is
// serial (seal all, then one sendmmsg, during which the kernel also runs
// the receiving side of a local peer), so small passes of small packets
// overlap better with the rest of the path: in tun mode on two cores,
// passes of 16 small packets carry about 15% more packets/s than passes
// of everything waiting. Large packets fill a 64 KB GSO send at about
// 45 packets, and passes below that cost throughput.
func passFull(k, bytes int) bool {
	return k >= passMax || (k >= passSmall && bytes < k*passSmallSize)
}

const (
	passSmall     = 16
	passSmallSize = 512
	passMax       = 48
)

// parallelMin is the smallest batch ParallelSeal splits.
const parallelMin = 16

// sealHelper is ParallelSeal's second sealing goroutine: outbound hands it
// the second half of a batch and waits on done after sealing the first.
type sealHelper struct {
	tasks chan sealTask // closed by outbound when it stops
	done  chan struct{}
}

// sealTask is part of a reserved batch, with each job's SA.
type sealTask struct {
	jobs []esp.SealJob
	sas  []*outSA
}

func (p *Pump) sealHelper(h *sealHelper) {
	defer p.wg.Done()
	for t := range h.tasks {
		sealRuns(t.jobs, t.sas)
		h.done <- struct{}{}
	}
}

// sealRuns seals reserved jobs, sas[i] being job i's SA.
func sealRuns(jobs []esp.SealJob, sas []*outSA) {
	forRuns(jobs, sas, func(out *esp.Outbound, run []esp.SealJob) { out.SealReserved(run) })
}

// DefaultBatchPad is Config.BatchPad's default: 64 bytes, what a packet
// already carries in outer IPv4, UDP and AES-CBC/HMAC-SHA-1-96 ESP headers
// (20 + 8 + 8 + 16 + 12). With it, small packets of mixed sizes through
// kernel TUNs went from 173k to 297k packets/s per direction (medians of
// `bench/compare.sh -d 10s -r 3`), at 22 bytes of padding per packet on
// average; a limit of 240 bytes gave about 10% more at 64 bytes a packet.
const DefaultBatchPad = 64

// offloader is a PacketConn that tells whether it segments sends (GSO) and
// coalesces receives (GRO), as udp.Conn does.
type offloader interface{ Offload() (gso, gro bool) }

// padding reports whether outbound passes are padded now: BatchPad is on
// and the socket segments (udp.Conn stops if the kernel refuses GSO).
func (p *Pump) padding() bool {
	if p.cfg.BatchPad <= 0 || p.offload == nil {
		return false
	}
	gso, _ := p.offload.Offload()
	return gso
}

// padRun sets the Pad of jobs, one SA's consecutive packets, for the UDP
// writer, which sends consecutive datagrams of one length, and one shorter
// one last, as one segmented send. Each group of consecutive packets whose
// ESP lengths can all reach the group's longest, with at most limit bytes
// of extra padding and within the room of their buffers, gets that one
// length, except its last packet: it may stay shorter, and so may the
// packet after the group if it is shorter than the group's length.
func padRun(out *esp.Outbound, jobs []esp.SealJob, limit int) {
	espLen := func(j *esp.SealJob) int { return j.N + out.Overhead(j.N) }
	for lo := 0; lo < len(jobs); {
		top, ceil := 0, math.MaxInt // the group's length; the most all can reach
		hi := lo
		for ; hi < len(jobs); hi++ {
			j := &jobs[hi]
			l := espLen(j)
			room := min(out.MaxPad(j.N), limit, len(j.Buf)-(j.Off-out.HeaderLen()+l))
			t, c := max(top, l), min(ceil, l+room)
			if t > c && hi > lo {
				break
			}
			top, ceil = t, c
		}
		if hi < len(jobs) && espLen(&jobs[hi]) < top {
			hi++ // a shorter packet that could not reach top ends the send as it is
		}
		for i := lo; i < hi-1; i++ {
			jobs[i].Pad = top - espLen(&jobs[i])
		}
		jobs[hi-1].Pad = 0
		lo = hi
	}
}

// forRuns calls f for each run of consecutive jobs under one SA.
func forRuns(jobs []esp.SealJob, sas []*outSA, f func(*esp.Outbound, []esp.SealJob)) {
	for lo := 0; lo < len(jobs); {
		hi := lo + 1
		for hi < len(jobs) && sas[hi] == sas[lo] {
			hi++
		}
		f(sas[lo].out, jobs[lo:hi])
		lo = hi
	}
}

// outSA routes an inner packet to its peer and the SA that seals it,
// counting the packet if there is none.
func (p *Pump) outSA(t *peerTables, pkt []byte) (*Peer, *outSA) {
	_, dst, ok := innerAddrs(pkt)
	if !ok {
		p.ctr.notIP.Add(1)
		return nil, nil
	}
	peer := t.route(dst)
	if peer == nil {
		p.ctr.noRoute.Add(1)
		return nil, nil
	}
	s := peer.pickSA(pkt)
	if s == nil {
		p.ctr.noSA.Add(1)
		return nil, nil
	}
	return peer, s
}

// pickSA returns the outbound SA that seals pkt to peer, or nil.
func (peer *Peer) pickSA(pkt []byte) *outSA {
	if set := peer.out.Load(); set != nil {
		return set.pick(pkt)
	}
	return nil
}

// sealed turns the sealed jobs into datagrams in msgs, counts them (and the
// failures), and returns how many there are.
func (p *Pump) sealed(jobs []esp.SealJob, sas []*outSA, peers []*Peer, msgs []udp.Message) int {
	now := p.cfg.Now().UnixNano()
	m := 0
	var bytes, pad uint64
	for i := range jobs {
		j := &jobs[i]
		if j.Err != nil {
			p.ctr.drops[esp.ReasonOf(j.Err)].Add(1)
			continue
		}
		s, peer := sas[i], peers[i]
		s.packets.Add(1)
		s.bytes.Add(uint64(j.N))
		peer.ctr.txPackets.Add(1)
		peer.ctr.txBytes.Add(uint64(j.N))
		peer.lastSent.Store(now)
		bytes += uint64(j.N)
		pad += uint64(j.Pad)
		msgs[m] = udp.Message{Buf: j.Pkt, N: len(j.Pkt), Addr: peer.Endpoint()}
		m++
	}
	p.ctr.txPackets.Add(uint64(m))
	p.ctr.txBytes.Add(bytes)
	if pad != 0 {
		p.ctr.txPadBytes.Add(pad)
	}
	return m
}

func (p *Pump) send(msgs []udp.Message) {
	if len(msgs) == 0 {
		return
	}
	sent, err := p.conn.WriteBatch(msgs)
	if err != nil || sent < len(msgs) {
		p.ctr.sendErrors.Add(uint64(len(msgs) - sent))
	}
}

// Inject seals one inner IP packet to peer and sends it, outside the
// Device (DHCP, the pinhole ping, the gateway's echo replies).
func (p *Pump) Inject(peer *Peer, pkt []byte) error {
	if p.closed() {
		return ErrClosedPump
	}
	buf := make([]byte, outOffset+len(pkt)+esp.TailRoom)
	copy(buf[outOffset:], pkt)
	s := peer.pickSA(pkt)
	if s == nil {
		p.ctr.noSA.Add(1)
		return errNoSeal(peer)
	}
	jobs := []esp.SealJob{{Buf: buf, Off: outOffset, N: len(pkt)}}
	s.out.SealBatch(jobs)
	msgs := make([]udp.Message, 1)
	if p.sealed(jobs, []*outSA{s}, []*Peer{peer}, msgs) == 0 {
		return errNoSeal(peer)
	}
	if _, err := p.conn.WriteBatch(msgs); err != nil {
		p.ctr.sendErrors.Add(1)
		return err
	}
	return nil
}

func errNoSeal(peer *Peer) error {
	return errors.New("tun: cannot seal to peer " + peer.name + " (no outbound SA, or SA exhausted)")
}

// inbound reads the socket, opens and writes to the Device.
func (p *Pump) inbound() {
	defer p.wg.Done()
	batch := p.conn.BatchSize()
	size := inOffset + maxPacket
	bufs := make([][]byte, batch)
	msgs := make([]udp.Message, batch)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	wbufs := make([][]byte, 0, batch)
	jobs := make([]esp.OpenJob, batch)
	sas := make([]*inSA, batch)
	idx := make([]int, batch) // of each job's datagram in msgs
	for {
		for i := range msgs {
			msgs[i] = udp.Message{Buf: bufs[i][inOffset:]}
		}
		n, err := p.conn.ReadBatch(msgs)
		if err != nil {
			if p.closed() {
				return
			}
			p.ctr.readErrors.Add(1) // transient: keep going
			select {
			case <-p.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		t := p.peers.Load()
		now := p.cfg.Now().UnixNano()
		// Find each datagram's SA, then open each run of one SA's packets
		// with one OpenBatch.
		k := 0
		for i := range n {
			d := msgs[i].Buf[:msgs[i].N]
			if s := p.inSA(t, d); s != nil {
				jobs[k], sas[k], idx[k] = esp.OpenJob{Pkt: d}, s, i
				k++
			}
		}
		for lo := 0; lo < k; {
			hi := lo + 1
			for hi < k && sas[hi] == sas[lo] {
				hi++
			}
			sas[lo].in.OpenBatch(jobs[lo:hi])
			lo = hi
		}
		wbufs = wbufs[:0]
		var rxPackets, rxBytes uint64
		for q := range k {
			j, s, i := &jobs[q], sas[q], idx[q]
			dummy := j.Err == esp.ErrDummy
			if j.Err != nil && !dummy {
				p.ctr.drops[esp.ReasonOf(j.Err)].Add(1)
				continue
			}
			payload := j.Payload
			peer := s.peer
			// Authenticated: this packet may move the peer's endpoint.
			peer.lastRecv.Store(now)
			if peer.follow && msgs[i].Addr != *peer.endpoint.Load() {
				ep := msgs[i].Addr
				peer.endpoint.Store(&ep)
				peer.ctr.endpointMoves.Add(1)
				p.log.Info("peer endpoint moved", "peer", peer.name, "endpoint", ep)
			}
			if dummy { // an authenticated keepalive: liveness, nothing to deliver
				p.ctr.dummiesRecv.Add(1)
				continue
			}
			s.packets.Add(1)
			s.bytes.Add(uint64(len(payload)))
			peer.ctr.rxPackets.Add(1)
			peer.ctr.rxBytes.Add(uint64(len(payload)))
			rxPackets++
			rxBytes += uint64(len(payload))
			if p.local(peer, payload) {
				continue
			}
			src, _, ok := innerAddrs(payload)
			if !ok {
				p.ctr.notIP.Add(1)
				continue
			}
			if !allowed(*peer.allowed.Load(), src) {
				p.ctr.spoofed.Add(1)
				peer.ctr.spoofed.Add(1)
				continue
			}
			// Open decrypted in place: the inner packet starts right after
			// the ESP header and IV. Re-slice so that it sits at MinOffset.
			start := inOffset + s.in.HeaderLen()
			wbufs = append(wbufs, bufs[i][start-MinOffset:start+len(payload)])
		}
		p.ctr.rxPackets.Add(rxPackets)
		p.ctr.rxBytes.Add(rxBytes)
		if len(wbufs) > 0 {
			if _, err := p.dev.Write(wbufs, MinOffset); err != nil {
				if p.closed() {
					return
				}
				p.ctr.deviceErrors.Add(1)
			}
		}
	}
}

// inSA classifies a datagram (RFC 3948) and returns the inbound SA of an
// ESP packet, counting everything else.
func (p *Pump) inSA(t *peerTables, d []byte) *inSA {
	switch esp.Classify(d) {
	case esp.KindKeepalive:
		p.ctr.keepalivesRecv.Add(1)
		return nil
	case esp.KindNonESP:
		p.ctr.nonESP.Add(1)
		return nil
	case esp.KindInvalid:
		p.ctr.invalid.Add(1)
		return nil
	}
	spi, err := esp.PacketSPI(d)
	if err != nil {
		p.ctr.drops[esp.ReasonOf(err)].Add(1)
		return nil
	}
	s := t.bySPI[spi]
	if s == nil {
		p.ctr.drops[esp.ReasonUnknownSPI].Add(1)
	}
	return s
}

// local handles packets the Pump answers itself; true means consumed.
func (p *Pump) local(peer *Peer, pkt []byte) bool {
	if p.cfg.Intercept != nil && p.cfg.Intercept(peer, pkt) {
		p.ctr.intercepted.Add(1)
		return true
	}
	if id, seq, ok := parseEchoReply(pkt); ok && p.pingDone(id, seq) {
		return true
	}
	if p.cfg.EchoResponder.IsValid() {
		if reply := echoReplyFor(pkt, p.cfg.EchoResponder); reply != nil {
			p.ctr.echoes.Add(1)
			if err := p.Inject(peer, reply); err != nil {
				p.log.Debug("echo reply not sent", "peer", peer.name, "err", err)
			}
			return true
		}
	}
	return false
}

func allowed(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// keepalives sends RFC 3948 NAT-keepalives to idle peers that want them.
func (p *Pump) keepalives() {
	defer p.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	ka := []udp.Message{{Buf: esp.Keepalive(), N: 1}}
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		p.SendKeepalives(ka)
	}
}

// SendKeepalives sends a keepalive to every peer idle for its Keepalive
// interval. It runs every second on its own; tests with a fake clock call it.
func (p *Pump) SendKeepalives(scratch []udp.Message) {
	if len(scratch) == 0 {
		scratch = []udp.Message{{Buf: esp.Keepalive(), N: 1}}
	}
	now := p.cfg.Now().UnixNano()
	for _, peer := range p.peers.Load().peers {
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
