package sip

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

// bareServer is a Server with only what Housekeep uses, on a fake clock.
func bareServer(now *time.Time) *Server {
	cfg := ServerConfig{TempSATimeout: 30 * time.Second, Now: func() time.Time { return *now }, Events: func(Event) {}}
	return &Server{cfg: cfg, log: slog.New(slog.DiscardHandler), regs: map[string]*registration{}, limits: newSourceLimits(Limits{Off: true})}
}

// addRegistered adds a registered registration expiring at exp, as a
// handler would (regLocked, then releaseLocked).
func addRegistered(s *Server, impi string, exp time.Time) *registration {
	s.mu.Lock()
	defer s.unlock()
	reg := s.regLocked(impi, "sip:"+impi)
	reg.registered, reg.expires = true, exp
	s.releaseLocked(reg)
	return reg
}

// TestHousekeepByDeadline: registrations go exactly when their expiry has
// passed, in order, and Housekeep reports the nearest deadline left.
func TestHousekeepByDeadline(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	now := t0
	s := bareServer(&now)
	const n = 50
	// Expiries out of order: i*7 mod n seconds from t0.
	for i := range n {
		addRegistered(s, fmt.Sprintf("u%02d", i), t0.Add(time.Duration(1+(i*7)%n)*time.Second))
	}
	if next := s.Housekeep(); !next.Equal(t0.Add(time.Second + time.Nanosecond)) {
		t.Fatalf("next = %v, want 1 s + 1 ns after t0", next.Sub(t0))
	}
	for sec := 1; sec <= n; sec++ {
		now = t0.Add(time.Duration(sec) * time.Second)
		s.Housekeep() // exactly at the expiry: still registered
		if got := len(s.regs); got != n-sec+1 {
			t.Fatalf("at %d s: %d registrations, want %d", sec, got, n-sec+1)
		}
		now = now.Add(time.Millisecond)
		next := s.Housekeep()
		if got := len(s.regs); got != n-sec {
			t.Fatalf("at %d s + 1 ms: %d registrations, want %d", sec, got, n-sec)
		}
		if want := t0.Add(time.Duration(sec+1)*time.Second + time.Nanosecond); sec < n && !next.Equal(want) {
			t.Fatalf("at %d s: next = %v, want %v", sec, next.Sub(t0), want.Sub(t0))
		}
		if s.due.Len() != len(s.regs) {
			t.Fatalf("at %d s: %d queued, %d registrations", sec, s.due.Len(), len(s.regs))
		}
	}
}

// TestHousekeepReschedulesOnRelease: a re-registration that extends the
// expiry moves the registration back in the queue; a de-registration's
// teardown brings it forward; a registration left with nothing goes at
// the next round.
func TestHousekeepReschedulesOnRelease(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	now := t0
	s := bareServer(&now)
	a := addRegistered(s, "a", t0.Add(10*time.Second))
	addRegistered(s, "b", t0.Add(20*time.Second))
	addRegistered(s, "a", t0.Add(60*time.Second)) // a re-registers
	if a.due.Sub(t0) <= time.Minute-time.Second {
		t.Fatalf("a due at %v, want after its new expiry", a.due.Sub(t0))
	}
	now = t0.Add(30 * time.Second)
	s.Housekeep()
	if s.regs["a"] == nil || s.regs["b"] != nil {
		t.Fatalf("at 30 s: a kept %v (want true), b kept %v (want false)", s.regs["a"] != nil, s.regs["b"] != nil)
	}
	// a de-registers: its teardown is in 2 s.
	s.mu.Lock()
	reg := s.regLocked("a", "sip:a")
	reg.registered, reg.teardown = false, now.Add(2*time.Second)
	s.releaseLocked(reg)
	s.unlock()
	if next := s.Housekeep(); !next.Equal(now.Add(2 * time.Second)) {
		t.Fatalf("next = %v, want the teardown", next.Sub(t0))
	}
	now = now.Add(2 * time.Second)
	s.Housekeep()
	if len(s.regs) != 0 || s.due.Len() != 0 {
		t.Fatalf("after teardown: %d registrations, %d queued", len(s.regs), s.due.Len())
	}
	// A handler that leaves a registration with nothing (a refused first
	// REGISTER): due at once, dropped by the next round.
	s.mu.Lock()
	reg = s.regLocked("c", "sip:c")
	s.releaseLocked(reg)
	s.unlock()
	s.Housekeep()
	if len(s.regs) != 0 || s.due.Len() != 0 {
		t.Fatalf("idle registration kept: %d registrations, %d queued", len(s.regs), s.due.Len())
	}
}

// BenchmarkHousekeepRound is one housekeeper round with n registered UEs
// none of which is due: what holding them costs every round.
func BenchmarkHousekeepRound(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("ues=%d", n), func(b *testing.B) {
			t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
			now := t0
			s := bareServer(&now)
			for i := range n {
				addRegistered(s, fmt.Sprintf("u%06d", i), t0.Add(time.Hour+time.Duration(i)*time.Millisecond))
			}
			b.ResetTimer()
			for b.Loop() {
				now = now.Add(time.Nanosecond)
				s.Housekeep()
			}
		})
	}
}

// TestHousekeepKeepsFreshVector: a registration whose only state is an
// unused shared vector (its challenges dropped) keeps it until the
// temporary-SA lifetime, so the IMPI's next REGISTER reuses it.
func TestHousekeepKeepsFreshVector(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	now := t0
	s := bareServer(&now)
	s.mu.Lock()
	reg := s.regLocked("v", "sip:v")
	reg.vector = &sharedVector{issued: now}
	s.releaseLocked(reg)
	s.unlock()
	now = t0.Add(s.cfg.TempSATimeout)
	s.Housekeep()
	if s.regs["v"] == nil {
		t.Fatal("registration holding a fresh vector dropped as idle")
	}
	now = now.Add(time.Millisecond)
	s.Housekeep()
	if s.regs["v"] != nil || s.due.Len() != 0 {
		t.Fatalf("registration kept past its vector's lifetime (%d queued)", s.due.Len())
	}
}

// TestHousekeepOldSetLooksBackOff: a registration whose old set waits for
// its successor's first packet is looked at after housekeepEvery, then at
// doubling intervals up to oldLookMax, not twice a second until the old
// set's deadline; once the successor carries traffic the old set goes at
// the next look.
func TestHousekeepOldSetLooksBackOff(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	now := t0
	s := bareServer(&now)
	p, pool := newFakePump(), newSPIPool()
	old, cur := testSet(t, 1, 0x1000), testSet(t, 2, 0x2000)
	for _, ls := range []*liveSet{old, cur} {
		if !pool.reserve(ls.spis...) {
			t.Fatal("reserve")
		}
	}
	s.mu.Lock()
	reg := s.regLocked("a", "sip:a")
	reg.registered, reg.expires = true, t0.Add(time.Hour)
	reg.sas = saSets{pump: p, peer: &fakePeer{}, pool: pool}
	must(t, reg.sas.install(old))
	reg.sas.activate(old, reg.expires, t0)
	must(t, reg.sas.install(cur))
	reg.sas.activate(cur, reg.expires, t0.Add(s.cfg.TempSATimeout)) // old becomes old
	s.releaseLocked(reg)
	s.unlock()

	// Step the clock by 10 ms for 20 s, counting the rounds that look at
	// the registration (its due time passes).
	var looks []time.Duration
	for now = t0; now.Before(t0.Add(20 * time.Second)); now = now.Add(10 * time.Millisecond) {
		if reg.dueIdx >= 0 && !reg.due.After(now) {
			looks = append(looks, now.Sub(t0))
		}
		s.Housekeep()
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}
	if !slices.EqualFunc(looks, want, func(a, b time.Duration) bool { return a >= b && a < b+20*time.Millisecond }) {
		t.Fatalf("looks at %v, want about %v", looks, want)
	}
	if old.state != saOld || len(reg.sas.sets) != 2 {
		t.Fatal("the old set went while its successor carried nothing")
	}

	// The successor's first packet: the old set goes at the next look,
	// within oldLookMax.
	p.packets[cur.side.Inbound[0].SPI()] = 1
	start := now
	for ; len(reg.sas.sets) == 2 && now.Sub(start) <= oldLookMax; now = now.Add(10 * time.Millisecond) {
		s.Housekeep()
	}
	if len(reg.sas.sets) != 1 || reg.sas.active() != cur {
		t.Fatalf("old set kept %v after its successor carried traffic", now.Sub(start))
	}
}

// TestRegistrationOwnsIdentities: a new registration copies its IMPI and
// IMPU; substrings would keep the REGISTER's header values alive.
func TestRegistrationOwnsIdentities(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	s := bareServer(&now)
	auth := strings.Clone(`Digest username="alice@ims.example", realm="ims.example", uri="sip:ims.example", nonce="", response=""`)
	impi := auth[len(`Digest username="`) : len(`Digest username="`)+len("alice@ims.example")]
	to := strings.Clone("<sip:alice@ims.example>")
	impu := to[1 : len(to)-1]
	s.mu.Lock()
	reg := s.regLocked(impi, impu)
	s.releaseLocked(reg)
	s.unlock()
	if reg.impi != impi || reg.impu != impu {
		t.Fatalf("identities %q %q", reg.impi, reg.impu)
	}
	if inside(reg.impi, auth) || inside(reg.impu, to) {
		t.Fatal("the registration keeps substrings of the request's headers")
	}
	for k := range s.regs {
		if inside(k, auth) {
			t.Fatal("the registrations map is keyed by a substring of the Authorization")
		}
	}
}
