// Package nat is a userspace UDP NAT for tests, the demo and `imsec nat`: it
// stands between a UE ("inside") and the network ("outside") the way a home
// router does, so NAT traversal (RFC 3948 keepalives, rebinding) can be shown
// and tested without root.
//
// Because it runs on ordinary sockets rather than on a routed path, the
// inside side is a set of forwards: a UE sends to an inside address, and the
// NAT relays to that forward's destination from a mapped outside port, as a
// port-forwarding proxy would. Everything else follows RFC 4787: mapping is
// endpoint-independent (one outside port per inside endpoint) or
// address-and-port-dependent (one per inside endpoint and destination);
// filtering is endpoint-independent or address-and-port-dependent; a mapping
// lives for Timeout after its last outbound packet and is then removed, and
// the next outbound packet gets a new mapping on a different port (what a UE
// sees as NAT rebinding).
package nat

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Behaviour selects RFC 4787 mapping or filtering behaviour.
type Behaviour uint8

const (
	// EndpointIndependent: mapping reuses one outside port for every
	// destination; filtering admits any remote endpoint that a forward knows.
	EndpointIndependent Behaviour = iota
	// AddressPortDependent: mapping takes a new outside port per destination;
	// filtering admits only endpoints the mapping has sent to.
	AddressPortDependent
)

func (b Behaviour) String() string {
	if b == AddressPortDependent {
		return "address-and-port-dependent"
	}
	return "endpoint-independent"
}

// ParseBehaviour accepts "eim"/"eif"/"endpoint-independent" and
// "apdm"/"apdf"/"address-and-port-dependent".
func ParseBehaviour(s string) (Behaviour, error) {
	switch s {
	case "eim", "eif", "endpoint-independent", "ei":
		return EndpointIndependent, nil
	case "apdm", "apdf", "address-and-port-dependent", "apd":
		return AddressPortDependent, nil
	}
	return 0, fmt.Errorf("unknown NAT behaviour %q (want endpoint-independent or address-and-port-dependent)", s)
}

// DefaultTimeout is the mapping lifetime after the last outbound packet
// (RFC 4787 REQ-5 asks for at least 2 minutes; home routers often use 30 s
// for UDP, which is what makes keepalives necessary).
const DefaultTimeout = 30 * time.Second

// Forward is one inside address and where the NAT relays what arrives there.
type Forward struct {
	Inside      netip.AddrPort // where the UE sends
	Destination netip.AddrPort // the real server endpoint
}

// Config configures a NAT. Zero values are the documented defaults.
type Config struct {
	Outside   netip.Addr    // the NAT's public address; outside ports are bound here
	Forwards  []Forward     // at least one
	Mapping   Behaviour     // default endpoint-independent
	Filtering Behaviour     // default endpoint-independent
	Timeout   time.Duration // default DefaultTimeout
	// InboundRefresh makes inbound packets refresh a mapping too (RFC 4787
	// REQ-6 leaves it open); off by default, as on most home routers.
	InboundRefresh bool
	Logger         *slog.Logger     // mapping events at Info; nil: silent
	Now            func() time.Time // nil: time.Now
}

// Counters are the NAT's running totals.
type Counters struct {
	Out, In            uint64 // packets relayed outbound / inbound
	Filtered           uint64 // inbound dropped by the filtering rule
	NoRoute            uint64 // inbound from an endpoint no forward knows
	MappingsCreated    uint64
	MappingsExpired    uint64
	MappingsActive     int
	SendErrors         uint64
	OutsidePortsReused uint64 // must stay 0: re-allocation never reuses a dead port at once
}

// NAT is a running userspace NAT. Close stops it.
type NAT struct {
	cfg    Config
	inside []*net.UDPConn // one per forward, same index
	byDest map[netip.AddrPort]int
	mu     sync.Mutex
	maps   map[mapKey]*mapping
	recent map[uint16]bool // outside ports of dead mappings (not reused at once)
	closed bool
	wg     sync.WaitGroup
	stop   chan struct{}
	ctr    struct{ out, in, filtered, noRoute, created, expired, sendErr, reused atomic.Uint64 }
}

type mapKey struct {
	inside netip.AddrPort // the UE's endpoint as seen by the NAT
	dest   netip.AddrPort // zero for endpoint-independent mapping
}

type mapping struct {
	key     mapKey
	conn    *net.UDPConn
	port    uint16
	lastOut atomic.Int64 // unix nanos
	sentTo  sync.Map     // netip.AddrPort -> struct{}: for APD filtering
}

// New starts a NAT: it binds every forward's inside address, and sweeps
// expired mappings every Timeout/4 (call Sweep yourself with a fake clock).
func New(cfg Config) (*NAT, error) {
	if !cfg.Outside.IsValid() {
		return nil, errors.New("nat: no outside address")
	}
	if len(cfg.Forwards) == 0 {
		return nil, errors.New("nat: no forwards")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Timeout < 0 {
		return nil, errors.New("nat: negative timeout")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &NAT{cfg: cfg, byDest: map[netip.AddrPort]int{}, maps: map[mapKey]*mapping{}, recent: map[uint16]bool{}, stop: make(chan struct{})}
	for i, f := range cfg.Forwards {
		if _, dup := n.byDest[f.Destination]; dup {
			n.closeInside()
			return nil, fmt.Errorf("nat: destination %v forwarded twice", f.Destination)
		}
		n.byDest[f.Destination] = i
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(f.Inside))
		if err != nil {
			n.closeInside()
			return nil, fmt.Errorf("nat: inside %v: %w", f.Inside, err)
		}
		n.inside = append(n.inside, c)
	}
	for i := range n.inside {
		n.wg.Add(1)
		go n.readInside(i)
	}
	n.wg.Add(1)
	go n.sweeper()
	return n, nil
}

func (n *NAT) closeInside() {
	for _, c := range n.inside {
		c.Close()
	}
}

// InsideAddrs returns the bound inside address of each forward (useful when a
// forward asked for port 0).
func (n *NAT) InsideAddrs() []netip.AddrPort {
	out := make([]netip.AddrPort, len(n.inside))
	for i, c := range n.inside {
		out[i] = c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	return out
}

// readInside relays what the UE sends to forward i.
func (n *NAT) readInside(i int) {
	defer n.wg.Done()
	dest := n.cfg.Forwards[i].Destination
	buf := make([]byte, 65535)
	for {
		m, from, err := n.inside[i].ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		mp, err := n.mappingFor(from, dest)
		if err != nil {
			n.ctr.sendErr.Add(1)
			continue
		}
		mp.lastOut.Store(n.cfg.Now().UnixNano())
		mp.sentTo.Store(dest, struct{}{})
		if _, err := mp.conn.WriteToUDPAddrPort(buf[:m], dest); err != nil {
			n.ctr.sendErr.Add(1)
			continue
		}
		n.ctr.out.Add(1)
	}
}

// mappingFor finds or creates the mapping for an inside endpoint.
func (n *NAT) mappingFor(inside, dest netip.AddrPort) (*mapping, error) {
	key := mapKey{inside: inside}
	if n.cfg.Mapping == AddressPortDependent {
		key.dest = dest
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, net.ErrClosed
	}
	if mp := n.maps[key]; mp != nil {
		return mp, nil
	}
	var conn *net.UDPConn
	var port uint16
	for range 16 { // re-allocation must not hand out a port that just died
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(n.cfg.Outside, 0)))
		if err != nil {
			return nil, err
		}
		p := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		if !n.recent[p] {
			conn, port = c, p
			break
		}
		c.Close()
	}
	if conn == nil {
		n.ctr.reused.Add(1)
		return nil, errors.New("nat: no fresh outside port")
	}
	mp := &mapping{key: key, conn: conn, port: port}
	mp.lastOut.Store(n.cfg.Now().UnixNano())
	n.maps[key] = mp
	n.ctr.created.Add(1)
	n.cfg.Logger.Info("nat mapping created", "inside", inside, "outside", netip.AddrPortFrom(n.cfg.Outside, port), "dest", dest)
	n.wg.Add(1)
	go n.readOutside(mp)
	return mp, nil
}

// readOutside relays what arrives on a mapping's outside port back inside.
func (n *NAT) readOutside(mp *mapping) {
	defer n.wg.Done()
	buf := make([]byte, 65535)
	for {
		m, from, err := mp.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if n.cfg.Filtering == AddressPortDependent {
			if _, ok := mp.sentTo.Load(from); !ok {
				n.ctr.filtered.Add(1)
				continue
			}
		}
		fwd, ok := n.byDest[from]
		if !ok {
			n.ctr.noRoute.Add(1)
			continue
		}
		if n.cfg.InboundRefresh {
			mp.lastOut.Store(n.cfg.Now().UnixNano())
		}
		if _, err := n.inside[fwd].WriteToUDPAddrPort(buf[:m], mp.key.inside); err != nil {
			n.ctr.sendErr.Add(1)
			continue
		}
		n.ctr.in.Add(1)
	}
}

func (n *NAT) sweeper() {
	defer n.wg.Done()
	t := time.NewTicker(max(n.cfg.Timeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.Sweep()
		}
	}
}

// Sweep removes mappings idle (outbound) for longer than Timeout. It runs on
// its own every Timeout/4; tests with a fake clock call it directly.
func (n *NAT) Sweep() {
	now := n.cfg.Now().UnixNano()
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, mp := range n.maps {
		if now-mp.lastOut.Load() > int64(n.cfg.Timeout) {
			n.dropLocked(k, mp, "expired")
		}
	}
}

// Flush removes every mapping at once, as `conntrack -F` does on a router.
func (n *NAT) Flush() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, mp := range n.maps {
		n.dropLocked(k, mp, "flushed")
	}
}

func (n *NAT) dropLocked(k mapKey, mp *mapping, why string) {
	delete(n.maps, k)
	mp.conn.Close()
	n.recent[mp.port] = true
	if len(n.recent) > 4096 {
		clear(n.recent)
		n.recent[mp.port] = true
	}
	n.ctr.expired.Add(1)
	n.cfg.Logger.Info("nat mapping "+why, "inside", k.inside, "outside", netip.AddrPortFrom(n.cfg.Outside, mp.port))
}

// Mappings returns the outside endpoint of every live mapping, keyed by the
// inside endpoint (for endpoint-dependent mapping, the last one wins).
func (n *NAT) Mappings() map[netip.AddrPort]netip.AddrPort {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[netip.AddrPort]netip.AddrPort, len(n.maps))
	for k, mp := range n.maps {
		out[k.inside] = netip.AddrPortFrom(n.cfg.Outside, mp.port)
	}
	return out
}

// Counters returns a snapshot of the counters.
func (n *NAT) Counters() Counters {
	n.mu.Lock()
	active := len(n.maps)
	n.mu.Unlock()
	return Counters{
		Out: n.ctr.out.Load(), In: n.ctr.in.Load(), Filtered: n.ctr.filtered.Load(), NoRoute: n.ctr.noRoute.Load(),
		MappingsCreated: n.ctr.created.Load(), MappingsExpired: n.ctr.expired.Load(), MappingsActive: active,
		SendErrors: n.ctr.sendErr.Load(), OutsidePortsReused: n.ctr.reused.Load(),
	}
}

// Close stops the NAT and waits for its goroutines.
func (n *NAT) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	for k, mp := range n.maps {
		delete(n.maps, k)
		mp.conn.Close()
	}
	n.mu.Unlock()
	close(n.stop)
	n.closeInside()
	n.wg.Wait()
	return nil
}
