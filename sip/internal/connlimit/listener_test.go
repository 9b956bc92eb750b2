package connlimit

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// tcpRig is a Listener on a loopback TCP listener, with an accept loop
// that delivers accepted conns on a channel, as sipgo's would run.
type tcpRig struct {
	t        *testing.T
	l        *Listener
	accepted chan net.Conn
	ended    chan error
}

func newTCPRig(t *testing.T, cfg Config) *tcpRig {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &tcpRig{t: t, l: New(ln, cfg), accepted: make(chan net.Conn, 64), ended: make(chan error, 1)}
	go func() {
		for {
			c, err := r.l.Accept()
			if err != nil {
				r.ended <- err
				return
			}
			r.accepted <- c
		}
	}()
	t.Cleanup(func() {
		r.l.Close()
		if err := <-r.ended; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept ended with %v, want net.ErrClosed", err)
		}
		for {
			select {
			case c := <-r.accepted:
				c.Close()
			default:
				return
			}
		}
	})
	return r
}

// dial connects from the loopback address src (127.0.0.x).
func (r *tcpRig) dial(src string) net.Conn {
	r.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", r.l.Addr().String())
	skipNoLoopbackAlias(r.t, src, err)
	if err != nil {
		r.t.Fatalf("dial from %s: %v", src, err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// skipNoLoopbackAlias skips where 127.0.0.x other than .1 cannot be bound
// (macOS configures only 127.0.0.1); Linux routes all of 127/8 to lo.
func skipNoLoopbackAlias(t *testing.T, src string, err error) {
	t.Helper()
	if errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Skipf("cannot dial from %s here: %v", src, err)
	}
}

// admitted dials from src and returns the server's conn, checking that
// bytes flow through it.
func (r *tcpRig) admitted(src string) (client, server net.Conn) {
	r.t.Helper()
	client = r.dial(src)
	select {
	case server = <-r.accepted:
	case <-time.After(5 * time.Second):
		r.t.Fatalf("connection from %s not accepted", src)
	}
	if got := server.RemoteAddr().(*net.TCPAddr).IP.String(); got != src {
		r.t.Fatalf("accepted conn from %s, want %s", got, src)
	}
	if _, err := client.Write([]byte("x")); err != nil {
		r.t.Fatal(err)
	}
	if _, err := io.ReadFull(server, make([]byte, 1)); err != nil {
		r.t.Fatalf("read through accepted conn: %v", err)
	}
	return client, server
}

// refused dials from src and checks that the server closes the connection
// without handing it out. On Linux the close is a reset (SO_LINGER 0),
// which on loopback can arrive before connect returns.
func (r *tcpRig) refused(src string) {
	r.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", r.l.Addr().String())
	skipNoLoopbackAlias(r.t, src, err)
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if err == io.EOF && runtime.GOOS != "linux" {
			err = nil
		}
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		r.t.Fatalf("refused conn from %s: %v, want a reset", src, err)
	}
	select {
	case c := <-r.accepted:
		r.t.Fatalf("refused conn from %v was handed out", c.RemoteAddr())
	default:
	}
}

func TestTotalCap(t *testing.T) {
	r := newTCPRig(t, Config{MaxConns: 3, MaxPerSource: Off})
	_, s1 := r.admitted("127.0.0.1")
	r.admitted("127.0.0.2")
	r.admitted("127.0.0.3")
	r.refused("127.0.0.4")
	r.refused("127.0.0.1")
	checkStats(t, r.l, Stats{Accepted: 3, RefusedTotal: 2, Open: 3})
	s1.Close()
	r.admitted("127.0.0.4")
	checkStats(t, r.l, Stats{Accepted: 4, RefusedTotal: 2, Open: 3})
}

func TestPerSourceCap(t *testing.T) {
	r := newTCPRig(t, Config{MaxPerSource: 2})
	_, a1 := r.admitted("127.0.0.2")
	r.admitted("127.0.0.2")
	r.refused("127.0.0.2")
	r.admitted("127.0.0.3")
	r.admitted("127.0.0.3")
	r.refused("127.0.0.3")
	r.admitted("127.0.0.4")
	checkStats(t, r.l, Stats{Accepted: 5, RefusedPerSource: 2, Open: 5})
	a1.Close()
	r.admitted("127.0.0.2")
	r.refused("127.0.0.2")
	checkStats(t, r.l, Stats{Accepted: 6, RefusedPerSource: 3, Open: 5})
}

// Thousands of connect/close cycles through tight caps: every slot comes
// back, or a later connection would be refused.
func TestSlotsReleasedTCP(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 200
	}
	r := newTCPRig(t, Config{MaxConns: 2, MaxPerSource: 1})
	srcs := []string{"127.0.0.5", "127.0.0.6"}
	for i := range n {
		src := srcs[i%2]
		client, server := r.admitted(src)
		if i%3 == 0 { // either side may close first
			client.Close()
		}
		server.Close()
		client.Close()
	}
	checkStats(t, r.l, Stats{Accepted: uint64(n)})
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	if len(r.l.perSrc) != 0 || len(r.l.conns) != 0 {
		t.Errorf("after all closed: %d sources, %d conns tracked", len(r.l.perSrc), len(r.l.conns))
	}
}

// The same with many sources and a sweeper-tracked conn closed from the
// middle of the table, on in-memory conns.
func TestSlotsReleasedChurn(t *testing.T) {
	fl := newFakeListener(1)
	fl.always = errPermanent // a refused conn ends Accept with it instead of blocking
	l := New(fl, Config{MaxConns: 16, MaxPerSource: 4})
	defer l.Close()
	var open []net.Conn
	for i := range 20000 {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i % 4)}), 5060)
		fl.push(&nopConn{remote: net.TCPAddrFromAddrPort(src)})
		open = append(open, mustAccept(t, l))
		if len(open) == 16 {
			for len(open) > 0 { // close in a scrambled order
				j := (i * 7) % len(open)
				open[j].Close()
				open = append(open[:j], open[j+1:]...)
			}
		}
	}
	for _, c := range open {
		c.Close()
	}
	checkStats(t, l, Stats{Accepted: 20000})
	if len(l.perSrc) != 0 || len(l.conns) != 0 {
		t.Errorf("after all closed: %d sources, %d conns tracked", len(l.perSrc), len(l.conns))
	}
}

func TestCapsOff(t *testing.T) {
	t.Run("MaxConns", func(t *testing.T) {
		n := DefaultMaxConns + 50
		fl := newFakeListener(n)
		l := New(fl, Config{MaxConns: Off, MaxPerSource: Off, IdleTimeout: Off, HeaderTimeout: Off})
		defer l.Close()
		for i := range n {
			src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 5060)
			fl.push(&nopConn{remote: net.TCPAddrFromAddrPort(src)})
			mustAccept(t, l)
		}
		checkStats(t, l, Stats{Accepted: uint64(n), Open: n})
	})
	t.Run("MaxPerSource", func(t *testing.T) {
		n := 4 * DefaultMaxPerSource
		fl := newFakeListener(n)
		l := New(fl, Config{MaxPerSource: Off})
		defer l.Close()
		for range n {
			fl.push(&nopConn{remote: tcpAddr("10.0.0.1:5060")})
			mustAccept(t, l)
		}
		checkStats(t, l, Stats{Accepted: uint64(n), Open: n})
	})
	t.Run("defaults refuse", func(t *testing.T) {
		fl := newFakeListener(DefaultMaxPerSource + 1)
		l := New(fl, Config{})
		defer l.Close()
		for range DefaultMaxPerSource + 1 {
			fl.push(&nopConn{remote: tcpAddr("10.0.0.1:5060")})
		}
		for range DefaultMaxPerSource {
			mustAccept(t, l)
		}
		fl.Close() // Accept refuses the last and then meets the closed listener
		if c, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept = %v, %v; want the last conn refused, then net.ErrClosed", c, err)
		}
		checkStats(t, l, Stats{Accepted: DefaultMaxPerSource, RefusedPerSource: 1, Open: DefaultMaxPerSource})
	})
}

func TestDefaults(t *testing.T) {
	c := Config{}.withDefaults(0)
	if c.MaxConns != DefaultMaxConns || c.MaxPerSource != DefaultMaxPerSource ||
		c.IdleTimeout != DefaultIdleTimeout || c.HeaderTimeout != DefaultHeaderTimeout || c.Now == nil {
		t.Errorf("defaults: %+v", c)
	}
	if got := (Config{}).withDefaults(1024).MaxConns; got != 512 {
		t.Errorf("MaxConns under a file limit of 1024 = %d, want 512", got)
	}
	if got := (Config{}).withDefaults(1 << 20).MaxConns; got != DefaultMaxConns {
		t.Errorf("MaxConns under a file limit of 1M = %d, want %d", got, DefaultMaxConns)
	}
	if got := (Config{MaxConns: 5000}).withDefaults(1024).MaxConns; got != 5000 {
		t.Errorf("an explicit MaxConns = %d, want it kept", got)
	}
	off := Config{MaxConns: Off, MaxPerSource: Off, IdleTimeout: Off, HeaderTimeout: Off}.withDefaults(1024)
	if off.MaxConns >= 0 || off.MaxPerSource >= 0 || off.IdleTimeout >= 0 || off.HeaderTimeout >= 0 {
		t.Errorf("Off became %+v", off)
	}
	for _, tc := range []struct {
		idle, header, want time.Duration
	}{
		{DefaultIdleTimeout, DefaultHeaderTimeout, time.Second},
		{Off, 40 * time.Millisecond, minSweep},
		{800 * time.Millisecond, Off, 100 * time.Millisecond},
		{Off, Off, 0},
	} {
		if got := (Config{IdleTimeout: tc.idle, HeaderTimeout: tc.header}).sweepInterval(); got != tc.want {
			t.Errorf("sweep interval for idle %v, header %v = %v, want %v", tc.idle, tc.header, got, tc.want)
		}
	}
}

func TestSourceKey(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{tcpAddr("10.1.2.3:5060"), "10.1.2.3"},
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 1}, "10.1.2.3"}, // 16-byte form
		{tcpAddr("[::ffff:10.1.2.3]:5060"), "10.1.2.3"},
		{tcpAddr("[2001:db8:1:2:3:4:5:6]:5060"), "2001:db8:1:2::"},
		{tcpAddr("[2001:db8:1:2:ffff::1]:5060"), "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}, "fe80::"},
		{pipeAddr{}, "invalid IP"},
		{fakeAddr("10.9.9.9:1234"), "10.9.9.9"},
	} {
		if got := sourceKey(tc.addr).String(); got != tc.want {
			t.Errorf("sourceKey(%v) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// sipgo formats RemoteAddr().String() after Close; a closed gVisor conn
// has no address.
func TestAddrsCached(t *testing.T) {
	fl := newFakeListener(2)
	l := New(fl, Config{})
	defer l.Close()
	server, client := net.Pipe()
	defer client.Close()
	fl.push(&addrConn{Conn: server, local: tcpAddr("192.0.2.1:5060"), remote: tcpAddr("10.0.0.1:40000"), forget: true})
	c := mustAccept(t, l)
	c.Close()
	if c.RemoteAddr() == nil || c.RemoteAddr().String() != "10.0.0.1:40000" || c.LocalAddr() == nil || c.LocalAddr().String() != "192.0.2.1:5060" {
		t.Errorf("addresses after Close: local %v, remote %v", c.LocalAddr(), c.RemoteAddr())
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}

	// A conn that is dead before Accept wraps it is refused and counted.
	dead := &addrConn{Conn: server, local: tcpAddr("192.0.2.1:5060"), remote: tcpAddr("10.0.0.1:40001"), forget: true}
	dead.closed.Store(true)
	fl.push(dead)
	fl.Close()
	if c, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept = %v, %v; want the dead conn refused, then net.ErrClosed", c, err)
	}
	checkStats(t, l, Stats{Accepted: 1, RefusedNoAddr: 1})
}

func TestCloseEndsAccept(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(ln, Config{})
	ended := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		ended <- err
	}()
	time.Sleep(10 * time.Millisecond) // let Accept block (not needed for correctness)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed Listener: %v, want net.ErrClosed", err)
	}
	if err := l.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

// A conn accepted by the inner listener as Close runs is closed, not
// handed out.
func TestAdmitAfterClose(t *testing.T) {
	fl := newFakeListener(1)
	l := New(fl, Config{})
	nc := &nopConn{remote: tcpAddr("10.0.0.1:1")}
	fl.push(nc)
	l.mu.Lock()
	l.closed = true // as if Close ran between the inner Accept and admit
	l.mu.Unlock()
	if c, err := l.Accept(); !errors.Is(err, net.ErrClosed) || c != nil {
		t.Errorf("Accept = %v, %v; want nil, net.ErrClosed", c, err)
	}
	if nc.closes.Load() != 1 {
		t.Errorf("conn closed %d times, want 1", nc.closes.Load())
	}
	l.mu.Lock()
	l.closed = false
	l.mu.Unlock()
	l.Close()
}

// Close returns only once the sweeper has ended: not while it is in the
// middle of a sweep.
func TestCloseJoinsSweeper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		var calls atomic.Int32
		now := func() time.Time {
			if calls.Add(1) == 1 { // the first sweep blocks in its clock read
				entered <- struct{}{}
				<-release
			}
			return time.Now()
		}
		l := New(newFakeListener(0), Config{Now: now})
		<-entered
		closed := make(chan struct{})
		go func() {
			l.Close()
			close(closed)
		}()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned while the sweeper was sweeping")
		default:
		}
		close(release)
		<-closed
	})
}
