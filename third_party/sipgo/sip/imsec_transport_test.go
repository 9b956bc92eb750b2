package sip

// imsec: tests of the TCP accept backoff (transport_tcp.go) and of the
// throttled, counted UDP parse errors (transport_udp.go).

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestImsecAcceptBackoffSequence(t *testing.T) {
	var d time.Duration
	var got []time.Duration
	for range 10 {
		d = acceptBackoff(d)
		got = append(got, d)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("backoff %d: %v, want %v (all: %v)", i, got[i], want[i]*time.Millisecond, got)
		}
	}
}

// imsecListener returns errs[0], errs[1], ... from Accept, then conn,
// then net.ErrClosed.
type imsecListener struct {
	mu    sync.Mutex
	errs  []error
	conn  net.Conn
	calls []time.Time
}

func (l *imsecListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, time.Now())
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	if c := l.conn; c != nil {
		l.conn = nil
		return c, nil
	}
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
}
func (l *imsecListener) Close() error   { return nil }
func (l *imsecListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060} }

// TestImsecAcceptRetriesAfterEMFILE: Accept errors other than a closed
// listener (here EMFILE, four times) no longer end Serve; it backs off,
// then accepts the next connection, and returns only on net.ErrClosed.
func TestImsecAcceptRetriesAfterEMFILE(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	ours, theirs := net.Pipe()
	defer theirs.Close()
	l := &imsecListener{errs: []error{emfile, emfile, emfile, emfile}, conn: ours}

	tr := &TransportTCP{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	tr.init(NewParser())
	err := tr.Serve(l, func(Message) {})
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve returned %v, want net.ErrClosed", err)
	}
	if n := len(l.calls); n != 6 {
		t.Fatalf("Accept called %d times, want 6 (4 errors, the connection, closed)", n)
	}
	// The waits after the errors: 5, 10, 20, 40 ms.
	for i, least := range []time.Duration{5, 10, 20, 40} {
		if d := l.calls[i+1].Sub(l.calls[i]); d < least*time.Millisecond {
			t.Errorf("wait after error %d: %v, want at least %v", i+1, d, least*time.Millisecond)
		}
	}
	// The connection was taken: it is in the pool by its remote address.
	if c := tr.GetConnection(ours.RemoteAddr().String()); c == nil {
		t.Fatal("accepted connection not in the pool")
	} else {
		c.TryClose()
	}
}

type imsecLogBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *imsecLogBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *imsecLogBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestImsecUDPParseErrorsThrottled: a burst of junk datagrams on one
// listener logs one "failed to parse" line a second at most, never the
// payload, and every datagram is counted.
func TestImsecUDPParseErrorsThrottled(t *testing.T) {
	var logs imsecLogBuf
	tpl := NewTransportLayer(net.DefaultResolver, NewParser(), nil,
		WithTransportLayerLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	got := make(chan Message, 1)
	tpl.OnMessage(func(m Message) { got <- m })

	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { tpl.ServeUDP(pc); close(served) }()
	defer func() { pc.Close(); <-served }()

	peer, err := net.Dial("udp4", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	const junk = 100
	const secret = "Authorization: Digest response=SECRET"
	start := time.Now()
	for i := range junk {
		// No CSeq: does not parse. One at a time, so none is lost to a
		// full socket buffer.
		if _, err := peer.Write([]byte("REGISTER sip:x SIP/2.0\r\n" + secret + "\r\nNoColonHere\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for tpl.UDPParseErrors() < uint64(i+1) {
			if time.Now().After(deadline) {
				t.Fatalf("datagram %d not counted (%d)", i+1, tpl.UDPParseErrors())
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	elapsed := time.Since(start)

	// The listener still works.
	ok := "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-imsec\r\n" +
		"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: imsec-parse\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if _, err := peer.Write([]byte(ok)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("valid request after the junk not delivered")
	}

	if n := tpl.UDPParseErrors(); n != junk {
		t.Fatalf("UDPParseErrors = %d, want %d", n, junk)
	}
	out := logs.String()
	if strings.Contains(out, "SECRET") {
		t.Fatalf("payload logged:\n%s", out)
	}
	lines := strings.Count(out, "failed to parse")
	if most := 1 + int(elapsed/time.Second); lines < 1 || lines > most {
		t.Fatalf("%d \"failed to parse\" lines for %d datagrams in %v, want 1..%d:\n%s", lines, junk, elapsed, most, out)
	}
}

// TestImsecUDPParseErrLogSuppressed: the next line after a quiet second
// reports how many were left out.
func TestImsecUDPParseErrLogSuppressed(t *testing.T) {
	var logs imsecLogBuf
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var l udpParseErrLog
	for range 5 {
		l.log(log, "127.0.0.1:9", 10, errors.New("bad"))
	}
	l.last = l.last.Add(-udpParseErrLogEvery)
	l.log(log, "127.0.0.1:9", 10, errors.New(strings.Repeat("x", 500)))
	out := logs.String()
	if n := strings.Count(out, "failed to parse"); n != 2 {
		t.Fatalf("%d lines, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "suppressed=4") {
		t.Fatalf("second line does not report the 4 left out:\n%s", out)
	}
	if strings.Contains(out, strings.Repeat("x", 121)) {
		t.Fatalf("long error not shortened:\n%s", out)
	}
}

// TestImsecUDPListenerPeersBounded: a UDP listener keeps at most
// udpListenerPeersMax source addresses in the connection pool; the oldest
// go first, the newest stay (a response to them reuses the listener).
func TestImsecUDPListenerPeersBounded(t *testing.T) {
	defer func(v int) { udpListenerPeersMax = v }(udpListenerPeersMax)
	udpListenerPeersMax = 8
	tpl := NewTransportLayer(net.DefaultResolver, NewParser(), nil)
	got := make(chan Message, 64)
	tpl.OnMessage(func(m Message) { got <- m })
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { tpl.ServeUDP(pc); close(served) }()
	defer func() { pc.Close(); <-served }()

	const sources = 20
	var last []string
	for i := range sources {
		peer, err := net.Dial("udp4", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		req := "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-imsec" + strconv.Itoa(i) + "\r\n" +
			"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:x@127.0.0.1>\r\nCall-ID: imsec-peers\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
		if _, err := peer.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("request from source %d not delivered", i)
		}
		last = append(last, peer.LocalAddr().String())
		peer.Close()
	}
	pool := tpl.udp.pool
	if n := pool.Size(); n > udpListenerPeersMax+1 { // +1: the listener's own address
		t.Fatalf("pool holds %d addresses after %d sources, want at most %d", n, sources, udpListenerPeersMax+1)
	}
	for _, a := range last[:sources-udpListenerPeersMax] {
		if pool.getUnref(a) != nil {
			t.Fatalf("old source %s still in the pool", a)
		}
	}
	for _, a := range last[sources-udpListenerPeersMax:] {
		if pool.getUnref(a) == nil {
			t.Fatalf("recent source %s not in the pool", a)
		}
	}
}
