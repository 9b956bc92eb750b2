package connlimit

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// Temporary errors of the inner listener are retried with net/http's
// back-off and never reach the caller.
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFakeListener(16)
		l := New(fl, Config{})
		defer l.Close()

		fl.pushErrs(
			sysErr(syscall.EMFILE), sysErr(syscall.EMFILE), sysErr(syscall.EMFILE),
			sysErr(syscall.ENFILE),
			sysErr(syscall.ECONNABORTED),
			netErr{temporary: true},
			netErr{timeout: true},
		)
		want := &nopConn{remote: tcpAddr("10.0.0.1:1")}
		fl.push(want)
		start := time.Now()
		c := mustAccept(t, l)
		if c.(*conn).Conn != want {
			t.Fatalf("Accept returned %v, want the queued conn", c)
		}
		// 5+10+20+40+80+160+320 ms.
		if got := time.Since(start); got != 635*time.Millisecond {
			t.Errorf("retries took %v, want 635ms", got)
		}
		checkStats(t, l, Stats{Accepted: 1, AcceptRetries: 7, Open: 1})

		// A success resets the back-off; it doubles up to 1 s.
		for range 10 {
			fl.pushErr(sysErr(syscall.EMFILE))
		}
		fl.push(&nopConn{remote: tcpAddr("10.0.0.1:2")})
		start = time.Now()
		mustAccept(t, l)
		// 5+10+20+40+80+160+320+640+1000+1000 ms.
		if got := time.Since(start); got != 3275*time.Millisecond {
			t.Errorf("10 retries took %v, want 3.275s", got)
		}
		checkStats(t, l, Stats{Accepted: 2, AcceptRetries: 17, Open: 2})
	})
}

// Close ends an Accept that is backing off.
func TestCloseDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fl := newFakeListener(0)
		fl.always = sysErr(syscall.EMFILE) // out of descriptors for good
		l := New(fl, Config{})
		ended := make(chan error, 1)
		go func() {
			_, err := l.Accept()
			ended <- err
		}()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if err, done := pending(ended); done {
			t.Fatalf("Accept returned %v while the inner listener had only EMFILE", err)
		}
		l.Close()
		synctest.Wait()
		err, done := pending(ended)
		if !done || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close during back-off: %v (returned %v), want net.ErrClosed", err, done)
		}
		// 5 ms doubling to 1 s over 10 s: 8 retries to 1.275 s, then one a second.
		if n := l.Stats().AcceptRetries; n < 15 || n > 18 {
			t.Errorf("%d retries in 10 s, want about 16", n)
		}
	})
}

// An error that is neither temporary nor net.ErrClosed is returned as it
// is, as net/http's Server does.
func TestAcceptPermanentError(t *testing.T) {
	fl := newFakeListener(2)
	l := New(fl, Config{})
	defer l.Close()
	fl.pushErr(errPermanent)
	if _, err := l.Accept(); err != errPermanent {
		t.Errorf("Accept = %v, want %v", err, errPermanent)
	}
	fl.pushErr(sysErr(syscall.EBADF))
	if _, err := l.Accept(); !errors.Is(err, syscall.EBADF) {
		t.Errorf("Accept = %v, want EBADF", err)
	}
	checkStats(t, l, Stats{})
}

func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{sysErr(syscall.EMFILE), true},
		{sysErr(syscall.ENFILE), true},
		{sysErr(syscall.ECONNABORTED), true},
		{sysErr(syscall.ENOBUFS), true},
		{sysErr(syscall.EAGAIN), true},
		{syscall.EINTR, true},
		{netErr{temporary: true}, true},
		{netErr{timeout: true}, true},
		{netErr{}, false},
		{sysErr(syscall.EBADF), false},
		{sysErr(syscall.EINVAL), false},
		{errPermanent, false},
		{&net.OpError{Op: "accept", Err: net.ErrClosed}, false},
	} {
		if got := temporary(tc.err); got != tc.want {
			t.Errorf("temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
