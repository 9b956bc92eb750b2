package tun

import (
	"errors"
	"fmt"
	"log/slog"
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

// stamper is a PacketConn that tells when the kernel received what it
// read (udp.Conn).
type stamper interface {
	StampReceived() bool
	Received() time.Time
}

var _ stamper = (*udp.Conn)(nil)

// quieter is a PacketConn that can leave the runtime's poller
// (udp.Conn.SetQuiet), for the socket reader's keepalive coalescing.
type quieter interface {
	SetQuiet(quiet bool) error
}

var _ quieter = (*udp.Conn)(nil)

// Config configures a Pump. Zero values are the documented defaults.
type Config struct {
	Device Device     // the plaintext side; the Pump closes it on Close
	Conn   PacketConn // the ESP-in-UDP side; the Pump closes it on Close

	// Intercept, if set, sees every authenticated inner packet before the
	// source check and the Device: returning true consumes it (the gateway
	// answers DHCP this way, the UE takes its DHCP replies). pkt is only
	// valid during the call.
	Intercept func(p *Peer, pkt []byte) bool

	// OnUnknownSPI, if set, is told of an ESP packet whose SPI has no
	// inbound SA, and may install one for it (AddInbound, which is safe to
	// call from it) and return true: the Pump then opens the packet with
	// it. This lets a gateway keep the SAs of a challenge out of the Pump's
	// tables until the first packet that uses them. Without an SA the
	// packet is dropped as unknown_spi, as without the hook. It runs on the
	// inbound goroutine: it must not block, nor call the Pump otherwise.
	OnUnknownSPI func(spi esp.SPI) bool

	// OnInboundWait, if set, is told after each read of the socket how
	// long the oldest datagram read had waited in the socket's buffer: the
	// Pump asks the socket for receive times (a PacketConn with the
	// StampReceived and Received methods of udp.Conn; on others, or where
	// the kernel gives none, it is never called). A gateway falling behind
	// its UEs sees it here first. It runs on the inbound goroutine: it must
	// be quick and must not call the Pump.
	OnInboundWait func(wait time.Duration)

	// EchoResponder, if valid, is an inner address whose ICMP echo requests
	// the Pump answers itself, from any peer, even one with no inner address
	// yet: the gateway's answer to the UE's "pinhole" ping.
	EchoResponder netip.Addr

	// Transport gives the addresses the Pump needs for peers whose SAs
	// are in transport mode (transport.go). Without them such peers'
	// inbound packets are dropped.
	Transport TransportConfig

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

	// NewTimer makes the Pump's timers: the keepalive round, once a second,
	// and the pause after a failed socket read. Default: time.NewTimer.
	// With Now, it lets a test drive keepalives without sleeping. Every
	// timer it makes has been stopped when Close returns.
	NewTimer func(d time.Duration) Timer
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
	// Set once by NewPump, before the goroutines start; read-only after.
	cfg     Config // with its defaults filled in
	dev     Device
	conn    PacketConn
	offload offloader // conn, if it can say whether it segments; else nil
	stamps  stamper   // conn, if OnInboundWait is set and it gives receive times; else nil
	quieter quieter   // conn, if it can leave the runtime's poller; else nil
	log     *slog.Logger

	// tables is read per packet without a lock (see peerTables); it is
	// written only under wmu, by AddPeer, SetRoutes, RemovePeer, AddInbound
	// and RemoveInbound (through write). wmu also guards lastID,
	// Peer.routes and the writes of Peer.inbound.
	tables peerTables
	wmu    sync.Mutex
	lastID uint64 // the last Peer.id given

	// sockets are the inner UDP Sockets (socket.go), read per inbound
	// packet without a lock; replaced whole under socketsMu.
	sockets   atomic.Pointer[[]*Socket]
	socketsMu sync.Mutex

	ctr counters // atomic
	// keepalivesWanted is set once a peer has asked for NAT-keepalives
	// (never cleared): until then the keepalive round walks no peers.
	keepalivesWanted atomic.Bool

	// Lifecycle. stop is closed once, by Close (under once); every goroutine
	// NewPump starts is counted in wg and returns once stop is closed, and
	// Close waits for them.
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	pingMu  sync.Mutex
	pingWho map[uint32]chan time.Time // guarded by pingMu: pinhole pings waiting for a reply
}

// Buffer geometry. Outbound packets are read from the Device at outOffset,
// which leaves room for the ESP header and IV (≤ esp.HeaderRoom) and the
// Device's own scratch (MinOffset); the buffer's tail holds padding and
// ICV. Inbound datagrams are read at inOffset so that, after Open, the inner
// packet has at least MinOffset bytes before it for the Device.
const (
	outOffset = 64
	inOffset  = MinOffset + 40 // room for the IPv6 header a transport mode segment gets (transport.go)
	// maxPacket bounds one inner packet; the Device MTU must not exceed it.
	maxPacket = 65535
)

// ErrClosedPump is returned by methods called after Close.
var ErrClosedPump = errors.New("tun: pump closed")

// NewPump starts a Pump: one goroutine reads the Device, one seals and
// sends what it read (with ParallelSeal, a second one helps it), one reads
// the socket, one sends keepalives. Close stops them and their timers.
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
	if cfg.NewTimer == nil {
		cfg.NewTimer = newSystemTimer
	}
	if cfg.BatchPad == 0 {
		cfg.BatchPad = DefaultBatchPad
	}
	p := &Pump{cfg: cfg, dev: cfg.Device, conn: cfg.Conn, log: cfg.Logger, stop: make(chan struct{}), pingWho: map[uint32]chan time.Time{}}
	p.offload, _ = cfg.Conn.(offloader)
	p.quieter, _ = cfg.Conn.(quieter)
	if st, ok := cfg.Conn.(stamper); ok && cfg.OnInboundWait != nil && st.StampReceived() {
		p.stamps = st
	}
	p.tables.init()
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
func (p *Pump) Close() error { return p.closeWith(nil) }

// closeWith is Close, calling also (if not nil) after closing the Device
// and the socket and before waiting for the goroutines: an Endpoint closes
// the socket under a wrapper there. Only the first call's also runs.
func (p *Pump) closeWith(also func()) error {
	p.once.Do(func() {
		close(p.stop)
		p.dev.Close()
		p.conn.Close()
		if also != nil {
			also()
		}
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
