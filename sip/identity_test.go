package sip

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

// TestRegisterAsAnotherIMPURefused: bob, with his own keys and IMPI,
// registering alice's IMPU gets 403 before any vector is drawn, and
// alice's IMPU is not registered (so calls to alice cannot ring bob).
func TestRegisterAsAnotherIMPURefused(t *testing.T) {
	r := newRig(t, nil)
	newSub(t, r.store, "alice", "a.example")
	bob := newSub(t, r.store, "bob", "a.example")
	hijack := bob
	hijack.impu = "sip:alice@a.example"
	u := r.ue(hijack, nil)
	if err := u.Register(ctxT(t)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("err %v, want 403", err)
	}
	if !r.lad.has(EvIdentityMismatch) {
		t.Fatal("no identity-mismatch event")
	}
	if r.lad.has(EvHSSVector) {
		t.Fatal("a vector was drawn for a REGISTER that names another's IMPU")
	}
	for _, ri := range r.srv.Registrations() {
		if ri.Registered {
			t.Fatalf("registered: %+v", ri)
		}
	}
}

// TestCallerIdentityAsserted: the callee sees the identity the caller's
// P-CSCF asserts, whatever From, P-Asserted-Identity or
// P-Preferred-Identity the caller put in its INVITE.
func TestCallerIdentityAsserted(t *testing.T) {
	cases := []struct {
		name     string
		tamper   func(*sip.Request)
		wantFrom string
		event    bool // an identity-asserted event expected
	}{
		{"honest", func(*sip.Request) {}, "sip:alice@a.example", false},
		{"spoofed From", func(r *sip.Request) { r.From().Address.User = "ceo" }, "sip:alice@a.example", true},
		{"own P-Asserted-Identity", func(r *sip.Request) {
			r.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<sip:ceo@a.example>"))
		}, "sip:alice@a.example", false},
		{"P-Preferred-Identity outside the set", func(r *sip.Request) {
			r.AppendHeader(sip.NewHeader("P-Preferred-Identity", "<sip:ceo@a.example>"))
		}, "sip:alice@a.example", true},
		{"anonymous", func(r *sip.Request) {
			r.From().Address = sip.Uri{Scheme: "sip", User: "anonymous", Host: "anonymous.invalid"}
		}, "sip:anonymous@anonymous.invalid", false},
	}
	td := newTwoDomains(t, AnswerBusy, nil)
	var mu sync.Mutex
	var seen *sip.Request
	td.bob.hookIncoming = func(r *sip.Request) { mu.Lock(); seen = r.Clone(); mu.Unlock() }
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			before := len(td.a.lad.kinds(EvIdentityAsserted))
			td.alice.hookInvite = c.tamper
			_, err := td.alice.Call(ctxT(t), "sip:bob@b.example", time.Second, MediaConfig{})
			var cf *ErrCallFailed
			if !errors.As(err, &cf) || cf.Code != 486 {
				t.Fatalf("call: %v, want 486 from bob", err)
			}
			mu.Lock()
			got := seen
			mu.Unlock()
			if got == nil {
				t.Fatal("bob saw no INVITE")
			}
			if f := aor(got.From().Address); f != c.wantFrom {
				t.Errorf("bob saw From %s, want %s", f, c.wantFrom)
			}
			pais := got.GetHeaders("P-Asserted-Identity")
			if len(pais) != 1 || normAOR(pais[0].Value()) != "sip:alice@a.example" {
				t.Errorf("bob saw P-Asserted-Identity %v, want exactly <sip:alice@a.example>", pais)
			}
			if got.GetHeader("P-Preferred-Identity") != nil {
				t.Error("P-Preferred-Identity crossed the P-CSCF")
			}
			if ev := len(td.a.lad.kinds(EvIdentityAsserted)) > before; ev != c.event {
				t.Errorf("identity-asserted event %v, want %v", ev, c.event)
			}
		})
	}
}

// TestCallsReachTheImplicitSet: an IMPI with two IMPUs registers one; a
// call to the other reaches the same UE (TS 23.228 implicit registration),
// and the 200 OK listed both in P-Associated-URI.
func TestCallsReachTheImplicitSet(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	bob := testSub{impi: "bob@a.example", impu: "sip:bob@a.example"}
	rand.Read(bob.k[:])
	rand.Read(bob.opc[:])
	if err := r.store.Add(context.Background(), hss.Subscriber{IMPI: bob.impi, IMPUs: []string{bob.impu, "sip:+15550100@a.example"},
		K: bob.k, OPc: bob.opc, AMF: akakeys.AMF{0x80, 0}}); err != nil {
		t.Fatal(err)
	}
	ua := r.ue(alice, nil)
	ub := r.ue(bob, func(c *UEConfig) { c.Answer = AnswerBusy })
	var mu sync.Mutex
	var got string
	ub.hookIncoming = func(req *sip.Request) { mu.Lock(); got = req.Recipient.String(); mu.Unlock() }
	ctx := ctxT(t)
	for _, u := range []*UE{ua, ub} {
		if err := u.Register(ctx); err != nil {
			t.Fatal(err)
		}
	}
	_, err := ua.Call(ctx, "sip:+15550100@a.example", time.Second, MediaConfig{})
	var cf *ErrCallFailed
	if !errors.As(err, &cf) || cf.Code != 486 {
		t.Fatalf("call to bob's second IMPU: %v, want bob's 486", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got == "" {
		t.Fatal("bob's UE saw no INVITE")
	}
	// An IMPU nobody owns is not routed to anyone.
	if _, err := ua.Call(ctx, "sip:+15550199@a.example", time.Second, MediaConfig{}); !errors.As(err, &cf) || cf.Code != 480 {
		t.Fatalf("call to an unknown IMPU: %v, want 480", err)
	}
}
