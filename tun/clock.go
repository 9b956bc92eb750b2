package tun

import "time"

// The Pump's clock. Config.Now reads the time (keepalive idleness, when a
// peer was last heard from); Config.NewTimer makes the Pump's timers. Both
// default to the time package's, and a test that injects both drives
// keepalives without sleeping. The Pump has three timers, each owned by the
// goroutine whose state it changes and stopped by it when Close stops that
// goroutine:
//
//   - the keepalive round (keepalive.go), every keepaliveTick;
//   - the pause after a failed socket read (inbound.go) and after a failed
//     device read (outbound.go), readErrorPause, each made at its first
//     failure and reused.
//
// The socket reader's keepalive coalescing (keepaliveCoalesce, inbound.go)
// counts keepalives on the batch's Config.Now reading, but waits on a timer
// of the time package's: the wait spaces out the reader's wakeups on the
// machine's clock and has nothing to do with the protocol's time (a frozen
// test clock only means the rate never looks high).
//
// Ping measures round trips with time.Now, not Config.Now: an RTT read off
// a fake clock would mean nothing, and its wait is the caller's context.
const (
	keepaliveTick  = time.Second
	readErrorPause = 10 * time.Millisecond
	// keepaliveCoalesce is how long the socket reader waits after a
	// batch of nothing but NAT keepalives before it reads again, once
	// more than coalesceAbove keepalives came in the last second and no
	// ESP for coalesceQuiet (inbound.go).
	keepaliveCoalesce = 5 * time.Millisecond
	coalesceAbove     = 1000
	// coalesceQuiet: no wait while ESP came this recently, so that a
	// tunnel carrying traffic is never held up by the idle peers' keepalives.
	coalesceQuiet = 100 * time.Millisecond
)

// Timer is a one-shot timer, as *time.Timer is, behind an interface so that
// a test can fire it (Config.NewTimer). C is the channel that receives the
// time when the timer fires; Reset and Stop have time.Timer's meaning
// (since Go 1.23: no stale value is received after either returns).
type Timer interface {
	C() <-chan time.Time
	Reset(d time.Duration) bool
	Stop() bool
}

// systemTimer is the default Timer: a *time.Timer.
type systemTimer struct{ t *time.Timer }

var _ Timer = systemTimer{}

func newSystemTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

func (s systemTimer) C() <-chan time.Time        { return s.t.C }
func (s systemTimer) Reset(d time.Duration) bool { return s.t.Reset(d) }
func (s systemTimer) Stop() bool                 { return s.t.Stop() }

// pause is a reusable wait of one goroutine on a timer of the Pump's
// (made at the first wait), cut short when the Pump stops. The goroutine
// stops it when it ends. Its uses: spacing out the reads after a failed
// one (readErrorPause), and coalescing sparse keepalives (inbound.go).
type pause struct {
	p *Pump
	d time.Duration
	// system makes the timer with the time package instead of
	// Config.NewTimer.
	system bool
	t      Timer
}

// wait pauses for d; false if the Pump stopped meanwhile.
func (e *pause) wait() bool {
	if e.t == nil {
		newTimer := e.p.cfg.NewTimer
		if e.system {
			newTimer = newSystemTimer
		}
		e.t = newTimer(e.d)
	} else {
		e.t.Reset(e.d)
	}
	select {
	case <-e.p.stop:
		return false
	case <-e.t.C():
		return true
	}
}

func (e *pause) stop() {
	if e.t != nil {
		e.t.Stop()
	}
}
