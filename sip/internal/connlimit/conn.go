package connlimit

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// closedError is a timeout's reason for closing a connection. It wraps
// net.ErrClosed, so that a reader such as sipgo's, which ends quietly on
// net.ErrClosed, does not log a timeout as a read error.
type closedError struct{ msg string }

func (e *closedError) Error() string { return e.msg }
func (e *closedError) Unwrap() error { return net.ErrClosed }

// Errors that Read returns once a timeout has closed the connection. Both
// satisfy errors.Is(err, net.ErrClosed).
var (
	ErrIdleTimeout   error = &closedError{"connlimit: closed by idle timeout"}
	ErrHeaderTimeout error = &closedError{"connlimit: closed by header timeout"}
)

// conn states.
const (
	connOpen uint32 = iota
	connClosed
	connIdle   // closed by the idle timeout
	connHeader // closed by the header timeout
)

var _ net.Conn = (*conn)(nil)

// conn is an accepted connection: the inner conn, its slot, and what the
// sweeper needs to time it out. Write and the deadline setters are the
// inner conn's.
type conn struct {
	net.Conn
	l            *Listener
	laddr, raddr net.Addr   // cached: a gVisor conn forgets them once closed
	key          netip.Addr // its source, for MaxPerSource
	state        atomic.Uint32

	// Written by Read, read by the sweeper.
	active atomic.Bool   // a byte arrived since the last sweep
	gen    atomic.Uint32 // fr.gen, published

	rmu sync.Mutex // Read's framer, in case of concurrent Reads
	fr  framer

	// The sweeper's own, under l.mu.
	idx        int       // in l.conns
	lastActive time.Time // the sweep that last saw active
	genSince   time.Time // the sweep that first saw gen == seenGen
	seenGen    uint32
}

// NetConn returns the wrapped connection, as tls.Conn.NetConn does.
func (c *conn) NetConn() net.Conn { return c.Conn }

// LocalAddr returns the local address as it was at accept.
func (c *conn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the remote address as it was at accept.
func (c *conn) RemoteAddr() net.Addr { return c.raddr }

// Read reads from the inner conn and notes what arrived for the timeouts.
// Once a timeout has closed the conn, its error is ErrIdleTimeout or
// ErrHeaderTimeout.
func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.l.sweep > 0 {
		if !c.active.Load() {
			c.active.Store(true)
		}
		if c.l.headerOn {
			c.rmu.Lock()
			g := c.fr.gen
			c.fr.scan(b[:n])
			if c.fr.gen != g {
				c.gen.Store(c.fr.gen)
			}
			c.rmu.Unlock()
		}
	}
	if err != nil {
		switch c.state.Load() {
		case connIdle:
			err = ErrIdleTimeout
		case connHeader:
			err = ErrHeaderTimeout
		}
	}
	return n, err
}

// Close closes the inner conn and gives back its slot, once. Close after a
// timeout closed the conn returns nil; a second Close returns
// net.ErrClosed.
func (c *conn) Close() error {
	if c.state.CompareAndSwap(connOpen, connClosed) {
		err := c.Conn.Close()
		c.l.release(c)
		return err
	}
	if c.state.Load() == connClosed {
		return net.ErrClosed
	}
	return nil
}

// expire closes the conn for a timeout (connIdle or connHeader), unless
// it is closed already. A connection that never finished a header is
// reset; an idle one gets an orderly FIN, since it may be a UE that simply
// had nothing to say.
func (c *conn) expire(why uint32) {
	if !c.state.CompareAndSwap(connOpen, why) {
		return
	}
	// Counted before the close, so that whoever sees the close sees the
	// count.
	if why == connHeader {
		c.l.headerTimeouts.Add(1)
		abort(c.Conn)
	} else {
		c.l.idleTimeouts.Add(1)
		_ = c.Conn.Close()
	}
	c.l.release(c)
}
