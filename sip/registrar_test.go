package sip

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/loopback"
	"github.com/imsec/imsec/tun/nat"
)

type testSub struct {
	impi, impu string
	k          akakeys.K
	opc        akakeys.OPc
}

func newSub(t testing.TB, store *hss.MemStore, user, domain string) testSub {
	t.Helper()
	s := testSub{impi: user + "@" + domain, impu: "sip:" + user + "@" + domain}
	rand.Read(s.k[:])
	rand.Read(s.opc[:])
	if err := store.Add(context.Background(), hss.Subscriber{IMPI: s.impi, IMPUs: []string{s.impu}, K: s.k, OPc: s.opc, AMF: akakeys.AMF{0x80, 0}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// ladder collects events for assertions and prints them with -v.
type ladder struct {
	t  testing.TB
	mu sync.Mutex
	ev []Event
}

func (l *ladder) add(e Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
	l.t.Logf("%s: %s -> %s: %s [%s]", e.Kind, e.From, e.To, e.What, e.Detail)
}

// has tells whether an event of kind k was seen.
func (l *ladder) has(k EventKind) bool {
	return l.hasEvent(func(e Event) bool { return e.Kind == k })
}

// kinds returns the events of kind k seen so far.
func (l *ladder) kinds(k EventKind) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.ev {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

// hasEvent tells whether an event matching f was seen.
func (l *ladder) hasEvent(f func(Event) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.ev {
		if f(e) {
			return true
		}
	}
	return false
}

type rig struct {
	t     testing.TB
	store *hss.MemStore
	srv   *Server
	lad   *ladder
	kl    *bytes.Buffer
}

func newRig(t testing.TB, mod func(*ServerConfig)) *rig {
	t.Helper()
	store := hss.NewMemStore()
	h, err := hss.New(store, hss.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, store: store, lad: &ladder{t: t}, kl: &bytes.Buffer{}}
	cfg := ServerConfig{Domain: "a.example", HSS: h,
		SIP: netip.MustParseAddrPort("127.0.0.1:0"), ESP: netip.MustParseAddrPort("127.0.0.1:0"),
		Events: r.lad.add, TeardownGrace: 100 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	r.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *rig) ue(s testSub, mod func(*UEConfig)) *UE {
	r.t.Helper()
	cfg := UEConfig{PCSCF: r.srv.SIPAddr(), PCSCFESP: r.srv.ESPAddr(), IMPI: s.impi, IMPU: s.impu, K: s.k, OPc: s.opc,
		Events: r.lad.add, KeyLog: r.kl}
	if mod != nil {
		mod(&cfg)
	}
	u, err := NewUE(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { u.Close() })
	return u
}

// uniqueLoopback is a loopback address of its own (127.1.0.1 to
// 127.254.255.254, never 127.0.0.1): a test that must bind a fixed port
// (SIPp's 5060, a restarted server's) binds it there, where no other
// process holds it.
func uniqueLoopback() string { return loopback.Random().String() }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (r *rig) reg(impi string) RegistrationInfo {
	for _, ri := range r.srv.Registrations() {
		if ri.IMPI == impi {
			return ri
		}
	}
	return RegistrationInfo{}
}

func TestRegisterProtected(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	info := u.Info()
	if !info.Registered || !info.InnerAddr.IsValid() || info.Suite != (Suite{esp.EncAESCBC, esp.AuthHMACSHA196}) {
		t.Fatalf("UE info %+v", info)
	}
	ri := r.reg(alice.impi)
	if !ri.Registered || !ri.Protected || ri.InnerAddr != info.InnerAddr || len(ri.Sets) != 1 || ri.Sets[0].State != "active" {
		t.Fatalf("server view %+v", ri)
	}
	// The server reaches the UE inside the tunnel.
	res, err := r.srv.Options(ctx, alice.impi)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}
	if _, err := u.Ping(ctx, 1); err != nil {
		t.Fatalf("ping P-CSCF inner: %v", err)
	}
	if got := strings.Count(r.kl.String(), "\n"); got != 6 {
		t.Fatalf("UE key log has %d lines, want 4 signalling + 2 media SAs", got)
	}
	if err := u.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.reg(alice.impi).IMPI == "" })
	if n := len(r.srv.Pump().SACounters(nil)); n != 0 {
		t.Fatalf("%d SAs left on the server after de-registration", n)
	}
	if r.srv.dhcp.Leases() != 0 {
		t.Fatal("lease not released")
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWrongKeyGets403AndNoSA(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	wrong := alice
	rand.Read(wrong.k[:])
	u := r.ue(wrong, nil)
	err := u.Register(ctxT(t))
	// With a wrong K the USIM refuses the network's AUTN first.
	if !errors.Is(err, ErrNetworkAuth) {
		t.Fatalf("err %v", err)
	}
	_ = fmt.Sprint
}

// TestNATBetweenUEAndServer: the UE sits behind a userspace NAT for both
// SIP and ESP; the P-CSCF detects it and everything still works.
func TestNATBetweenUEAndServer(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	lo := netip.MustParseAddr("127.0.0.1")
	n, err := nat.New(nat.Config{Outside: lo, Filtering: nat.AddressPortDependent, Forwards: []nat.Forward{
		{Inside: netip.AddrPortFrom(lo, 0), Destination: r.srv.SIPAddr()},
		{Inside: netip.AddrPortFrom(lo, 0), Destination: r.srv.ESPAddr()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ins := n.InsideAddrs()
	u := r.ue(alice, func(c *UEConfig) { c.PCSCF, c.PCSCFESP = ins[0], ins[1] })
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.lad.hasEvent(func(e Event) bool { return e.Kind == EvRegisterReceived && e.NAT }) {
		t.Fatal("P-CSCF did not detect the NAT")
	}
	if ri := r.reg(alice.impi); !ri.NAT || !ri.Registered {
		t.Fatalf("%+v", ri)
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS through NAT: %v %v", res, err)
	}
}
