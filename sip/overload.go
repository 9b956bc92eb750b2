package sip

import (
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Overload control: what the P-CSCF does when more UEs start registering
// than it can finish. Without it the backlog grows past the UEs' timers,
// they retransmit, and the P-CSCF spends its CPU on registrations that then
// time out: goodput collapses (docs/results.md). With it, a registration
// the P-CSCF would not finish in time is refused at its first and cheapest
// step: an unprotected REGISTER that would draw a new challenge gets 503
// with a Retry-After (RFC 3261 §21.5.4; TS 24.229 §5.1.1.2.1 has the UE
// wait that long), before the HSS, the SAs or DHCP are spent on it.
// Answers to challenges and everything that comes through the SAs are
// never shed: they finish work already paid for.
//
// Any of three signals sheds:
//   - the operator's ceiling, Limits.RegisterRate (a token bucket);
//   - more REGISTER handlers running than Limits.MaxInFlight: requests
//     begun and not answered, because the CPU or the HSS is behind;
//   - the DHCP queue more than half full: SAs made whose leases wait.
//
// Shedding protects the process, not fairness, so Limits.Off leaves it on.

// Defaults of the overload limits.
const (
	DefaultMaxInFlight = 256
	// shedRetryMin and shedRetrySpread: a shed REGISTER's Retry-After is
	// drawn from [min, min+spread) seconds, so that the refused UEs do not
	// come back together.
	shedRetryMin    = 1
	shedRetrySpread = 4
)

// overload holds the signals. Its fields are atomic or set once in New.
type overload struct {
	ceiling     *rate.Limiter // nil: no Limits.RegisterRate
	maxInFlight int64
	inFlight    atomic.Int64 // REGISTER handlers running
	shed        atomic.Uint64
}

func newOverload(l Limits) *overload {
	o := &overload{maxInFlight: int64(l.MaxInFlight)}
	if l.RegisterRate > 0 {
		o.ceiling = rate.NewLimiter(rate.Limit(l.RegisterRate), max(l.RegisterBurst, 1))
	}
	return o
}

// enter counts a REGISTER handler in; the returned func counts it out.
func (o *overload) enter() func() {
	o.inFlight.Add(1)
	return func() { o.inFlight.Add(-1) }
}

// shedReason tells whether a new registration is to be refused now, and
// why (for the ladder); "" admits it. dhcpQueued is the DHCP backlog.
func (o *overload) shedReason(now time.Time, dhcpQueued int) string {
	switch {
	case o.inFlight.Load() > o.maxInFlight:
		return "overloaded: " + strconv.FormatInt(o.inFlight.Load(), 10) + " REGISTERs in progress"
	case dhcpQueued > dhcpQueue/2:
		return "overloaded: " + strconv.Itoa(dhcpQueued) + " DHCP requests queued"
	case o.ceiling != nil && !o.ceiling.AllowN(now, 1):
		return "over the registration rate ceiling"
	}
	return ""
}

// retryAfterShed is a shed REGISTER's Retry-After value.
func retryAfterShed() string {
	return strconv.Itoa(shedRetryMin + rand.IntN(shedRetrySpread))
}
