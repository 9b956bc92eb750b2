package connlimit

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeListener hands out what the test pushes, in order: conns, or errors
// for Accept to return. With synctest, everything blocks durably.
type fakeListener struct {
	q         chan acceptResult
	done      chan struct{}
	closeOnce sync.Once
	always    error // if set, Accept returns it whenever the queue is empty
}

type acceptResult struct {
	c   net.Conn
	err error
}

func newFakeListener(depth int) *fakeListener {
	return &fakeListener{q: make(chan acceptResult, depth), done: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	closed := &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	select { // the queue first, even once closed
	case r := <-f.q:
		return r.c, r.err
	default:
	}
	select {
	case <-f.done:
		return nil, closed
	default:
	}
	if f.always != nil {
		return nil, f.always
	}
	select {
	case r := <-f.q:
		return r.c, r.err
	case <-f.done:
		return nil, closed
	}
}

func (f *fakeListener) Close() error {
	f.closeOnce.Do(func() { close(f.done) })
	return nil
}

func (f *fakeListener) Addr() net.Addr { return tcpAddr("192.0.2.1:5060") }

func (f *fakeListener) push(c net.Conn)   { f.q <- acceptResult{c: c} }
func (f *fakeListener) pushErr(err error) { f.q <- acceptResult{err: err} }
func (f *fakeListener) pushErrs(es ...error) {
	for _, e := range es {
		f.pushErr(e)
	}
}

// dial queues the server end of a net.Pipe as a connection from src and
// returns the client end.
func (f *fakeListener) dial(src string) net.Conn {
	server, client := net.Pipe()
	f.push(&addrConn{Conn: server, local: tcpAddr("192.0.2.1:5060"), remote: tcpAddr(src)})
	return client
}

func tcpAddr(s string) *net.TCPAddr {
	return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s))
}

// addrConn gives a conn TCP addresses. With forget set it returns nil
// addresses once closed, as a gVisor conn does.
type addrConn struct {
	net.Conn
	local, remote net.Addr
	forget        bool
	closed        atomic.Bool
}

func (c *addrConn) LocalAddr() net.Addr {
	if c.forget && c.closed.Load() {
		return nil
	}
	return c.local
}

func (c *addrConn) RemoteAddr() net.Addr {
	if c.forget && c.closed.Load() {
		return nil
	}
	return c.remote
}

func (c *addrConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

var nopLocal = tcpAddr("192.0.2.1:5060")

// nopConn is a conn with nothing behind it, for tests and benchmarks that
// only accept and close.
type nopConn struct {
	remote net.Addr
	closes atomic.Int32
}

func (c *nopConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *nopConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *nopConn) Close() error                     { c.closes.Add(1); return nil }
func (c *nopConn) LocalAddr() net.Addr              { return nopLocal }
func (c *nopConn) RemoteAddr() net.Addr             { return c.remote }
func (c *nopConn) SetDeadline(time.Time) error      { return nil }
func (c *nopConn) SetReadDeadline(time.Time) error  { return nil }
func (c *nopConn) SetWriteDeadline(time.Time) error { return nil }

// reader drains c as sipgo's readConnection does, then closes it and
// reports the error that ended the reads.
func reader(c net.Conn) <-chan error {
	res := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := c.Read(buf); err != nil {
				c.Close()
				res <- err
				return
			}
		}
	}()
	return res
}

// pending reports the reader's result if it has one.
func pending(res <-chan error) (error, bool) {
	select {
	case err := <-res:
		return err, true
	default:
		return nil, false
	}
}

// Accept errors as the kernel and other listeners report them.
func sysErr(e syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", e)}
}

type netErr struct{ temporary, timeout bool }

func (e netErr) Error() string   { return "fake net error" }
func (e netErr) Temporary() bool { return e.temporary }
func (e netErr) Timeout() bool   { return e.timeout }

var errPermanent = errors.New("fake permanent accept error")

// mustAccept accepts one conn or fails the test.
func mustAccept(t testing.TB, l *Listener) net.Conn {
	t.Helper()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	return c
}

// checkStats compares the counters with want.
func checkStats(t testing.TB, l *Listener, want Stats) {
	t.Helper()
	if got := l.Stats(); got != want {
		t.Errorf("Stats:\n got %+v\nwant %+v", got, want)
	}
}
