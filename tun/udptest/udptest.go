// Package udptest is an in-memory UDP network for tests of the ESP-in-UDP
// data plane: sockets (Conn) addressed by netip.AddrPort with the batch API
// of tun/udp.Conn (so a Conn is a tun.PacketConn), hooks that drop or delay
// datagrams, and a NAT that rewrites the source of an inside address and can
// rebind to a new public port, in the manner of quic-go's
// integrationtests/tools/proxy.
//
// Nothing here touches the kernel: no port is bound and no privilege is
// needed. Addresses are labels; use the documentation ranges (RFC 5737,
// RFC 3849) or shared address space (RFC 6598).
package udptest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imsec/imsec/tun/udp"
)

// Defaults for a Network.
const (
	// DefaultQueue is how many datagrams a Conn buffers before the network
	// drops more for it (a full socket buffer).
	DefaultQueue = 4096
	// DefaultBatch is a Conn's BatchSize, as udp.DefaultBatch.
	DefaultBatch = udp.DefaultBatch
	// firstEphemeral is the first port Listen picks for port 0 (RFC 6335).
	firstEphemeral = 49152
)

// Datagram is one datagram in flight, as a hook sees it: on the public
// side of any NAT (From after source translation, To before destination
// translation). Data must not be modified or kept after the hook returns.
type Datagram struct {
	From, To netip.AddrPort
	Data     []byte
}

// Stats counts what a Network did with datagrams.
type Stats struct {
	Sent       uint64 // datagrams given to WriteBatch/WriteToUDPAddrPort
	Delivered  uint64 // put in a Conn's queue
	Dropped    uint64 // lost to the Drop hook
	Unroutable uint64 // no Conn at the destination, or no NAT mapping
	QueueFull  uint64 // the destination Conn's queue was full
}

// Network connects Conns. The zero value is not usable; call NewNetwork.
type Network struct {
	queue, batch int

	mu    sync.Mutex
	conns map[netip.AddrPort]*Conn
	nats  []*NAT
	next  uint16

	drop  atomic.Pointer[func(Datagram) bool]
	delay atomic.Pointer[func(Datagram) time.Duration]

	sent, delivered, dropped, unroutable, queueFull atomic.Uint64
}

// NewNetwork returns an empty network with the default queue and batch
// sizes.
func NewNetwork() *Network {
	return &Network{queue: DefaultQueue, batch: DefaultBatch, conns: map[netip.AddrPort]*Conn{}, next: firstEphemeral}
}

// SetDrop installs a hook called for every datagram; returning true loses
// it. nil removes the hook. Safe to call while traffic flows.
func (n *Network) SetDrop(f func(Datagram) bool) {
	if f == nil {
		n.drop.Store(nil)
		return
	}
	n.drop.Store(&f)
}

// SetDelay installs a hook called for every datagram not dropped; a
// positive duration holds the datagram that long, so later ones may
// overtake it (reordering). nil removes the hook.
func (n *Network) SetDelay(f func(Datagram) time.Duration) {
	if f == nil {
		n.delay.Store(nil)
		return
	}
	n.delay.Store(&f)
}

// Stats returns the counters.
func (n *Network) Stats() Stats {
	return Stats{Sent: n.sent.Load(), Delivered: n.delivered.Load(), Dropped: n.dropped.Load(),
		Unroutable: n.unroutable.Load(), QueueFull: n.queueFull.Load()}
}

// ErrAddrInUse is returned by Listen for an address already bound.
var ErrAddrInUse = errors.New("udptest: address already in use")

// Listen binds a Conn to addr. Port 0 picks a free port. An unspecified
// address (0.0.0.0, ::) receives datagrams for its port at any address no
// other Conn holds.
func (n *Network) Listen(addr netip.AddrPort) (*Conn, error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !addr.Addr().IsValid() {
		return nil, fmt.Errorf("udptest: listen on %v: invalid address", addr)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if addr.Port() == 0 {
		p, err := n.freePortLocked(addr.Addr())
		if err != nil {
			return nil, err
		}
		addr = netip.AddrPortFrom(addr.Addr(), p)
	}
	if _, ok := n.conns[addr]; ok {
		return nil, fmt.Errorf("udptest: listen on %v: %w", addr, ErrAddrInUse)
	}
	c := &Conn{net: n, local: addr, in: make(chan datagram, n.queue), done: make(chan struct{})}
	n.conns[addr] = c
	return c, nil
}

func (n *Network) freePortLocked(a netip.Addr) (uint16, error) {
	for range 65536 - firstEphemeral {
		p := n.next
		n.next++
		if n.next == 0 {
			n.next = firstEphemeral
		}
		if _, ok := n.conns[netip.AddrPortFrom(a, p)]; !ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("udptest: no free port on %v", a)
}

// Pair returns two Conns on a fresh Network, at 198.51.100.1:4500 and
// 203.0.113.1:4500 (RFC 5737), as a UE and a P-CSCF would hold.
func Pair() (a, b *Conn) {
	n := NewNetwork()
	a, _ = n.Listen(netip.MustParseAddrPort("198.51.100.1:4500"))
	b, _ = n.Listen(netip.MustParseAddrPort("203.0.113.1:4500"))
	return a, b
}

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// send routes one datagram; b is already a private copy.
func (n *Network) send(from, to netip.AddrPort, b []byte) {
	n.sent.Add(1)
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	n.mu.Lock()
	// Source NAT on the way out of an inside address.
	for _, t := range n.nats {
		if from.Addr() == t.inside && to.Addr() != t.inside {
			from = t.outLocked(from)
			break
		}
	}
	n.mu.Unlock()

	d := Datagram{From: from, To: to, Data: b}
	if f := n.drop.Load(); f != nil && (*f)(d) {
		n.dropped.Add(1)
		return
	}
	if f := n.delay.Load(); f != nil {
		if wait := (*f)(d); wait > 0 {
			time.AfterFunc(wait, func() { n.deliver(from, to, b) })
			return
		}
	}
	n.deliver(from, to, b)
}

// deliver does destination NAT and queues the datagram at its Conn.
func (n *Network) deliver(from, to netip.AddrPort, b []byte) {
	n.mu.Lock()
	for _, t := range n.nats {
		if to.Addr() == t.public {
			in, ok := t.in[to.Port()]
			if !ok {
				n.mu.Unlock()
				n.unroutable.Add(1)
				return
			}
			to = in
			break
		}
	}
	c, ok := n.conns[to]
	if !ok {
		any := netip.IPv4Unspecified()
		if to.Addr().Is6() {
			any = netip.IPv6Unspecified()
		}
		c, ok = n.conns[netip.AddrPortFrom(any, to.Port())]
	}
	n.mu.Unlock()
	if !ok {
		n.unroutable.Add(1)
		return
	}
	select {
	case <-c.done:
		n.unroutable.Add(1)
	case c.in <- datagram{b: b, from: from}:
		n.delivered.Add(1)
	default:
		n.queueFull.Add(1)
	}
}

// NAT translates the source of datagrams leaving an inside address to a
// public address, with endpoint-independent mapping and filtering (RFC
// 4787 §4.1, §5: one public port per inside address and port, and anyone
// may send to it). Datagrams between two Conns on the inside address are
// not translated.
type NAT struct {
	net            *Network
	inside, public netip.Addr
	out            map[netip.AddrPort]uint16 // inside -> public port
	in             map[uint16]netip.AddrPort // public port -> inside
	next           uint16
}

// AddNAT puts the inside address behind a NAT whose public address is
// public. Conns should listen on the inside address; their peers see the
// public one.
func (n *Network) AddNAT(inside, public netip.Addr) (*NAT, error) {
	inside, public = inside.Unmap(), public.Unmap()
	if !inside.IsValid() || !public.IsValid() || inside == public || inside.Is4() != public.Is4() {
		return nil, fmt.Errorf("udptest: NAT %v -> %v invalid", inside, public)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, t := range n.nats {
		if t.inside == inside || t.public == public {
			return nil, fmt.Errorf("udptest: NAT %v -> %v overlaps %v -> %v", inside, public, t.inside, t.public)
		}
	}
	t := &NAT{net: n, inside: inside, public: public, out: map[netip.AddrPort]uint16{}, in: map[uint16]netip.AddrPort{}, next: 30000}
	n.nats = append(n.nats, t)
	return t, nil
}

func (t *NAT) outLocked(from netip.AddrPort) netip.AddrPort {
	p, ok := t.out[from]
	if !ok {
		for {
			p = t.next
			t.next++
			if t.next == 0 {
				t.next = 1024
			}
			if _, used := t.in[p]; !used {
				break
			}
		}
		t.out[from] = p
		t.in[p] = from
	}
	return netip.AddrPortFrom(t.public, p)
}

// Rebind forgets every mapping, as a NAT does when its bindings time out
// or it restarts: the next datagram from each inside socket leaves from a
// new public port, and datagrams to the old ports are lost.
func (t *NAT) Rebind() {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	clear(t.out)
	clear(t.in)
}

// Public returns the public address the inside socket is mapped to, if it
// has sent anything since the last Rebind.
func (t *NAT) Public(inside netip.AddrPort) (netip.AddrPort, bool) {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	p, ok := t.out[netip.AddrPortFrom(inside.Addr().Unmap(), inside.Port())]
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(t.public, p), true
}

// Conn is a UDP socket on a Network. One goroutine may read while others
// write. Close unblocks a pending read; reads and writes after Close return
// an error matching net.ErrClosed.
type Conn struct {
	net       *Network
	local     netip.AddrPort
	in        chan datagram
	done      chan struct{}
	closeOnce sync.Once

	quiet   atomic.Bool  // the last SetQuiet
	quieted atomic.Int64 // SetQuiet(true) calls that changed it
}

// SetQuiet records what a reader asked of udp.Conn.SetQuiet; the
// in-memory socket has no poller to leave. Quiet reports it.
func (c *Conn) SetQuiet(quiet bool) error {
	if c.quiet.Swap(quiet) != quiet && quiet {
		c.quieted.Add(1)
	}
	return nil
}

// Quiet reports the last SetQuiet, and how many times the socket went
// quiet.
func (c *Conn) Quiet() (quiet bool, times int64) { return c.quiet.Load(), c.quieted.Load() }

// LocalAddr returns the bound address.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// BatchSize is the most datagrams one ReadBatch returns.
func (c *Conn) BatchSize() int { return c.net.batch }

func (c *Conn) closedErr(op string) error {
	return &net.OpError{Op: op, Net: "udp", Source: net.UDPAddrFromAddrPort(c.local), Err: net.ErrClosed}
}

// ReadBatch blocks until a datagram arrives, then fills up to len(msgs)
// with those already queued: msgs[i].N and msgs[i].Addr (the source) are
// set. A datagram longer than msgs[i].Buf is truncated, as a UDP socket
// does.
func (c *Conn) ReadBatch(msgs []udp.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, errors.New("udptest: ReadBatch with no messages")
	}
	select {
	case <-c.done:
		return 0, c.closedErr("read")
	default:
	}
	var d datagram
	select {
	case <-c.done:
		return 0, c.closedErr("read")
	case d = <-c.in:
	}
	n := 0
	for {
		msgs[n].N = copy(msgs[n].Buf, d.b)
		msgs[n].Addr = d.from
		n++
		if n == len(msgs) {
			return n, nil
		}
		select {
		case d = <-c.in:
		default:
			return n, nil
		}
	}
}

// WriteBatch sends msgs[i].Buf[:N] to msgs[i].Addr, copying each, and
// returns how many were sent (all, unless the Conn is closed). Loss in the
// network is not an error, as with UDP.
func (c *Conn) WriteBatch(msgs []udp.Message) (int, error) {
	for i, m := range msgs {
		select {
		case <-c.done:
			return i, c.closedErr("write")
		default:
		}
		if !m.Addr.IsValid() || m.N > len(m.Buf) || m.N < 0 {
			return i, &net.OpError{Op: "write", Net: "udp", Source: net.UDPAddrFromAddrPort(c.local), Err: errors.New("udptest: bad message")}
		}
		c.net.send(c.local, m.Addr, append([]byte(nil), m.Buf[:m.N]...))
	}
	return len(msgs), nil
}

// ReadFromUDPAddrPort reads one datagram, as *net.UDPConn.
func (c *Conn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	m := []udp.Message{{Buf: b}}
	if _, err := c.ReadBatch(m); err != nil {
		return 0, netip.AddrPort{}, err
	}
	return m[0].N, m[0].Addr, nil
}

// WriteToUDPAddrPort sends one datagram, as *net.UDPConn.
func (c *Conn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if _, err := c.WriteBatch([]udp.Message{{Buf: b, N: len(b), Addr: addr}}); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close unbinds the Conn and unblocks its reader. It is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.net.mu.Lock()
		if c.net.conns[c.local] == c {
			delete(c.net.conns, c.local)
		}
		c.net.mu.Unlock()
	})
	return nil
}
