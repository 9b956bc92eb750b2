package sip

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
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
//     whose leases wait, so the UEs' protected REGISTERs will come late;
//   - by the kernel's receive times (Linux), the REGISTER itself waited
//     in the unprotected SIP socket longer than socketLagTarget, or an
//     ESP datagram did within the last socketLagHold: the readers are
//     behind. The
//     sockets hold seconds of requests (4 MiB) before the kernel drops
//     any, so without this signal a P-CSCF that falls behind admits
//     registrations whose protected REGISTERs and DHCP then queue behind
//     thousands of datagrams, past the UEs' timers, while the handler
//     count stays low (docs/results.md, session 11).
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
	// shedRetryMaxSpread bounds the spread when shedding persists
	// (overload.retryAfter).
	shedRetryMaxSpread = 60
	// dhcpLagTarget is how long a DHCP request may wait in the queue
	// before new registrations are shed, for dhcpLagHold after it was seen
	// (then admitted again: with none admitted, no DHCP comes to say the
	// queue has drained).
	dhcpLagTarget = 100 * time.Millisecond
	dhcpLagHold   = 500 * time.Millisecond
	// socketLagTarget is how long a datagram may wait in a socket's
	// receive buffer: well under the UE's T1 (500 ms), so that shedding
	// starts before the UEs retransmit. A first REGISTER that waited
	// longer in the unprotected socket is shed itself; an ESP datagram
	// that did sheds new registrations for socketLagHold after. The ESP
	// socket is read continuously (keepalives alone come thousands a
	// second at scale), so the hold need only bridge a batch or two.
	socketLagTarget = 100 * time.Millisecond
	socketLagHold   = 100 * time.Millisecond
)

// overload holds the signals. Its fields are atomic or set once in New.
type overload struct {
	ceiling     *rate.Limiter // nil: no Limits.RegisterRate
	maxInFlight int64
	inFlight    atomic.Int64 // REGISTER handlers running
	shed        atomic.Uint64
	shedBy      [shedSignals]atomic.Uint64 // shed, by signal
	dhcpLagAt   atomic.Int64               // Unix ns when a DHCP request last waited past dhcpLagTarget
	espLagAt    atomic.Int64               // Unix ns (wall clock) when an ESP datagram last waited in the socket past socketLagTarget
	espLagMax   atomic.Int64               // the longest such wait then, ns (for the ladder)
	// told is when shedding was last reported on the ladder (Unix ns), and
	// toldShed the shed count then: one line a second at most, however
	// hard the P-CSCF is pressed.
	told, toldShed atomic.Int64

	// pace counts new registrations shed and admitted per second, for
	// retryAfter.
	pace shedPace
}

// shedPace counts the new registrations refused and admitted in the
// current second and the last whole one.
type shedPace struct {
	mu sync.Mutex
	// Guarded by mu:
	second              int64 // Unix second being counted
	shedNow, admitNow   int64
	shedLast, admitLast int64 // in second-1; zero if nothing was counted then
}

// count adds one decision at now.
func (p *shedPace) count(now time.Time, shed bool) {
	sec := now.Unix()
	p.mu.Lock()
	defer p.mu.Unlock()
	if sec != p.second {
		if sec == p.second+1 {
			p.shedLast, p.admitLast = p.shedNow, p.admitNow
		} else {
			p.shedLast, p.admitLast = 0, 0
		}
		p.second, p.shedNow, p.admitNow = sec, 0, 0
	}
	if shed {
		p.shedNow++
	} else {
		p.admitNow++
	}
}

// spread is the width, in seconds, of the Retry-After range for a
// registration shed at now: shedRetrySpread, widened in proportion when
// the last whole second refused more registrations than it admitted, up
// to shedRetryMaxSpread. The refused come back within the spread; with a
// fixed 4 s, 8,000 refusals a second against 1,500 admissions came back
// as 2,000 retries a second on top of the new arrivals, and a P-CSCF
// pressed that hard spent its time refusing retries (docs/results.md,
// session 10). Widened, the retries arrive no faster than registrations
// are being admitted.
func (p *shedPace) spread(now time.Time) int {
	sec := now.Unix()
	p.mu.Lock()
	shed, admit := p.shedLast, p.admitLast
	switch sec {
	case p.second: // the last whole second is counted
	case p.second + 1:
		shed, admit = p.shedNow, p.admitNow
	default:
		shed, admit = 0, 0
	}
	p.mu.Unlock()
	if shed <= admit {
		return shedRetrySpread
	}
	return int(min(shedRetryMaxSpread, shedRetrySpread*shed/max(admit, 1)))
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

// shedSignal names the signal that shed a registration (Stats.ShedBy).
type shedSignal int

const (
	shedInFlight shedSignal = iota
	shedDHCP
	shedSocketWait
	shedCeiling
	shedSignals
)

// ShedCounts are the new registrations overload control refused, by the
// signal that refused them (README, "Overload control").
type ShedCounts struct {
	InFlight   uint64 `json:"in-flight,omitempty"`   // --max-in-flight REGISTERs in progress
	DHCP       uint64 `json:"dhcp,omitempty"`        // the DHCP queue half full, or a request waited in it over 100 ms
	SocketWait uint64 `json:"socket-wait,omitempty"` // a datagram waited over 100 ms in the SIP or ESP socket
	Ceiling    uint64 `json:"ceiling,omitempty"`     // --max-register-rate
}

func (o *overload) shedCounts() ShedCounts {
	return ShedCounts{InFlight: o.shedBy[shedInFlight].Load(), DHCP: o.shedBy[shedDHCP].Load(),
		SocketWait: o.shedBy[shedSocketWait].Load(), Ceiling: o.shedBy[shedCeiling].Load()}
}

// shedReason tells whether a new registration is to be refused now, why
// (for the ladder) and by which signal; "" admits it. running is the
// REGISTER handlers running besides the caller's; dhcpQueued is the DHCP
// backlog; waited is how long the REGISTER waited in its socket (0:
// unknown).
func (o *overload) shedReason(now time.Time, running int64, dhcpQueued int, waited time.Duration) (string, shedSignal) {
	switch {
	case waited > socketLagTarget:
		return "overloaded: REGISTER waited " + waited.Round(time.Millisecond).String() + " in the SIP socket", shedSocketWait
	case running >= o.maxInFlight:
		return "overloaded: " + strconv.FormatInt(running, 10) + " REGISTERs in progress", shedInFlight
	case dhcpQueued > dhcpQueue/2:
		return "overloaded: " + strconv.Itoa(dhcpQueued) + " DHCP requests queued", shedDHCP
	case time.Since(time.Unix(0, o.dhcpLagAt.Load())) < dhcpLagHold:
		return "overloaded: DHCP requests wait over " + dhcpLagTarget.String(), shedDHCP
	case time.Since(time.Unix(0, o.espLagAt.Load())) < socketLagHold:
		return "overloaded: ESP datagrams waited " + time.Duration(o.espLagMax.Load()).Round(time.Millisecond).String() + " in the socket", shedSocketWait
	case o.ceiling != nil && !o.ceiling.AllowN(now, 1):
		return "over the registration rate ceiling", shedCeiling
	}
	return "", 0
}

// receiveStamper is a socket that tells when the kernel received the
// datagram last read (rawudp.Conn, tun/udp.Conn).
type receiveStamper interface {
	StampReceived() bool
	Received() time.Time
}

// espWaited records how long the oldest ESP datagram of a read waited in
// the socket's receive buffer (by the kernel's receive time; the wall
// clock): the Pump's OnInboundWait.
func (o *overload) espWaited(wait time.Duration) {
	if wait <= socketLagTarget {
		return
	}
	now := time.Now().UnixNano()
	if now-o.espLagAt.Load() >= int64(socketLagHold) || int64(wait) > o.espLagMax.Load() {
		o.espLagMax.Store(int64(wait)) // a new episode, or a longer wait in this one
	}
	o.espLagAt.Store(now)
}

// dhcpWaited records how long a DHCP request waited in the queue.
func (o *overload) dhcpWaited(wait time.Duration, now time.Time) {
	if wait > dhcpLagTarget {
		o.dhcpLagAt.Store(now.UnixNano())
	}
}

// shedEvent counts a REGISTER shed by sig and returns the ladder's line for the
// refusals since the last one, or "" when one was given less than a
// second ago.
func (o *overload) shedEvent(why string, sig shedSignal, now time.Time) string {
	o.shedBy[sig].Add(1)
	n := int64(o.shed.Add(1))
	last := o.told.Load()
	if now.UnixNano()-last < int64(time.Second) || !o.told.CompareAndSwap(last, now.UnixNano()) {
		return ""
	}
	k := n - o.toldShed.Swap(n)
	return why + ": " + strconv.FormatInt(k, 10) + " new registration(s) refused since the last report (503, Retry-After)"
}

// shed counts a new registration refused by sig for why: counted, and on
// the ladder at most once a second.
func (s *Server) shed(why string, sig shedSignal) {
	s.overloaded.Add(1)
	if line := s.ovl.shedEvent(why, sig, time.Now()); line != "" {
		s.emit(EvOverload, "", "503 Service Unavailable", line)
	}
}

// retryAfter is a shed REGISTER's Retry-After value: shedRetryMin plus a
// random part of the spread (shedPace.spread).
func (o *overload) retryAfter(now time.Time) string {
	return strconv.Itoa(shedRetryMin + rand.IntN(o.pace.spread(now)))
}

// shedFilter is the unprotected UDP socket's read filter: a first
// REGISTER that overload control refuses gets a stateless 503 with
// Retry-After, built from the raw request (stateless503), and goes no
// further; everything else passes untouched.
func (s *Server) shedFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	if !strings.EqualFold(info.Transport, "udp") || !isFirstRegister(data) {
		return data, nil
	}
	var waited time.Duration
	if s.outerStamps != nil {
		if at := s.outerStamps.Received(); !at.IsZero() {
			waited = time.Since(at)
		}
	}
	return s.shedFirst(info, data, waited)
}

// shedFirst decides on a first REGISTER read from the unprotected UDP
// socket, where it waited for waited (0: unknown).
func (s *Server) shedFirst(info sip.TransportReadProps, data []byte, waited time.Duration) ([]byte, error) {
	now := s.now()
	why, sig := s.ovl.shedReason(now, s.ovl.inFlight.Load(), len(s.dhcpIn), waited)
	s.ovl.pace.count(now, why != "")
	if why == "" {
		return data, nil
	}
	res, ok := stateless503(data, s.ovl.retryAfter(now))
	if !ok {
		return data, nil // sipgo refuses it as it would have
	}
	s.shed(why, sig)
	s.sipc.shed()
	if _, err := s.outerUDP.WriteTo(res, info.RemoteAddr); err != nil {
		s.log.Debug("stateless 503", "to", info.RemoteAddr, "err", err)
	}
	return nil, nil
}

// stateless503 answers a raw request with 503 and a Retry-After of
// retryAfter seconds, without parsing it: its Via, From, To, Call-ID and
// CSeq header lines (long or compact names, with their continuation lines)
// are copied as they are (RFC 3261 §8.2.6.2), and a To without a tag gets
// one. A refusal under overload must cost next to nothing: this is a few
// microseconds, a parse and a sipgo response some tens. ok is false when
// one of those headers is missing.
func stateless503(req []byte, retryAfter string) (res []byte, ok bool) {
	hdr := req
	if i := bytes.Index(req, []byte("\r\n\r\n")); i >= 0 {
		hdr = req[:i]
	}
	lines := bytes.Split(hdr, []byte("\n"))
	if len(lines) < 2 {
		return nil, false
	}
	out := make([]byte, 0, len(hdr)+96)
	out = append(out, "SIP/2.0 503 Service Unavailable\r\n"...)
	const via, from, to, callID, cseq = 1, 2, 4, 8, 16
	seen, copying := 0, 0
	for k, line := range lines[1:] {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if copying != 0 {
				out = append(append(out, line...), "\r\n"...)
			}
			continue
		}
		name, _, _ := bytes.Cut(line, []byte(":"))
		name = bytes.TrimSpace(name)
		switch {
		case headerIs(name, "via", 'v'):
			copying = via
		case headerIs(name, "from", 'f'):
			copying = from
		case headerIs(name, "to", 't'):
			copying = to
		case headerIs(name, "call-id", 'i'):
			copying = callID
		case headerIs(name, "cseq", 0):
			copying = cseq
		default:
			copying = 0
			continue
		}
		seen |= copying
		out = append(out, line...)
		folded := k+2 < len(lines) && len(lines[k+2]) > 0 && (lines[k+2][0] == ' ' || lines[k+2][0] == '\t')
		if copying == to && !folded && !hasTag(line) {
			out = append(out, ";tag="...)
			out = append(out, randomTag()...)
		}
		out = append(out, "\r\n"...)
	}
	if seen != via|from|to|callID|cseq {
		return nil, false
	}
	out = append(out, "Retry-After: "...)
	out = append(out, retryAfter...)
	out = append(out, "\r\nContent-Length: 0\r\n\r\n"...)
	return out, true
}

// headerIs tells whether name is the header long (lower case) or its
// compact form (0: none), in any case (RFC 3261 §7.3.1, §7.3.3).
func headerIs(name []byte, long string, compact byte) bool {
	if len(name) == 1 {
		return compact != 0 && name[0]|0x20 == compact
	}
	return len(name) == len(long) && bytes.EqualFold(name, []byte(long))
}

// hasTag tells whether a To line has a tag parameter, in any case.
func hasTag(line []byte) bool {
	for i := 0; i+5 <= len(line); i++ {
		if line[i] == ';' && bytes.EqualFold(line[i+1:i+5], []byte("tag=")) {
			return true
		}
	}
	return false
}

// randomTag is a To tag for a stateless response (RFC 3261 §19.3).
func randomTag() string {
	return strconv.FormatUint(rand.Uint64(), 36)
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
		if !ok || !headerIs(bytes.TrimSpace(name), "authorization", 0) {
			continue
		}
		_, after, found := bytes.Cut(value, []byte(`response="`))
		if found && len(after) > 0 && after[0] != '"' {
			return false
		}
	}
	return true
}
