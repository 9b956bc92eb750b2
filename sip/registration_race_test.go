package sip

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
)

// slowHSS holds every Vector call until release is closed.
type slowHSS struct {
	HSS
	called  chan struct{}
	release chan struct{}
	once    sync.Once
}

func (h *slowHSS) Vector(ctx context.Context, impi string) (akakeys.Vector, error) {
	h.once.Do(func() { close(h.called) })
	select {
	case <-h.release:
	case <-ctx.Done():
		return akakeys.Vector{}, ctx.Err()
	}
	return h.HSS.Vector(ctx, impi)
}

// TestSlowHSSAndFastHousekeeper: while the HSS takes its time over a
// vector, the registration waiting for it has no challenge and no SAs yet,
// and a housekeeper round must not drop it as idle: the UE's answer would
// then find a fresh registration and get a second 401 (and, with
// sec-agree, the orphan's temporary SAs, lease and temporary-set count
// would never be given back). The UE registers on its first attempt and
// the counters go back to zero after de-registration.
func TestSlowHSSAndFastHousekeeper(t *testing.T) {
	clk := &clock{t: time.Unix(2_000_000_000, 0)}
	slow := &slowHSS{called: make(chan struct{}), release: make(chan struct{})}
	r := newRig(t, func(c *ServerConfig) {
		c.Now = clk.Now
		slow.HSS = c.HSS
		c.HSS = slow
	})
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	done := make(chan error, 1)
	go func() { done <- u.Register(ctxT(t)) }()
	<-slow.called
	// Rounds of housekeeping, far apart on the server's clock, while the
	// HSS holds the vector.
	for range 5 {
		clk.Add(time.Minute)
		r.srv.Housekeep()
	}
	if st := r.srv.Stats(); st.Registrations != 1 {
		t.Fatalf("the registration waiting on the HSS was dropped: %+v", st)
	}
	close(slow.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(r.lad.kinds(EvChallenge)); n != 1 {
		t.Fatalf("%d challenges, want 1", n)
	}
	if err := u.Deregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// The UE may hear the 200 before the P-CSCF has marked the teardown:
	// let the clock pass until it has, and the housekeeper removes it.
	gone := func() bool {
		clk.Add(time.Minute)
		r.srv.Housekeep()
		st := r.srv.Stats()
		return st == (Stats{TCP: st.TCP})
	}
	for end := time.Now().Add(5 * time.Second); !gone(); {
		if time.Now().After(end) {
			t.Fatalf("left after de-registration: %+v", r.srv.Stats())
		}
		runtime.Gosched()
	}
}

// TestCountersReturnToZeroAfterFlood: a flood of unprotected REGISTERs
// from many sources for registered and unknown identities, answered or
// not, leaves nothing once the temporary-SA lifetime has passed: no
// challenge, temporary set, SPI, lazy SA or lease.
func TestCountersReturnToZeroAfterFlood(t *testing.T) {
	clk := &clock{t: time.Unix(2_000_000_000, 0)}
	r := newRig(t, func(c *ServerConfig) { c.Now = clk.Now; c.Events = nil })
	newSub(t, r.store, "alice", "a.example")
	newSub(t, r.store, "bob", "a.example")
	var wg sync.WaitGroup
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := []string{"alice", "bob", "mallory"}[i%3]
			msg := fmt.Sprintf("REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.%d:5060;branch=z9hG4bK%d\r\n"+
				"From: <sip:%s@a.example>;tag=%d\r\nTo: <sip:%s@a.example>\r\nCall-ID: flood%d\r\nCSeq: 1 REGISTER\r\n"+
				"Contact: <sip:%s@198.51.100.%d:5060>\r\n"+
				"Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=UDP-enc-tun;spi-c=%d;spi-s=%d;port-c=5062;port-s=5068\r\n"+
				"Content-Length: 0\r\n\r\n", i%250+1, i, user, i, user, i, user, i%250+1, 1000+2*i, 1001+2*i)
			m, err := sip.ParseMessage([]byte(msg))
			if err != nil {
				t.Error(err)
				return
			}
			req := m.(*sip.Request)
			req.SetSource(fmt.Sprintf("198.51.100.%d:5060", i%250+1))
			req.SetTransport("UDP")
			r.srv.handler(r.srv.onOuterRegister)(req, newFakeTx())
		}()
	}
	wg.Wait()
	if st := r.srv.Stats(); st.TempSets == 0 || st.Pending == 0 {
		t.Fatalf("the flood left no state to give back (the test tests nothing): %+v", st)
	}
	clk.Add(DefaultTempSATimeout + time.Second)
	r.srv.Housekeep()
	if st := r.srv.Stats(); st != (Stats{Overloaded: st.Overloaded, TCP: st.TCP}) {
		t.Fatalf("left after the flood: %+v", st)
	}
	if sas := r.srv.Pump().SACounters(nil); len(sas) != 0 {
		t.Fatalf("%d SAs left in the pump", len(sas))
	}
}

// countingHSS counts Vector calls and holds them until release is closed.
type countingHSS struct {
	HSS
	mu      sync.Mutex
	calls   int
	release chan struct{}
}

func (h *countingHSS) Vector(ctx context.Context, impi string) (akakeys.Vector, error) {
	h.mu.Lock()
	h.calls++
	h.mu.Unlock()
	select {
	case <-h.release:
	case <-ctx.Done():
		return akakeys.Vector{}, ctx.Err()
	}
	return h.HSS.Vector(ctx, impi)
}

// TestConcurrentChallengesDrawOneVector: REGISTERs for one IMPI from
// several sources at once, while the HSS takes its time, wait for the one
// vector being drawn instead of each drawing its own (a flood must burn
// one SQN, not one per REGISTER); all get the same nonce. Before, every
// REGISTER that arrived before the first vector did drew another.
func TestConcurrentChallengesDrawOneVector(t *testing.T) {
	hss := &countingHSS{release: make(chan struct{})}
	r := newRig(t, func(c *ServerConfig) {
		hss.HSS = c.HSS
		c.HSS = hss
	})
	alice := newSub(t, r.store, "alice", "a.example")
	const n = 4
	var atks []*attacker
	for range n {
		a := newAttacker(t, r.srv.SIPAddr())
		a.register(alice.impi, alice.impu)
		atks = append(atks, a)
	}
	// All n handlers are in: one draws, the others wait for it.
	for end := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		r.srv.mu.Lock()
		busy := 0
		if reg := r.srv.regs[alice.impi]; reg != nil {
			busy = reg.busy
		}
		r.srv.mu.Unlock()
		if busy == n {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("%d of %d REGISTERs reached the registrar", busy, n)
		}
	}
	close(hss.release)
	nonces := map[string]bool{}
	for i, a := range atks {
		code, auth := a.answer(5 * time.Second)
		if code != 401 || auth["www-authenticate"] == "" {
			t.Fatalf("REGISTER %d: %d, want 401 with a challenge", i, code)
		}
		nonces[auth["www-authenticate"]] = true
	}
	hss.mu.Lock()
	calls := hss.calls
	hss.mu.Unlock()
	if calls != 1 || len(nonces) != 1 {
		t.Fatalf("%d concurrent REGISTERs for one IMPI drew %d vectors (%d different challenges), want 1", n, calls, len(nonces))
	}
}
