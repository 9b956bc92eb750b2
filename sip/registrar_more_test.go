package sip

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/nat"
)

// challengeOnly sends the unprotected REGISTER and returns the 401, and
// goes no further (an attacker, or a UE that vanishes).
func (u *UE) challengeOnly(ctx context.Context) (*sip.Response, error) {
	if err := u.startTunnel(); err != nil {
		return nil, err
	}
	local := u.outerPC.LocalAddr().(*net.UDPAddr).AddrPort()
	contact := sip.Uri{Scheme: "sip", User: "x", Host: u.local.String(), Port: int(local.Port())}
	offer, spis, err := u.offer()
	if err != nil {
		return nil, err
	}
	defer u.releaseOffer(spis)
	req := u.newRegister(u.cfg.PCSCF.String(), contact, 600, offer, u.initialAuth(), "")
	return u.do(ctx, u.outerCli, req, local)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestWrongResponseGets403AndTemporarySAsGo(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	u.hookRES = func(res *akakeys.RES) { res[0] ^= 1 }
	err := u.Register(ctxT(t))
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("err %v, want 403", err)
	}
	waitFor(t, func() bool { return len(r.srv.Pump().SACounters(nil)) == 0 })
	if ri := r.reg(alice.impi); ri.Registered || len(ri.Sets) != 0 {
		t.Fatalf("after a wrong RES: %+v", ri)
	}
}

func TestBidDownRefused(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	// An attacker in the middle stripped the strong algorithm from the
	// Security-Server: the UE's Security-Verify no longer matches.
	u.hookVerify = func(v string) string { return strings.Replace(v, "hmac-sha-1-96", "hmac-md5-96", 1) }
	if err := u.Register(ctxT(t)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("err %v, want 403", err)
	}
	if !r.lad.has(EvVerifyMismatch) {
		t.Fatal("no bid-down event")
	}
	waitFor(t, func() bool { return len(r.reg(alice.impi).Sets) == 0 })
}

// TestBidDownOfModeRefused: the same with the mode: a Security-Verify
// that says mod=trans where the Security-Server said mod=UDP-enc-tun (an
// attacker steering the UE off the NAT-safe mode) gets 403.
func TestBidDownOfModeRefused(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	u.hookVerify = func(v string) string {
		if !strings.Contains(v, "mod=UDP-enc-tun") {
			t.Errorf("Security-Server %q has no mod=UDP-enc-tun", v)
		}
		return strings.Replace(v, "mod=UDP-enc-tun", "mod=trans", 1)
	}
	if err := u.Register(ctxT(t)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("err %v, want 403", err)
	}
	if !r.lad.has(EvVerifyMismatch) {
		t.Fatal("no bid-down event")
	}
}

// TestNoCommonModeGets494: a UE that offers only plain ESP to a P-CSCF
// that accepts only UDP-enc-tun gets 494, and the P-CSCF's event says the
// mode was the problem.
func TestNoCommonModeGets494(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	if err := u.startTunnel(); err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	u.modes = []string{ModTun} // as a UE with CAP_NET_RAW would offer
	u.mu.Unlock()
	err := u.Register(ctxT(t))
	var se *statusError
	if !errors.As(err, &se) || se.code != 494 {
		t.Fatalf("err %v, want 494", err)
	}
	if !r.lad.hasEvent(func(e Event) bool { return e.Kind == EvNoCommonSecurity && strings.Contains(e.Detail, "mode") }) {
		t.Fatal("no event naming the mode")
	}
}

func TestResyncWithAUTS(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	// The USIM has seen a much higher SQN than the HSS will issue (for
	// example a restored HSS backup): its first answer is AUTS.
	usim, err := akakeys.NewUSIM(alice.k, alice.opc, akakeys.USIMConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m := akakeys.NewMilenage(alice.k, alice.opc)
	for ind := range uint64(32) { // every IND slot of Annex C.2 has seen SEQ 5000
		v, _ := m.NewVector(akakeys.SQNFromUint64(5000<<5|ind), akakeys.AMF{0x80, 0})
		if _, _, _, err := usim.Authenticate(v.RAND, v.AUTN); err != nil {
			t.Fatal(err)
		}
	}
	u := r.ue(alice, func(c *UEConfig) { c.USIM = usim })
	if err := u.Register(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if !r.lad.has(EvHSSResync) || !r.lad.has(EvHSSResynced) {
		t.Fatal("no resync in the ladder")
	}
}

func TestReregistrationRollsSAs(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	first := r.reg(alice.impi).Sets[0]
	addr := u.Info().InnerAddr
	if err := u.Reregister(ctx); err != nil {
		t.Fatal(err)
	}
	ri := r.reg(alice.impi)
	if len(ri.Sets) != 2 || ri.InnerAddr != addr {
		t.Fatalf("after re-registration: %+v", ri)
	}
	// SIP keeps flowing both ways during the rollover.
	for range 3 {
		if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
			t.Fatalf("OPTIONS during rollover: %v %v", res, err)
		}
	}
	if _, err := u.Ping(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// The UE's next packet on the new set retires the old one.
	waitFor(t, func() bool {
		r.srv.Housekeep()
		ri := r.reg(alice.impi)
		return len(ri.Sets) == 1 && ri.Sets[0].ID != first.ID && ri.Sets[0].State == "active"
	})
	waitFor(t, func() bool { return len(u.Pump().SACounters(nil)) == 4 })
	if err := u.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTemporarySAsExpire(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	r := newRig(t, func(cfg *ServerConfig) { cfg.Now = c.Now })
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	res, err := u.challengeOnly(ctxT(t))
	if err != nil || res.StatusCode != 401 {
		t.Fatalf("%v %v", res, err)
	}
	if ri := r.reg(alice.impi); len(ri.Sets) != 1 || ri.Sets[0].State != "temporary" {
		t.Fatalf("%+v", ri)
	}
	c.Add(29 * time.Second)
	r.srv.Housekeep()
	if len(r.reg(alice.impi).Sets) != 1 {
		t.Fatal("temporary SAs gone too early")
	}
	c.Add(2 * time.Second)
	r.srv.Housekeep()
	if n := len(r.srv.Pump().SACounters(nil)); n != 0 {
		t.Fatalf("%d SAs after the temporary timeout", n)
	}
}

func TestSAPairCapPerIMPI(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Reregister(ctx); err != nil { // old + active
		t.Fatal(err)
	}
	// A flood of fresh challenges for the same IMPI never grows past the
	// TS 33.203 bound: each replaces the previous temporary set.
	other := r.ue(alice, nil)
	for range 5 {
		if res, err := other.challengeOnly(ctx); err != nil || res.StatusCode != 401 {
			t.Fatalf("%v %v", res, err)
		}
		ri := r.reg(alice.impi)
		if 2*len(ri.Sets) > MaxSAPairsPerIMPI {
			t.Fatalf("%d SA pairs for one IMPI", 2*len(ri.Sets))
		}
		inbound := 0
		for _, s := range r.srv.Pump().SACounters(nil) {
			if s.Inbound {
				inbound++
			}
		}
		if inbound > MaxSAPairsPerIMPI {
			t.Fatalf("%d inbound SAs in the pump", inbound)
		}
	}
}

func TestGlobalTemporaryCap(t *testing.T) {
	r := newRig(t, func(c *ServerConfig) { c.MaxTempSets = 2 })
	ctx := ctxT(t)
	var codes []int
	for _, name := range []string{"a1", "a2", "a3"} {
		s := newSub(t, r.store, name, "a.example")
		res, err := r.ue(s, nil).challengeOnly(ctx)
		if err != nil {
			t.Fatal(err)
		}
		codes = append(codes, res.StatusCode)
	}
	if codes[0] != 401 || codes[1] != 401 || codes[2] != 503 {
		t.Fatalf("codes %v, want 401 401 503", codes)
	}
}

// TestTwoUEsSamePrivateAddress: two UEs with the same private address
// (127.0.0.1 here) behind two NATs get two inner addresses and both work.
func TestTwoUEsSamePrivateAddress(t *testing.T) {
	r := newRig(t, nil)
	ctx := ctxT(t)
	lo := netip.MustParseAddr("127.0.0.1")
	var ues []*UE
	var subs []testSub
	for _, name := range []string{"alice", "carol"} {
		s := newSub(t, r.store, name, "a.example")
		n, err := nat.New(nat.Config{Outside: lo, Forwards: []nat.Forward{
			{Inside: netip.AddrPortFrom(lo, 0), Destination: r.srv.SIPAddr()},
			{Inside: netip.AddrPortFrom(lo, 0), Destination: r.srv.ESPAddr()}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		ins := n.InsideAddrs()
		u := r.ue(s, func(c *UEConfig) { c.PCSCF, c.PCSCFESP, c.Local = ins[0], ins[1], lo })
		if err := u.Register(ctx); err != nil {
			t.Fatal(err)
		}
		ues, subs = append(ues, u), append(subs, s)
	}
	if ues[0].Info().InnerAddr == ues[1].Info().InnerAddr {
		t.Fatal("two UEs got one inner address")
	}
	for _, s := range subs {
		if res, err := r.srv.Options(ctx, s.impi); err != nil || res.StatusCode != 200 {
			t.Fatalf("OPTIONS to %s: %v %v", s.impi, res, err)
		}
	}
}

func TestIPsecRequiredRefusesPlainRegister(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	local := u.outerPC.LocalAddr().(*net.UDPAddr).AddrPort()
	req := u.newRegister(u.cfg.PCSCF.String(), sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1"}, 600, nil, u.initialAuth(), "")
	res, err := u.do(ctxT(t), u.outerCli, req, local)
	if err != nil || res.StatusCode != 421 {
		t.Fatalf("%v %v, want 421", res, err)
	}
}

// TestLargeMessagesUseTCP: RFC 3261 §18.1.1 — a request over 1300 bytes
// goes over TCP, inside the tunnel, in both directions.
func TestLargeMessagesUseTCP(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	// A long Security-Client list makes every REGISTER larger than 1300 bytes.
	var offer []Suite
	for range 12 {
		offer = append(offer, Suite{esp.EncAESCBC, esp.AuthHMACMD596})
	}
	offer = append(offer, Suite{esp.EncAESCBC, esp.AuthHMACSHA196})
	u := r.ue(alice, func(c *UEConfig) { c.Offer = offer })
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.lad.hasEvent(func(e Event) bool {
		return e.Kind == EvRegisterReceived && e.Addr == netip.MustParseAddrPort("100.64.0.2:5062") && e.Transport == "TCP"
	}) {
		t.Fatal("protected REGISTER did not come from port-c")
	}
	res, err := r.srv.optionsWithBody(ctx, alice.impi, bytes.Repeat([]byte("x"), 2000))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("large OPTIONS: %v %v", res, err)
	}
	if !r.lad.hasEvent(func(e Event) bool { return e.Kind == EvOptionsAnswered && e.Transport == "TCP" }) {
		t.Fatal("the large OPTIONS did not arrive over TCP")
	}
	if err := u.Reregister(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDigestBoundToRealmUserAndURI(t *testing.T) {
	r := newRig(t, nil)
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "a.example"})
	good := akakeys.Credentials{Username: "alice@a.example", Realm: "a.example", URI: "sip:a.example"}
	if !r.srv.digestBound(&good, req, "alice@a.example") {
		t.Fatal("good credentials refused")
	}
	for _, c := range []akakeys.Credentials{
		{Username: "alice@a.example", Realm: "b.example", URI: "sip:a.example"},
		{Username: "mallory@a.example", Realm: "a.example", URI: "sip:a.example"},
		{Username: "alice@a.example", Realm: "a.example", URI: "sip:b.example"},
		{Username: "alice@a.example", Realm: "a.example", URI: "not a uri"},
	} {
		if r.srv.digestBound(&c, req, "alice@a.example") {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestUEStartsOverAfterServerRestart: the P-CSCF restarts and forgets every
// SA; the UE's next re-registration gets no answer, so it starts over from
// an unprotected REGISTER and is registered again, with no help.
func TestUEStartsOverAfterServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("takes ~10 s (a SIP timeout)")
	}
	// The first server binds port 0 on a loopback address of its own; the
	// restarted one takes the same ports there, which nothing else uses.
	lo := netip.MustParseAddr(uniqueLoopback())
	any := netip.AddrPortFrom(lo, 0)
	r := newRig(t, func(c *ServerConfig) { c.SIP, c.ESP, c.MediaESP = any, any, any })
	sipAddr, espAddr, mediaAddr := r.srv.SIPAddr(), r.srv.ESPAddr(), r.srv.MediaESPAddr()
	fixed := func(c *ServerConfig) { c.SIP, c.ESP, c.MediaESP = sipAddr, espAddr, mediaAddr }
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(c *UEConfig) { c.Expires = 4 * time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	// Both ends registered: under load the UE may miss the first 200 and
	// register again from the start, which is not the path under test.
	for end := time.Now().Add(20 * time.Second); !r.reg(alice.impi).Registered || !u.Info().Registered; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the UE did not register in 20 s")
		}
	}
	first := r.srv

	// Restart: a new P-CSCF on the same addresses, with the same HSS.
	first.Close()
	cfg := first.cfg
	fixed(&cfg)
	srv2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	r.srv = srv2
	deadline := time.Now().Add(25 * time.Second)
	for !r.reg(alice.impi).Registered {
		if time.Now().After(deadline) {
			t.Fatal("the UE did not register again after the restart")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !r.lad.has(EvStartOver) {
		t.Fatal("no start-over in the ladder")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestRegistrationExpiry: a UE that never re-registers loses its
// registration, its SAs (signalling and media) and its lease when the
// registration expires.
func TestRegistrationExpiry(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	r := newRig(t, func(cfg *ServerConfig) { cfg.Now = c.Now })
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(cfg *UEConfig) { cfg.Expires = 60 * time.Second })
	if err := u.Register(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c.Add(59 * time.Second)
	r.srv.Housekeep()
	if !r.reg(alice.impi).Registered {
		t.Fatal("registration gone before its expiry")
	}
	c.Add(2 * time.Second)
	r.srv.Housekeep()
	if ri := r.reg(alice.impi); ri.IMPI != "" {
		t.Fatalf("registration kept after expiry: %+v", ri)
	}
	if n := len(r.srv.Pump().SACounters(nil)) + len(r.srv.MediaPump().SACounters(nil)); n != 0 {
		t.Fatalf("%d SAs left after expiry", n)
	}
	if r.srv.dhcp.Leases() != 0 {
		t.Fatal("lease kept after expiry")
	}
	if !r.lad.has(EvRegistrationExpired) {
		t.Fatal("no expiry in the ladder")
	}
}

// TestKeepalivesKeepTheNATOpen shows why RFC 3948 keepalives matter, end to
// end: behind a NAT whose mappings die after 2 s of silence, an idle UE
// without keepalives becomes unreachable (the P-CSCF's OPTIONS is lost);
// with keepalives every second it stays reachable.
func TestKeepalivesKeepTheNATOpen(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for NAT mappings to time out (~10 s)")
	}
	for _, tc := range []struct {
		name      string
		keepalive time.Duration
		reachable bool
	}{{"off", -1, false}, {"every 1s", time.Second, true}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, nil)
			alice := newSub(t, r.store, "alice", "a.example")
			lo := netip.MustParseAddr("127.0.0.1")
			n, err := nat.New(nat.Config{Outside: lo, Filtering: nat.AddressPortDependent, Timeout: 2 * time.Second, Forwards: []nat.Forward{
				{Inside: netip.AddrPortFrom(lo, 0), Destination: r.srv.SIPAddr()},
				{Inside: netip.AddrPortFrom(lo, 0), Destination: r.srv.ESPAddr()},
				{Inside: netip.AddrPortFrom(lo, 0), Destination: r.srv.MediaESPAddr()}}})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			in := n.InsideAddrs()
			u := r.ue(alice, func(c *UEConfig) {
				c.PCSCF, c.PCSCFESP, c.PCSCFMediaESP, c.Keepalive = in[0], in[1], in[2], tc.keepalive
			})
			if err := u.Register(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(4 * time.Second) // idle: no SIP, no media
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			res, err := r.srv.Options(ctx, alice.impi)
			got := err == nil && res.StatusCode == 200
			if got != tc.reachable {
				t.Fatalf("UE reachable after 4 s idle: %v (err %v), want %v; NAT %+v", got, err, tc.reachable, n.Counters())
			}
			if tc.reachable && r.srv.Pump().Counters().KeepalivesReceived == 0 {
				t.Fatal("no keepalive reached the P-CSCF")
			}
		})
	}
}

// TestUEAnswersRechallenge: a registrar may challenge the answer to its
// challenge again (Kamailio's ims_auth does when the answer overtakes the
// HSS's MAA). The UE answers the new challenge through the new SA set its
// 401 built, and registers on the first attempt.
func TestUEAnswersRechallenge(t *testing.T) {
	r := newRig(t, nil)
	var n atomic.Int32
	r.srv.hookRechallenge = func() bool { return n.Add(1) == 1 }
	s := newSub(t, r.store, "alice", "a.example")
	u := r.ue(s, nil)
	if err := u.Register(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 2 {
		t.Fatalf("the registrar saw %d answers, want 2 (one challenged again)", n.Load())
	}
	ri := r.reg(s.impi)
	if !ri.Registered || !ri.Protected {
		t.Fatalf("not registered: %+v", ri)
	}
	// The set challenged again goes; only the one that registered stays,
	// and the UE's SPIs are its own (none handed back while in use).
	waitFor(t, func() bool { return len(r.reg(s.impi).Sets) == 1 })
	u.mu.Lock()
	sets := len(u.sas.sets)
	u.mu.Unlock()
	if sets != 1 {
		t.Fatalf("UE holds %d SA sets, want 1", sets)
	}
	// A re-registration goes through the set that registered.
	if err := u.Reregister(ctxT(t)); err != nil {
		t.Fatalf("re-registration through the registered set: %v", err)
	}
}
