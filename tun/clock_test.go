package tun_test

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
	"github.com/imsec/imsec/tun/udp"
	"github.com/imsec/imsec/tun/udptest"
)

// fakeClock is a Config.Now that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeTimers is a Config.NewTimer whose timers fire when the test says.
// Each new timer is also sent on made.
type fakeTimers struct {
	made chan *fakeTimer
	mu   sync.Mutex
	all  []*fakeTimer
}

func newFakeTimers() *fakeTimers { return &fakeTimers{made: make(chan *fakeTimer, 8)} }

func (f *fakeTimers) New(d time.Duration) tun.Timer {
	t := &fakeTimer{d: d, c: make(chan time.Time)}
	f.mu.Lock()
	f.all = append(f.all, t)
	f.mu.Unlock()
	f.made <- t
	return t
}

// next returns the next timer the Pump makes.
func (f *fakeTimers) next(t *testing.T) *fakeTimer {
	t.Helper()
	select {
	case ft := <-f.made:
		return ft
	case <-time.After(5 * time.Second):
		t.Fatal("the pump made no timer")
		return nil
	}
}

// fakeTimer's channel is unbuffered: fire returns once the Pump has taken
// the tick, so the round before it has finished.
type fakeTimer struct {
	d      time.Duration
	c      chan time.Time
	mu     sync.Mutex
	resets int
	stops  int
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }
func (t *fakeTimer) Reset(d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resets++
	return false
}
func (t *fakeTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stops++
	return false
}
func (t *fakeTimer) counts() (resets, stops int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resets, t.stops
}

// waitResets waits (5 s at most) until the timer has been reset n times
// and returns how many times it has.
func (t *fakeTimer) waitResets(n int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, _ := t.counts()
		if r >= n || time.Now().After(deadline) {
			return r
		}
		runtime.Gosched()
	}
}

func (t *fakeTimer) fire(tb testing.TB, now time.Time) {
	tb.Helper()
	select {
	case t.c <- now:
	case <-time.After(5 * time.Second):
		tb.Fatalf("nobody waits on the %v timer", t.d)
	}
}

// errOnceConn fails its first ReadBatch, then is the socket it wraps.
type errOnceConn struct {
	tun.PacketConn
	once sync.Once
}

var errTransient = errors.New("transient read error")

func (c *errOnceConn) ReadBatch(msgs []udp.Message) (int, error) {
	failed := false
	c.once.Do(func() { failed = true })
	if failed {
		return 0, errTransient
	}
	return c.PacketConn.ReadBatch(msgs)
}

// TestPumpTimersOnInjectedClock: the keepalive round and the pause after
// a failed read run on Config.NewTimer's timers, keepalives follow
// Config.Now, nothing sleeps, and Close stops every timer.
func TestPumpTimersOnInjectedClock(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	conn, err := n.Listen(fakeUEOuter)
	fakeMust(t, err)
	sink, err := n.Listen(fakeGWOuter)
	fakeMust(t, err)
	defer sink.Close()
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	timers := newFakeTimers()
	p, err := tun.NewPump(tun.Config{Device: tuntest.NewChannelDevice(1400, 8, 8), Conn: &errOnceConn{PacketConn: conn},
		Now: clock.Now, NewTimer: timers.New})
	fakeMust(t, err)
	defer p.Close()

	// Two timers, in either order: the keepalive round's (a second) and,
	// after the failed read, the pause's.
	var ka, pause *fakeTimer
	for range 2 {
		switch ft := timers.next(t); ft.d {
		case time.Second:
			ka = ft
		case 10 * time.Millisecond:
			pause = ft
		default:
			t.Fatalf("unexpected timer of %v", ft.d)
		}
	}
	if ka == nil || pause == nil {
		t.Fatal("want a keepalive timer and a read-error pause")
	}
	pause.fire(t, clock.Now()) // the socket is read again
	if c := p.Counters(); c.ReadErrors != 1 {
		t.Fatalf("ReadErrors %d, want 1", c.ReadErrors)
	}

	peer, err := p.AddPeer(tun.PeerConfig{Name: "gw", Endpoint: fakeGWOuter, Keepalive: 20 * time.Second})
	fakeMust(t, err)
	msgs := []udp.Message{{Buf: make([]byte, 16)}}
	for i := range 3 {
		clock.Add(20 * time.Second)
		ka.fire(t, clock.Now())
		if n, err := sink.ReadBatch(msgs); err != nil || n != 1 || msgs[0].N != 1 || msgs[0].Buf[0] != 0xff {
			t.Fatalf("round %d: sink got %d %v %v", i, n, msgs[0], err)
		}
		ka.fire(t, clock.Now()) // the same instant: not idle, nothing sent
	}
	ka.fire(t, clock.Now()) // the last round above has finished
	if k := peer.Counters().Keepalives; k != 3 {
		t.Fatalf("sent %d keepalives, want 3", k)
	}
	// The seventh fire returns once the round has taken the tick; its
	// Reset comes right after, on the Pump's goroutine.
	if r := ka.waitResets(7); r != 7 {
		t.Errorf("keepalive timer reset %d times for 7 rounds", r)
	}

	fakeMust(t, p.Close())
	for _, ft := range []*fakeTimer{ka, pause} {
		if _, s := ft.counts(); s != 1 {
			t.Errorf("%v timer stopped %d times by Close, want 1", ft.d, s)
		}
	}
	select {
	case ft := <-timers.made:
		t.Errorf("an unexpected %v timer", ft.d)
	default:
	}
}

// errDevice is a Device whose reads fail (not closed) until it is closed,
// counting them.
type errDevice struct {
	tun.Device
	reads atomic.Int64
}

func (d *errDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.reads.Add(1)
	return 0, errTransient
}

// TestPumpDeviceErrorPauses: a device whose reads keep failing is read
// again only after the pause (a timer of the Pump's), not in a tight loop;
// the failures are counted, and Close stops the pause's timer.
func TestPumpDeviceErrorPauses(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	conn, err := n.Listen(fakeUEOuter)
	fakeMust(t, err)
	timers := newFakeTimers()
	dev := &errDevice{Device: tuntest.NewChannelDevice(1400, 8, 8)}
	p, err := tun.NewPump(tun.Config{Device: dev, Conn: conn, NewTimer: timers.New})
	fakeMust(t, err)
	var pause *fakeTimer
	for pause == nil {
		if ft := timers.next(t); ft.d == 10*time.Millisecond {
			pause = ft
		}
	}
	// The timer has not fired: however long we wait, one read has failed.
	time.Sleep(50 * time.Millisecond)
	if r := dev.reads.Load(); r != 1 {
		t.Fatalf("%d device reads before the pause ended, want 1", r)
	}
	// Each fire lets exactly one more read happen (fire returns when the
	// Pump has taken the tick, perhaps before that read).
	pause.fire(t, time.Now())
	pause.fire(t, time.Now())
	if r := dev.reads.Load(); r < 2 || r > 3 {
		t.Fatalf("%d device reads after two pauses, want 2 or 3", r)
	}
	fakeMust(t, p.Close())
	// Every failed read is counted, but for one that Close ended.
	if c, r := p.Counters(), dev.reads.Load(); c.DeviceErrors != uint64(r) && c.DeviceErrors != uint64(r-1) {
		t.Fatalf("DeviceErrors %d, reads %d", c.DeviceErrors, r)
	}
	if _, s := pause.counts(); s < 1 {
		t.Error("Close did not stop the pause's timer")
	}
}
