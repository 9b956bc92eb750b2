package sip

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestOverloadCeiling: past Limits.RegisterRate the first REGISTER of a
// registration gets 503 with a Retry-After in [1, 5) seconds, counted as
// shed, with the per-source limits on or off. A registration admitted
// before the bucket ran dry finishes: its protected REGISTER (the answer)
// is never shed.
func TestOverloadCeiling(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("off=%v", off), func(t *testing.T) {
			clk := &clock{t: time.Now()}
			r := newRig(t, func(c *ServerConfig) {
				c.Now = clk.Now
				c.Limits = Limits{Off: off, RegisterRate: 1, RegisterBurst: 2}
			})
			alice := newSub(t, r.store, "alice", "a.example")
			bob := newSub(t, r.store, "bob", "a.example")
			a := newAttacker(t, r.srv.SIPAddr())
			codes := map[int]int{}
			for range 5 {
				a.register(bob.impi, bob.impu)
				code, h := a.answer(5 * time.Second)
				codes[code]++
				if code == 503 {
					n, err := strconv.Atoi(h["retry-after"])
					if err != nil || n < shedRetryMin || n >= shedRetryMin+shedRetrySpread {
						t.Fatalf("503 with Retry-After %q", h["retry-after"])
					}
				}
			}
			if codes[401] != 2 || codes[503] != 3 {
				t.Fatalf("answers %v, want 2 x 401 (the burst) and 3 x 503", codes)
			}
			if st := r.srv.Stats(); st.Shed != 3 || st.Overloaded != 3 {
				t.Fatalf("stats %+v, want 3 shed", st)
			}
			// One second later one token: alice's first REGISTER takes it,
			// and her answer passes with the bucket empty again.
			clk.Add(time.Second)
			u := r.ue(alice, func(c *UEConfig) { c.Local = netip.MustParseAddr(uniqueLoopback()) })
			if err := u.Register(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if st := r.srv.Stats(); st.Shed != 3 {
				t.Fatalf("alice's registration was shed: %+v", st)
			}
		})
	}
}

// TestOverloadInFlight: while more REGISTER handlers run than
// Limits.MaxInFlight (here one, held by a slow HSS), a new registration
// is shed; once the HSS answers, the held registration completes.
func TestOverloadInFlight(t *testing.T) {
	slow := &slowHSS{called: make(chan struct{}), release: make(chan struct{})}
	r := newRig(t, func(c *ServerConfig) {
		c.Limits = Limits{MaxInFlight: 1}
		slow.HSS = c.HSS
		c.HSS = slow
	})
	alice := newSub(t, r.store, "alice", "a.example")
	bob := newSub(t, r.store, "bob", "a.example")
	u := r.ue(alice, nil)
	done := make(chan error, 1)
	go func() { done <- u.Register(ctxT(t)) }()
	<-slow.called
	a := newAttacker(t, r.srv.SIPAddr())
	a.register(bob.impi, bob.impu)
	if code, h := a.answer(5 * time.Second); code != 503 || h["retry-after"] == "" {
		t.Fatalf("a new registration while one REGISTER waits on the HSS: %d %v, want 503 with Retry-After", code, h)
	}
	if st := r.srv.Stats(); st.Shed != 1 || st.InFlight != 1 {
		t.Fatalf("stats %+v, want 1 shed and alice's REGISTER in flight", st)
	}
	close(slow.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := r.srv.Stats(); st.InFlight != 0 {
		t.Fatalf("%d REGISTER handlers still counted in flight", st.InFlight)
	}
}

// TestOverloadDHCPBacklog: more than half of the DHCP queue waiting, or a
// DHCP request that waited past the target in the last second, sheds new
// registrations; otherwise they are admitted.
func TestOverloadDHCPBacklog(t *testing.T) {
	o := newOverload(Limits{MaxInFlight: DefaultMaxInFlight})
	now := time.Now()
	if why := o.shedReason(now, 0, dhcpQueue/2); why != "" {
		t.Fatalf("half the DHCP queue: shed (%s)", why)
	}
	if why := o.shedReason(now, 0, dhcpQueue/2+1); why == "" {
		t.Fatal("over half the DHCP queue: admitted")
	}
	o.dhcpWaited(dhcpLagTarget/2, time.Now())
	if why := o.shedReason(now, 0, 0); why != "" {
		t.Fatalf("a DHCP request that waited %v: shed (%s)", dhcpLagTarget/2, why)
	}
	o.dhcpWaited(2*dhcpLagTarget, time.Now())
	if why := o.shedReason(now, 0, 0); why == "" {
		t.Fatalf("a DHCP request that waited %v: admitted", 2*dhcpLagTarget)
	}
	// Seen long ago, it no longer counts: shedding must end by itself.
	o.dhcpLagAt.Store(time.Now().Add(-2 * dhcpLagHold).UnixNano())
	if why := o.shedReason(now, 0, 0); why != "" {
		t.Fatalf("a DHCP lag %v ago: shed (%s)", 2*dhcpLagHold, why)
	}
}

// TestUERetryAfter: a UE waits at least the Retry-After of a 503 before
// registering again (TS 24.229 §5.1.1.2.1), and its own back-off when that
// is longer or there is none.
func TestUERetryAfter(t *testing.T) {
	shed := &statusError{code: 503, reason: "Service Unavailable", retryAfter: 3 * time.Second}
	for _, c := range []struct {
		err     error
		backoff time.Duration
		want    time.Duration
	}{
		{shed, time.Second, 3 * time.Second},
		{fmt.Errorf("register: %w", shed), time.Second, 3 * time.Second},
		{shed, 8 * time.Second, 8 * time.Second},
		{&statusError{code: 500}, time.Second, time.Second},
		{errors.New("timeout"), 2 * time.Second, 2 * time.Second},
	} {
		if got := retryWait(c.err, c.backoff); got != c.want {
			t.Errorf("retryWait(%v, %v) = %v, want %v", c.err, c.backoff, got, c.want)
		}
	}
	for _, c := range []struct {
		code  int
		value string
		want  time.Duration
		ok    bool
	}{
		{503, "5", 5 * time.Second, true},
		{503, "18000 (in maintenance)", time.Hour, true},
		{503, "2;duration=10", 2 * time.Second, true},
		{503, "soon", 0, false},
		{503, "-1", 0, false},
		{503, "", 0, false},
		{500, "5", 0, false},
	} {
		res := sip.NewResponse(c.code, "x")
		if c.value != "" {
			res.AppendHeader(sip.NewHeader("Retry-After", c.value))
		}
		if got, ok := RetryAfter(res); got != c.want || ok != c.ok {
			t.Errorf("%d with Retry-After %q: %v %v, want %v %v", c.code, c.value, got, ok, c.want, c.ok)
		}
	}
}
