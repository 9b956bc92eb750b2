package sip

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
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
//   - Limits.MaxInFlight REGISTER handlers running already: requests
//     begun and not answered, because the CPU or the HSS is behind;
//   - the DHCP queue more than half full, or a DHCP request that waited in
//     it longer than dhcpLagTarget within the last dhcpLagHold: SAs made
//     whose leases wait, so the UEs' protected REGISTERs will come late.
//
// Shedding protects the process, not fairness, so Limits.Off leaves it on.
//
// Over UDP the decision is made in sipgo's read loop (shedFilter), before
// a transaction exists, and the 503 is sent statelessly: under overload a
// refusal must cost next to nothing, or refusing becomes the overload.
// Over TCP, onOuterRegister decides.

// Defaults of the overload limits.
const (
	DefaultMaxInFlight = 256
	// shedRetryMin and shedRetrySpread: a shed REGISTER's Retry-After is
	// drawn from [min, min+spread) seconds, so that the refused UEs do not
	// come back together.
	shedRetryMin    = 1
	shedRetrySpread = 4
	// dhcpLagTarget is how long a DHCP request may wait in the queue
	// before new registrations are shed, for dhcpLagHold after it was seen
	// (then admitted again: with none admitted, no DHCP comes to say the
	// queue has drained).
	dhcpLagTarget = 100 * time.Millisecond
	dhcpLagHold   = 500 * time.Millisecond
)

// overload holds the signals. Its fields are atomic or set once in New.
type overload struct {
	ceiling     *rate.Limiter // nil: no Limits.RegisterRate
	maxInFlight int64
	inFlight    atomic.Int64 // REGISTER handlers running
	shed        atomic.Uint64
	dhcpLagAt   atomic.Int64 // Unix ns when a DHCP request last waited past dhcpLagTarget
}

// dhcpWaited records how long a DHCP request waited in the queue.
func (o *overload) dhcpWaited(wait time.Duration, now time.Time) {
	if wait > dhcpLagTarget {
		o.dhcpLagAt.Store(now.UnixNano())
	}
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
// why (for the ladder); "" admits it. running is the REGISTER handlers
// running besides the caller's; dhcpQueued is the DHCP backlog.
func (o *overload) shedReason(now time.Time, running int64, dhcpQueued int) string {
	switch {
	case running >= o.maxInFlight:
		return "overloaded: " + strconv.FormatInt(running, 10) + " REGISTERs in progress"
	case dhcpQueued > dhcpQueue/2:
		return "overloaded: " + strconv.Itoa(dhcpQueued) + " DHCP requests queued"
	case time.Since(time.Unix(0, o.dhcpLagAt.Load())) < dhcpLagHold:
		return "overloaded: DHCP requests wait over " + dhcpLagTarget.String()
	case o.ceiling != nil && !o.ceiling.AllowN(now, 1):
		return "over the registration rate ceiling"
	}
	return ""
}

// retryAfterShed is a shed REGISTER's Retry-After value.
func retryAfterShed() string {
	return strconv.Itoa(shedRetryMin + rand.IntN(shedRetrySpread))
}

// shedFilter is the unprotected UDP socket's read filter: a first
// REGISTER that overload control refuses gets a stateless 503 with
// Retry-After and goes no further; everything else passes untouched.
func (s *Server) shedFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	if !strings.EqualFold(info.Transport, "udp") || !isFirstRegister(data) {
		return data, nil
	}
	why := s.ovl.shedReason(s.now(), s.ovl.inFlight.Load(), len(s.dhcpIn))
	if why == "" {
		return data, nil
	}
	m, err := sip.ParseMessage(data)
	req, ok := m.(*sip.Request)
	if err != nil || !ok || req.Via() == nil || req.CSeq() == nil || req.CallID() == nil {
		return data, nil // sipgo refuses it as it would have
	}
	s.sipc.received(req)
	res := sip.NewResponseFromRequest(req, 503, "Service Unavailable", nil)
	res.AppendHeader(sip.NewHeader("Retry-After", retryAfterShed()))
	s.ovl.shed.Add(1)
	s.overloaded.Add(1)
	if _, err := s.outerUDP.WriteTo([]byte(res.String()), info.RemoteAddr); err != nil {
		s.log.Debug("stateless 503", "to", info.RemoteAddr, "err", err)
		return nil, nil
	}
	s.sipc.sent(res)
	s.emit(EvOverload, "", "503 Service Unavailable", why+" (stateless)")
	return nil, nil
}

// isFirstRegister tells whether a raw message is a REGISTER without an
// answer to a challenge: no Authorization header with a non-empty
// response (RFC 3261 §22.4, RFC 3310 §3.2). Only the header is scanned.
func isFirstRegister(data []byte) bool {
	if !bytes.HasPrefix(data, []byte("REGISTER ")) {
		return false
	}
	hdr := data
	if i := bytes.Index(data, []byte("\r\n\r\n")); i >= 0 {
		hdr = data[:i]
	}
	for line := range bytes.SplitSeq(hdr, []byte("\n")) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !strings.EqualFold(string(bytes.TrimSpace(name)), "Authorization") {
			continue
		}
		_, after, found := bytes.Cut(value, []byte(`response="`))
		if found && len(after) > 0 && after[0] != '"' {
			return false
		}
	}
	return true
}
