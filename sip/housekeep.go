package sip

import (
	"container/heap"
	"fmt"
	"slices"
	"time"

	"github.com/imsec/imsec/tun"
)

// The P-CSCF's housekeeper: every registration with something to do at a
// known time (a challenge or a temporary set to expire, an old set to
// retire, a de-registration to tear down, an expiry, an idle registration
// to drop) sits in a queue ordered by that time, Server.due. A round looks
// only at the registrations that are due, so holding 100,000 registered UEs
// costs a round nothing but a look at the queue's head
// (docs/architecture.md, "Housekeeping").
//
// Whoever changes a registration under Server.mu reschedules it: handlers
// do so when they let go of it (release), the housekeeper after each look.
// A registration scheduled too early costs one look; one scheduled too late
// would miss its deadline, so every change that brings a deadline nearer
// (a challenge, a temporary set, a teardown) happens inside a handler that
// holds the registration busy, and release reschedules it.

// housekeepEvery bounds how long the housekeeper sleeps between rounds. It
// is also when a registration's old set (retired as soon as its successor
// carries traffic, at the latest at its deadline) is first looked at again.
const housekeepEvery = 500 * time.Millisecond

// oldLookMax bounds the interval between two looks at an old set. The
// looks back off from housekeepEvery, doubling: a UE that re-registered
// usually sends through its new set at once, but an idle one may send
// nothing until the old set's deadline (TempSATimeout), and a fixed
// interval looked at every such registration twice a second (the counts
// are in docs/results.md). An old set so lives at most oldLookMax after
// its successor's first packet.
const oldLookMax = 8 * time.Second

// keysIdleAfter is how long a registered UE's SAs carry no authenticated
// packet from it before the housekeeper drops what their keys prepared on
// the first packet (the AES key schedule and HMAC pads, about 500 bytes a
// UE: esp's Idle). Most registered UEs are idle between re-registrations;
// the next packet prepares the keys again, in well under a microsecond.
const keysIdleAfter = 30 * time.Second

// regQueue is a min-heap of registrations by due (container/heap).
// Guarded by Server.mu.
type regQueue []*registration

func (q regQueue) Len() int           { return len(q) }
func (q regQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q regQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].dueIdx, q[j].dueIdx = i, j
}
func (q *regQueue) Push(x any) {
	reg := x.(*registration)
	reg.dueIdx = len(*q)
	*q = append(*q, reg)
}
func (q *regQueue) Pop() any {
	old := *q
	reg := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	reg.dueIdx = -1
	return reg
}

// housekeeper runs Housekeep until Close: when the nearest deadline is
// due, when poked (a deadline nearer than its next round), and at least
// every housekeepEvery.
func (s *Server) housekeeper() {
	t := time.NewTimer(housekeepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
		next := s.Housekeep()
		now := s.now()
		wait := housekeepEvery
		if !next.IsZero() {
			wait = min(max(next.Sub(now), time.Millisecond), housekeepEvery)
		}
		s.mu.Lock()
		s.hkNext = now.Add(wait)
		s.mu.Unlock()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

// poke makes the housekeeper run soon (a new, near deadline).
func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// releaseLocked ends a handler's hold on reg (regLocked, or busy++) and
// reschedules it with whatever the handler changed.
func (s *Server) releaseLocked(reg *registration) {
	reg.busy--
	if s.regs[reg.impi] == reg {
		now := s.now()
		if reg.registered && len(reg.sas.sets) > 0 && reg.keysIdleAt.IsZero() {
			reg.keysIdleAt = now.Add(keysIdleAfter)
		}
		s.scheduleLocked(reg, now)
	}
}

// scheduleLocked puts reg in the queue at its next deadline (or takes it
// out when it has none), and pokes the housekeeper when that deadline is
// nearer than its next round. An idle registration is due at once but
// costs no poke: the next round drops it.
func (s *Server) scheduleLocked(reg *registration, now time.Time) {
	due := s.nextDueLocked(reg, now)
	if due.IsZero() {
		s.unscheduleLocked(reg)
		return
	}
	reg.due = due
	if reg.dueIdx >= 0 {
		heap.Fix(&s.due, reg.dueIdx)
	} else {
		heap.Push(&s.due, reg)
	}
	if due.After(now) && due.Before(s.hkNext) {
		s.hkNext = due
		s.poke()
	}
}

func (s *Server) unscheduleLocked(reg *registration) {
	if reg.dueIdx >= 0 {
		heap.Remove(&s.due, reg.dueIdx)
	}
}

// nextDueLocked is when reg next needs the housekeeper (zero: never, as
// things stand). Deadlines are passed when now is after them, so a
// registration is due just after its nearest one.
func (s *Server) nextDueLocked(reg *registration, now time.Time) time.Time {
	var due time.Time
	at := func(t time.Time) {
		if !t.IsZero() && (due.IsZero() || t.Before(due)) {
			due = t
		}
	}
	after := func(t time.Time) { at(t.Add(time.Nanosecond)) }
	at(reg.teardown)
	if reg.registered {
		after(reg.expires)
		if !reg.keysIdleAt.IsZero() {
			after(reg.keysIdleAt)
		}
	}
	for _, ch := range reg.pending {
		after(ch.issued.Add(s.cfg.TempSATimeout))
	}
	if reg.vector != nil {
		after(reg.vector.issued.Add(s.cfg.TempSATimeout))
	}
	if t := reg.sas.next(); !t.IsZero() {
		after(t)
	}
	for _, st := range reg.sas.sets {
		if st.state == saOld {
			if st.nextLook.IsZero() {
				at(now.Add(housekeepEvery))
			} else {
				at(st.nextLook)
			}
		}
	}
	if reg.idle() {
		at(now)
	}
	return due
}

// idle tells whether reg holds nothing worth keeping. A de-registered one
// waits for its teardown; one holding a fresh shared vector keeps it until
// TempSATimeout, so that a flood's next REGISTER for the IMPI does not draw
// (and burn the SQN of) another.
func (reg *registration) idle() bool {
	return !reg.registered && reg.busy == 0 && len(reg.sas.sets) == 0 && len(reg.pending) == 0 &&
		reg.teardown.IsZero() && reg.vector == nil
}

// Housekeep expires temporary sets, retires old sets once their successor
// carries traffic, tears down de-registered registrations, and drops
// registrations past their expiry or idle, all by the injected clock: the
// registrations due by now, and no others. The housekeeper runs it; tests
// with a fake clock call it directly. It returns the nearest deadline left
// (zero if none).
func (s *Server) Housekeep() (next time.Time) {
	now := s.now()
	s.mu.Lock()
	defer s.unlock()
	s.limits.sweep(now, false)
	var looked []*registration
	for len(s.due) > 0 && !s.due[0].due.After(now) {
		reg := heap.Pop(&s.due).(*registration)
		if s.housekeepLocked(reg, now) {
			looked = append(looked, reg)
		}
	}
	for _, reg := range looked {
		s.scheduleLocked(reg, now)
	}
	if len(s.due) > 0 {
		next = s.due[0].due
	}
	return next
}

// housekeepLocked does what is due for one registration; false when it
// dropped it.
func (s *Server) housekeepLocked(reg *registration, now time.Time) bool {
	defer lookAtOld(reg, now)
	for _, st := range reg.sas.expire(now) {
		if st.state == saTemporary {
			s.emitLocked(EvSATemporaryExpired, "", "temporary SAs expired", fmt.Sprintf("%s: no protected REGISTER in %v", reg.impi, s.cfg.TempSATimeout))
		} else {
			s.emitLocked(EvSAOldDeleted, "", "old SAs deleted", fmt.Sprintf("%s: SA set %d replaced", reg.impi, st.id))
		}
	}
	if !reg.teardown.IsZero() && !now.Before(reg.teardown) {
		s.dropLocked(reg, "de-registered")
		return false
	}
	if reg.registered && now.After(reg.expires) {
		s.emitLocked(EvRegistrationExpired, "", "registration expired", reg.impi)
		s.dropLocked(reg, "expired")
		return false
	}
	if reg.registered && !reg.keysIdleAt.IsZero() && now.After(reg.keysIdleAt) {
		reg.keysIdleAt = idleKeys(reg, now)
	}
	// Challenges past the temporary-SA lifetime go, with their sets.
	for _, ch := range slices.Clone(reg.pending) {
		if now.Sub(ch.issued) > s.cfg.TempSATimeout {
			reg.forget(ch)
			if ch.set != nil && ch.set.state == saTemporary {
				reg.sas.remove(ch.set)
			}
		}
	}
	if reg.vector != nil && now.Sub(reg.vector.issued) > s.cfg.TempSATimeout {
		reg.vector = nil
	}
	if reg.idle() {
		s.dropLocked(reg, "idle")
		return false
	}
	return true
}

// lookAtOld paces the next look at each old set of reg whose look was due
// (or that was never looked at): twice the last interval, from
// housekeepEvery up to oldLookMax.
func lookAtOld(reg *registration, now time.Time) {
	for _, st := range reg.sas.sets {
		if st.state == saOld && (st.nextLook.IsZero() || !st.nextLook.After(now)) {
			st.lookEvery = min(max(2*st.lookEvery, housekeepEvery), oldLookMax)
			st.nextLook = now.Add(st.lookEvery)
		}
	}
}

// idleKeys drops what the keys of reg's SA sets (signalling and media)
// prepared, when no authenticated ESP came from the UE for keysIdleAfter,
// and returns zero: the next handler that lets go of reg schedules another
// look. Otherwise it returns when to look again.
func idleKeys(reg *registration, now time.Time) time.Time {
	var last time.Time
	for _, p := range [...]*tun.Peer{reg.peer, reg.mediaPeer} {
		if p != nil {
			if t := p.LastReceived(); t.After(last) {
				last = t
			}
		}
	}
	if again := last.Add(keysIdleAfter); again.After(now) {
		return again
	}
	for _, ls := range reg.sas.sets {
		if len(ls.side.Inbound) > 0 {
			ls.side.Inbound[0].Idle() // the set's four SAs share its keys
		}
		if ls.media != nil && ls.media.pair.in != nil {
			ls.media.pair.in.Idle() // both media SAs share theirs
		}
	}
	return time.Time{}
}
