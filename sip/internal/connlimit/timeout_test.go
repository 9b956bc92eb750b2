package connlimit

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// The timeout tests run in synctest bubbles: time.Now and the sweeper's
// ticker are fake, and time.Sleep returns once every goroutine waits.

const (
	options    = "OPTIONS sip:pcscf.example SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
	halfHeader = "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK2\r\n"
	sdp        = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)

// invite is a message with a body of n bytes whose header uses the
// compact form of Content-Length when compact is set.
func invite(body string, compact bool) string {
	cl := "Content-Length: "
	if compact {
		cl = "l : "
	}
	return "INVITE sip:bob@example SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK3\r\n" +
		"Content-Type: application/sdp\r\n" + cl + itoa(len(body)) + "\r\n\r\n" + body
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// timeoutRig is one Listener on a fakeListener with one accepted conn and
// its reader, in a bubble.
type timeoutRig struct {
	t      *testing.T
	fl     *fakeListener
	l      *Listener
	client net.Conn
	res    <-chan error
	start  time.Time
	ended  bool  // the reader has reported
	err    error // what it reported
}

// result reports whether the reader has ended, and its error.
func (r *timeoutRig) result() (error, bool) {
	if !r.ended {
		r.err, r.ended = pending(r.res)
	}
	return r.err, r.ended
}

func newTimeoutRig(t *testing.T, cfg Config) *timeoutRig {
	r := &timeoutRig{t: t, fl: newFakeListener(1)}
	r.l = New(r.fl, cfg)
	r.client = r.fl.dial("10.0.0.1:40000")
	r.start = time.Now()
	r.res = reader(mustAccept(t, r.l))
	return r
}

func (r *timeoutRig) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.client, s); err != nil {
		r.t.Fatalf("at %v: client write: %v", time.Since(r.start), err)
	}
}

// sleepTo sleeps until d after accept.
func (r *timeoutRig) sleepTo(d time.Duration) {
	time.Sleep(d - time.Since(r.start))
	synctest.Wait()
}

// open fails the test if the conn was closed.
func (r *timeoutRig) open() {
	r.t.Helper()
	if err, done := r.result(); done {
		r.t.Fatalf("at %v: closed early: %v", time.Since(r.start), err)
	}
}

// closedBy fails the test unless the conn was closed with want.
func (r *timeoutRig) closedBy(want error) {
	r.t.Helper()
	err, done := r.result()
	if !done {
		r.t.Fatalf("at %v: still open, want %v", time.Since(r.start), want)
	}
	if err != want || !errors.Is(err, net.ErrClosed) {
		r.t.Fatalf("at %v: read error %v, want %v (wrapping net.ErrClosed)", time.Since(r.start), err, want)
	}
	// The client sees its connection end.
	r.client.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := r.client.Read(make([]byte, 1)); err != io.EOF {
		r.t.Fatalf("client read after close: %v, want EOF", err)
	}
}

// finish closes everything and waits for the reader.
func (r *timeoutRig) finish() {
	r.client.Close()
	if !r.ended {
		select {
		case <-r.res:
		case <-time.After(time.Minute): // fake time: no real wait
			r.t.Fatal("reader did not end after the client closed")
		}
	}
	if err := r.l.Close(); err != nil {
		r.t.Errorf("Close: %v", err)
	}
	if open := r.l.Stats().Open; open != 0 {
		r.t.Errorf("Open after all closed = %d", open)
	}
}

// The defaults (idle 600 s, header 32 s) sweep every second, so a timeout
// fires in [timeout, timeout+1s].

func TestHeaderTimeoutHalfSentHeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newTimeoutRig(t, Config{})
		r.send(halfHeader)
		// Trickle: bytes keep coming, so only the header timeout can act.
		for d := 5 * time.Second; d <= 30*time.Second; d += 5 * time.Second {
			r.sleepTo(d)
			r.send("X")
		}
		r.sleepTo(DefaultHeaderTimeout - time.Millisecond)
		r.open()
		r.sleepTo(DefaultHeaderTimeout + time.Second)
		r.closedBy(ErrHeaderTimeout)
		checkStats(t, r.l, Stats{Accepted: 1, HeaderTimeouts: 1})
		r.finish()
	})
}

func TestHeaderTimeoutSilentConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newTimeoutRig(t, Config{})
		r.send("\r\n\r\n") // keepalives do not start or end a header
		r.sleepTo(DefaultHeaderTimeout - time.Millisecond)
		r.open()
		r.sleepTo(DefaultHeaderTimeout + time.Second)
		r.closedBy(ErrHeaderTimeout)
		r.finish()
	})
}

// The header clock of a later message runs from its first byte.
func TestHeaderTimeoutLaterMessage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newTimeoutRig(t, Config{})
		r.send(options)
		r.sleepTo(100 * time.Second)
		r.send(halfHeader)
		r.sleepTo(100*time.Second + DefaultHeaderTimeout - time.Millisecond)
		r.open()
		r.sleepTo(100*time.Second + DefaultHeaderTimeout + time.Second)
		r.closedBy(ErrHeaderTimeout)
		checkStats(t, r.l, Stats{Accepted: 1, HeaderTimeouts: 1})
		r.finish()
	})
}

// A client that finishes its header and goes quiet meets the idle
// timeout, not the header one.
func TestIdleTimeoutAfterHeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newTimeoutRig(t, Config{})
		r.send(options)
		r.sleepTo(DefaultIdleTimeout - time.Millisecond)
		r.open()
		r.sleepTo(DefaultIdleTimeout + time.Second)
		r.closedBy(ErrIdleTimeout)
		checkStats(t, r.l, Stats{Accepted: 1, IdleTimeouts: 1})
		r.finish()
	})
}

// The idle clock runs from the last byte, keepalives included.
func TestIdleTimeoutFromLastByte(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newTimeoutRig(t, Config{})
		r.send(options)
		r.sleepTo(400 * time.Second)
		r.send("\r\n\r\n") // RFC 5626 ping
		r.sleepTo(400*time.Second + DefaultIdleTimeout - time.Millisecond)
		r.open()
		r.sleepTo(400*time.Second + DefaultIdleTimeout + time.Second)
		r.closedBy(ErrIdleTimeout)
		r.finish()
	})
}

// A UE that sends whole messages, bodies split across writes and across
// pauses longer than the header timeout, keepalives, and a header split
// by short pauses, is never closed.
func TestLegitimateClientStaysOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newTimeoutRig(t, Config{})
		at := time.Duration(0)
		step := func(d time.Duration, s string) {
			at += d
			r.sleepTo(at)
			r.open()
			r.send(s)
		}
		inv := invite(sdp, false)
		cut := strings.Index(inv, "\r\n\r\n") + 4 + 10
		step(time.Second, inv[:cut])      // header and part of the body
		step(100*time.Second, inv[cut:])  // the rest, long after: no header clock ran
		step(300*time.Second, "\r\n\r\n") // keepalive
		multi := invite("--b\r\n\r\nv=0\r\n--b--\r\n", true)
		step(400*time.Second, multi) // CRLF CRLF inside a body; compact l:
		step(20*time.Second, "OPTIONS sip:x SIP/2.0\r\n")
		step(10*time.Second, "Via: SIP/2.0/TCP 10.0.0.1\r\nContent-")
		step(10*time.Second, "Length: 0\r\n\r\n") // the header took 20 s
		for range 5 {
			step(500*time.Second, options+"\r\n\r\n"+options)
		}
		at += DefaultIdleTimeout - time.Second
		r.sleepTo(at)
		r.open()
		checkStats(t, r.l, Stats{Accepted: 1, Open: 1})
		r.finish()
	})
}

// After a body announced by Content-Length and sent late, a quiet client
// meets the idle timeout: a framer that took the body for a header would
// have cut it 32 s into the pause.
func TestBodyPauseIsNotAHeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newTimeoutRig(t, Config{})
		inv := invite(sdp, false)
		cut := strings.Index(inv, "\r\n\r\n") + 4
		r.send(inv[:cut])
		r.sleepTo(10 * time.Second)
		r.send(inv[cut:])
		r.sleepTo(10*time.Second + 5*DefaultHeaderTimeout)
		r.open()
		r.sleepTo(10*time.Second + DefaultIdleTimeout + time.Second)
		r.closedBy(ErrIdleTimeout)
		r.finish()
	})
}

func TestTimeoutsOff(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		first string
		trick string // sent every 5 minutes
		want  error  // what closes it within two hours, nil: nothing
	}{
		{"idle off, quiet after header", Config{IdleTimeout: Off}, options, "", nil},
		{"header off, trickled header", Config{HeaderTimeout: Off}, halfHeader, "X", nil},
		{"header off, silent", Config{HeaderTimeout: Off}, "", "", ErrIdleTimeout},
		{"both off, silent", Config{IdleTimeout: Off, HeaderTimeout: Off}, "", "", nil},
		{"idle off, silent", Config{IdleTimeout: Off}, "", "", ErrHeaderTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newTimeoutRig(t, tc.cfg)
				if tc.first != "" {
					r.send(tc.first)
				}
				for d := 5 * time.Minute; d <= 2*time.Hour; d += 5 * time.Minute {
					r.sleepTo(d)
					if _, done := r.result(); done {
						break
					}
					if tc.trick != "" {
						r.send(tc.trick)
					}
				}
				if tc.want == nil {
					r.open()
				} else {
					r.closedBy(tc.want)
				}
				r.finish()
			})
		})
	}
}

func TestNoSweeperWhenTimeoutsOff(t *testing.T) {
	l := New(newFakeListener(0), Config{IdleTimeout: Off, HeaderTimeout: Off})
	if l.sweep != 0 {
		t.Errorf("sweep interval %v with both timeouts off, want no sweeper", l.sweep)
	}
	l.Close()
}

// The review's finding: thousands of half-sent connections held for 40 s
// and more. With the per-source cap off, every one of them is reset by the
// header timeout and its slot comes back.
func TestManyHalfSentConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 3000
		fl := newFakeListener(n)
		l := New(fl, Config{MaxPerSource: Off})
		clients := make([]net.Conn, n)
		results := make([]<-chan error, n)
		for i := range n {
			clients[i] = fl.dial("10.0.0.1:40000")
			results[i] = reader(mustAccept(t, l))
			if _, err := io.WriteString(clients[i], halfHeader); err != nil {
				t.Fatal(err)
			}
		}
		checkStats(t, l, Stats{Accepted: n, Open: n})
		time.Sleep(DefaultHeaderTimeout + time.Second)
		synctest.Wait()
		for i, res := range results {
			if err, done := pending(res); !done || err != ErrHeaderTimeout {
				t.Fatalf("conn %d: closed %v with %v, want ErrHeaderTimeout", i, done, err)
			}
		}
		checkStats(t, l, Stats{Accepted: n, HeaderTimeouts: n})
		for _, c := range clients {
			c.Close()
		}
		l.Close()
	})
}

// Close and a timeout racing on one conn give back one slot and count at
// most one timeout.
func TestCloseRacesExpire(t *testing.T) {
	fl := newFakeListener(1)
	fl.always = errPermanent // a refused conn ends Accept with it instead of blocking
	l := New(fl, Config{MaxConns: 1})
	defer l.Close()
	for i := range 2000 {
		nc := &nopConn{remote: tcpAddr("10.0.0.1:40000")}
		fl.push(nc)
		c := mustAccept(t, l).(*conn)
		done := make(chan struct{})
		go func() { c.expire(connIdle); close(done) }()
		c.Close()
		<-done
		if n := nc.closes.Load(); n != 1 {
			t.Fatalf("round %d: inner conn closed %d times", i, n)
		}
		if open := l.Stats().Open; open != 0 {
			t.Fatalf("round %d: Open = %d after Close and expire", i, open)
		}
	}
	s := l.Stats()
	if s.Open != 0 || s.Accepted != 2000 || s.IdleTimeouts > 2000 {
		t.Errorf("Stats %+v", s)
	}
	t.Logf("%d of 2000 races won by the timeout", s.IdleTimeouts)
}
