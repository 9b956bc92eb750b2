package connlimit

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Accept's back-off on temporary errors of the inner listener, as in
// net/http's Server.Serve.
const (
	firstBackoff = 5 * time.Millisecond
	maxBackoff   = time.Second
)

var _ net.Listener = (*Listener)(nil)

// Listener wraps a stream listener with the caps and timeouts of a Config.
// Accept, Close, Addr and Stats may be called from any goroutine.
type Listener struct {
	inner    net.Listener
	cfg      Config        // effective: no zero fields
	sweep    time.Duration // 0: no timeout is on, no sweeper
	headerOn bool

	mu     sync.Mutex
	closed bool
	open   int
	perSrc map[netip.Addr]int // only when MaxPerSource is on
	conns  []*conn            // only when sweep > 0; conn.idx is the index

	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	accepted, refusedTotal, refusedPerSource, refusedNoAddr atomic.Uint64
	idleTimeouts, headerTimeouts, acceptRetries             atomic.Uint64
}

// Stats are the Listener's counters since New.
type Stats struct {
	Accepted         uint64 // connections handed out by Accept
	RefusedTotal     uint64 // closed at accept: MaxConns reached
	RefusedPerSource uint64 // closed at accept: MaxPerSource reached for the source
	RefusedNoAddr    uint64 // closed at accept: already dead, no remote address
	IdleTimeouts     uint64 // closed by IdleTimeout
	HeaderTimeouts   uint64 // closed by HeaderTimeout
	AcceptRetries    uint64 // temporary errors of the inner Accept, retried after a back-off
	Open             int    // connections handed out and not yet closed
}

// New wraps ln. The Listener owns ln: its Close closes ln. If a timeout is
// on, New starts the sweeper goroutine that Close stops and joins.
func New(ln net.Listener, cfg Config) *Listener {
	l := &Listener{
		inner: ln,
		cfg:   cfg.withDefaults(fdLimit()),
		done:  make(chan struct{}),
	}
	l.sweep = l.cfg.sweepInterval()
	l.headerOn = l.cfg.HeaderTimeout > 0
	if l.cfg.MaxPerSource > 0 {
		l.perSrc = make(map[netip.Addr]int)
	}
	if l.sweep > 0 {
		l.wg.Add(1)
		go l.sweeper()
	}
	return l
}

// Config returns the effective configuration, defaults filled in.
func (l *Listener) Config() Config { return l.cfg }

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Accept returns the next connection within the caps. A connection over a
// cap is closed at once (with a TCP reset where the conn can) and counted,
// and Accept waits for the next: it never returns an error for one, since
// an error ends sipgo's accept loop. Temporary errors of the inner
// listener (EMFILE, ENFILE, ECONNABORTED, a net.Error that is Temporary or
// Timeout...) are counted and retried after a back-off of 5 ms doubling
// to 1 s. Accept returns an error only after Close (one that
// errors.Is net.ErrClosed) or for an error of the inner listener that is
// not temporary, which it returns as it is, as net/http's Server does.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.inner.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			if l.isClosed() {
				return nil, net.ErrClosed
			}
			if !temporary(err) {
				return nil, err
			}
			l.acceptRetries.Add(1)
			delay = min(max(2*delay, firstBackoff), maxBackoff)
			if !l.wait(delay) {
				return nil, net.ErrClosed
			}
			continue
		}
		delay = 0
		wc, err := l.admit(c)
		if err != nil {
			return nil, err
		}
		if wc != nil {
			return wc, nil
		}
	}
}

// wait sleeps for d, or until Close; it reports whether d passed.
func (l *Listener) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.done:
		return false
	}
}

func (l *Listener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// admit takes a slot for c and wraps it, or refuses c: then it returns a
// nil conn (and an error only if the Listener is closed).
func (l *Listener) admit(c net.Conn) (*conn, error) {
	raddr, laddr := c.RemoteAddr(), c.LocalAddr()
	if raddr == nil || laddr == nil {
		// A gVisor conn whose peer already left has no address; sipgo
		// would dereference it.
		l.refusedNoAddr.Add(1) // counted first: whoever sees the reset sees the count
		abort(c)
		return nil, nil
	}
	key := sourceKey(raddr)
	var now time.Time
	if l.sweep > 0 {
		now = l.cfg.Now()
	}
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		c.Close()
		return nil, net.ErrClosed
	case l.cfg.MaxConns > 0 && l.open >= l.cfg.MaxConns:
		l.mu.Unlock()
		l.refusedTotal.Add(1)
		abort(c)
		return nil, nil
	case l.perSrc != nil && l.perSrc[key] >= l.cfg.MaxPerSource:
		l.mu.Unlock()
		l.refusedPerSource.Add(1)
		abort(c)
		return nil, nil
	}
	l.open++
	if l.perSrc != nil {
		l.perSrc[key]++
	}
	wc := &conn{Conn: c, l: l, laddr: laddr, raddr: raddr, key: key}
	if l.sweep > 0 {
		wc.fr = newFramer()
		wc.gen.Store(wc.fr.gen)
		wc.seenGen = wc.fr.gen
		wc.lastActive, wc.genSince = now, now
		wc.idx = len(l.conns)
		l.conns = append(l.conns, wc)
	}
	l.mu.Unlock()
	l.accepted.Add(1)
	return wc, nil
}

// release gives back the slot of c; conn calls it once.
func (l *Listener) release(c *conn) {
	l.mu.Lock()
	l.open--
	if l.perSrc != nil {
		if n := l.perSrc[c.key] - 1; n > 0 {
			l.perSrc[c.key] = n
		} else {
			delete(l.perSrc, c.key)
		}
	}
	if l.sweep > 0 {
		last := len(l.conns) - 1
		l.conns[c.idx] = l.conns[last]
		l.conns[c.idx].idx = c.idx
		l.conns[last] = nil
		l.conns = l.conns[:last]
	}
	l.mu.Unlock()
}

// Close closes the inner listener, which ends a blocked Accept, and stops
// and joins the sweeper. Connections already accepted stay open (as with
// any net.Listener), keep their slots until closed, and are no longer
// timed out. A second Close returns net.ErrClosed.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return net.ErrClosed
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	err := l.inner.Close()
	l.wg.Wait()
	return err
}

// Stats returns the counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open := l.open
	l.mu.Unlock()
	return Stats{
		Accepted:         l.accepted.Load(),
		RefusedTotal:     l.refusedTotal.Load(),
		RefusedPerSource: l.refusedPerSource.Load(),
		RefusedNoAddr:    l.refusedNoAddr.Load(),
		IdleTimeouts:     l.idleTimeouts.Load(),
		HeaderTimeouts:   l.headerTimeouts.Load(),
		AcceptRetries:    l.acceptRetries.Load(),
		Open:             open,
	}
}

// sourceKey is what MaxPerSource counts by: the IPv4 address, or the /64
// of an IPv6 address (3GPP gives each UE a /64, TS 23.401 §5.3.1.2.2, and a
// host picks any address in it). Addresses that are not IP (net.Pipe)
// share the zero key.
func sourceKey(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// temporary reports whether an Accept error is one to retry.
func temporary(err error) bool {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
			syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EPROTO, syscall.EPERM:
			// accept(2): out of descriptors or memory, or a connection
			// that died in the queue, or a firewall's veto: the next
			// connection may do better.
			return true
		}
		return errno.Temporary() || errno.Timeout()
	}
	var te interface {
		Temporary() bool
		Timeout() bool
	}
	return errors.As(err, &te) && (te.Temporary() || te.Timeout())
}

// abort closes a refused connection, with a TCP reset where it can, so
// that a flood leaves no TIME_WAIT and no half-closed state behind.
func abort(c net.Conn) {
	if t, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = t.SetLinger(0)
	}
	_ = c.Close()
}
