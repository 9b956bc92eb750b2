package sip

import (
	"context"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	sipgosip "github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/tun/dhcp"
)

// Inner IPv6: the UE's address inside the tunnel from the P-CSCF's IPv6
// pool over DHCPv6, bound to the IMPI like the IPv4 lease; SIP and media
// over it; IPv4-only, IPv6-only and dual-stack pools.

var testPool6 = netip.MustParsePrefix("2001:db8:64::/64")

// TestInnerIPv6Only: a P-CSCF with only an IPv6 pool and a UE asking for
// IPv6 only: the UE gets 2001:db8:64::2 over DHCPv6 with the P-CSCF's
// address in OPTION_SIP_SERVER_A, registers over inner IPv6, answers an
// OPTIONS there, re-registers (keeping the address) and de-registers,
// which releases the lease.
func TestInnerIPv6Only(t *testing.T) {
	r := newRig(t, func(c *ServerConfig) { c.Pool6 = testPool6 })
	if g := r.srv.InnerAddr(); g != netip.MustParseAddr("2001:db8:64::1") || r.srv.InnerAddr6() != g {
		t.Fatalf("inner address %v", g)
	}
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(c *UEConfig) { c.Inner = InnerIPv6 })
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr("2001:db8:64::2")
	in := u.Info()
	if in.InnerAddr != want || in.PCSCFInner != r.srv.InnerAddr6() || len(in.InnerAddrs) != 1 {
		t.Fatalf("UE info %+v", in)
	}
	ri := r.reg(alice.impi)
	if ri.InnerAddr6 != want || ri.InnerAddr.IsValid() || !ri.Registered {
		t.Fatalf("registration %+v", ri)
	}
	if !r.lad.hasEvent(func(e Event) bool {
		return e.Kind == EvRegisterReceived && strings.Contains(e.Detail, "protected") && strings.Contains(e.Detail, "from [2001:db8:64::2]:")
	}) {
		t.Fatal("no protected REGISTER from the inner IPv6 address")
	}
	if !r.lad.hasEvent(func(e Event) bool { return e.Kind == EvDHCPLease && e.What == "DHCPv6 REPLY" }) {
		t.Fatal("no DHCPv6 lease event")
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS over inner IPv6: %v %v", res, err)
	}
	if _, err := u.Ping(ctx, 3); err != nil {
		t.Fatalf("ping over inner IPv6: %v", err)
	}
	if err := u.Probe(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Reregister(ctx); err != nil {
		t.Fatal(err)
	}
	if ri := r.reg(alice.impi); ri.InnerAddr6 != want {
		t.Fatalf("after re-registration: %+v", ri)
	}
	if l, ok := r.srv.dhcp6.Lookup(alice.impi); !ok || !l.Bound || l.Addr != want {
		t.Fatalf("lease %+v %v", l, ok)
	}
	if err := u.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.reg(alice.impi).IMPI == "" })
	if n := r.srv.dhcp6.Leases(); n != 0 || r.srv.Stats().Leases != 0 {
		t.Fatalf("%d IPv6 leases, %d in all after de-registration", n, r.srv.Stats().Leases)
	}
}

// TestInnerDualStack: both pools, one UE asking for both and one asking
// for IPv4 only. The dual UE holds a lease of each family, both bound to
// its IMPI (pings from either reach the P-CSCF), and signals over IPv6;
// the IPv4 UE is served as before. De-registration releases both leases.
func TestInnerDualStack(t *testing.T) {
	r := newRig(t, func(c *ServerConfig) { c.Pool, c.Pool6 = DefaultPool, testPool6 })
	if r.srv.InnerAddr() != netip.MustParseAddr("100.64.0.1") || r.srv.InnerAddr6() != netip.MustParseAddr("2001:db8:64::1") {
		t.Fatalf("inner addresses %v %v", r.srv.InnerAddr(), r.srv.InnerAddr6())
	}
	alice := newSub(t, r.store, "alice", "a.example")
	bob := newSub(t, r.store, "bob", "a.example")
	ua := r.ue(alice, func(c *UEConfig) { c.Inner = InnerDual })
	ub := r.ue(bob, nil)
	ctx := ctxT(t)
	for _, u := range []*UE{ua, ub} {
		if err := u.Register(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ia := ua.Info()
	if len(ia.InnerAddrs) != 2 || !ia.InnerAddrs[0].Is4() || !ia.InnerAddrs[1].Is6() || ia.InnerAddr != ia.InnerAddrs[1] || ia.PCSCFInner != r.srv.InnerAddr6() {
		t.Fatalf("dual UE %+v", ia)
	}
	ra := r.reg(alice.impi)
	if ra.InnerAddr != ia.InnerAddrs[0] || ra.InnerAddr6 != ia.InnerAddrs[1] {
		t.Fatalf("dual registration %+v", ra)
	}
	if ib := ub.Info(); !ib.InnerAddr.Is4() || len(ib.InnerAddrs) != 1 || r.reg(bob.impi).InnerAddr6.IsValid() {
		t.Fatalf("IPv4 UE %+v", ib)
	}
	// Both of the dual UE's addresses are its own through the tunnel.
	for i, src := range ia.InnerAddrs {
		dst := r.srv.InnerAddr()
		if src.Is6() {
			dst = r.srv.InnerAddr6()
		}
		if _, err := ua.pump.Ping(ctx, ua.peer, src, dst, 0x77, uint16(i+1)); err != nil {
			t.Fatalf("ping from %v: %v", src, err)
		}
	}
	// A source it does not hold is dropped as spoofed.
	before := r.srv.Pump().Counters().Spoofed
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := ua.pump.Ping(sctx, ua.peer, netip.MustParseAddr("2001:db8:64::99"), r.srv.InnerAddr6(), 0x77, 9); err == nil {
		t.Fatal("a ping from an address not leased was answered")
	}
	if r.srv.Pump().Counters().Spoofed <= before {
		t.Fatal("the spoofed source was not counted")
	}
	for impi := range map[string]bool{alice.impi: true, bob.impi: true} {
		if res, err := r.srv.Options(ctx, impi); err != nil || res.StatusCode != 200 {
			t.Fatalf("OPTIONS to %s: %v %v", impi, res, err)
		}
	}
	for _, u := range []*UE{ua, ub} {
		if err := u.Deregister(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return len(r.srv.Registrations()) == 0 })
	if r.srv.dhcp.Leases() != 0 || r.srv.dhcp6.Leases() != 0 {
		t.Fatalf("leases left: %d IPv4, %d IPv6", r.srv.dhcp.Leases(), r.srv.dhcp6.Leases())
	}
}

// TestInnerIPv6Call: two IPv6-only domains (outer and inner IPv6), a call
// with audio and video through both media tunnels, SDP in IP6.
func TestInnerIPv6Call(t *testing.T) {
	needIPv6(t)
	bobEnded := make(chan CallReport, 1)
	six := func(domain string, pool string) func(*ServerConfig) {
		return func(c *ServerConfig) {
			c.Domain = domain
			onLoopback6(c)
			c.Pool6 = netip.MustParsePrefix(pool)
		}
	}
	a := newRig(t, six("a.example", "2001:db8:a::/64"))
	b := newRig(t, six("b.example", "2001:db8:b::/64"))
	a.srv.SetPeer("b.example", b.srv.SIPAddr())
	b.srv.SetPeer("a.example", a.srv.SIPAddr())
	alice := a.ue(newSub(t, a.store, "alice", "a.example"), func(c *UEConfig) { c.Inner = InnerIPv6 })
	bob := b.ue(newSub(t, b.store, "bob", "b.example"), func(c *UEConfig) {
		c.Inner = InnerIPv6
		c.OnCallEnd = func(r CallReport) { bobEnded <- r }
	})
	ctx := ctxT(t)
	for _, u := range []*UE{alice, bob} {
		if err := u.Register(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var sdp []string
	alice.hookInvite = func(req *sipgosip.Request) { sdp = append(sdp, string(req.Body())) }
	rep, err := alice.Call(ctx, "sip:bob@b.example", time.Second, MediaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-bobEnded:
	case <-time.After(5 * time.Second):
		t.Fatal("bob never saw the BYE")
	}
	if len(sdp) == 0 || !strings.Contains(sdp[0], "c=IN IP6 2001:db8:a::2") {
		t.Fatalf("alice's offer does not name her inner IPv6 address:\n%v", sdp)
	}
	if len(rep.Received.Streams) != 2 {
		t.Fatalf("alice received %d streams:\n%s", len(rep.Received.Streams), rep)
	}
	for _, s := range rep.Received.Streams {
		if s.Packets < 10 || s.LossPercent > 5 {
			t.Errorf("alice's %s stream: %d packets, %.1f%% loss", s.Kind, s.Packets, s.LossPercent)
		}
	}
	if p := alice.Info().MediaSAs; len(p) != 2 || p[0].Packets+p[1].Packets < 50 {
		t.Fatalf("alice's media SAs carried too little: %+v", p)
	}
}

// TestMalformedDHCPv6ThroughTunnel: a registered UE sends the P-CSCF junk
// on UDP port 547 inside its tunnel (garbage DHCPv6, truncated messages,
// a bad checksum, a DHCPv6 request to an IPv4-only P-CSCF): every one is a
// counted drop, the P-CSCF keeps serving the UE.
func TestMalformedDHCPv6ThroughTunnel(t *testing.T) {
	for _, pool6 := range []netip.Prefix{testPool6, {}} {
		r := newRig(t, func(c *ServerConfig) { c.Pool, c.Pool6 = DefaultPool, pool6 })
		alice := newSub(t, r.store, "alice", "a.example")
		u := r.ue(alice, nil)
		ctx := ctxT(t)
		if err := u.Register(ctx); err != nil {
			t.Fatal(err)
		}
		cl, err := dhcp.NewClient6([]byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		good, _ := cl.Solicit()
		src, dst := netip.MustParseAddr("fe80::1:2"), dhcp.AllServers6
		junk := [][]byte{
			udp6(src, dst, 547, []byte{1}),
			udp6(src, dst, 547, []byte{1, 2, 3, 4, 0, 1, 0, 200, 0}),  // an option longer than the message
			udp6(src, dst, 547, []byte{3, 0, 0, 1, 0, 8, 0, 2, 0, 0}), // REQUEST without a client identifier
			udp6(src, dst, 547, good[48:48+6]),                        // cut inside the first option's header
			udp6(src, dst, 547, good[48:len(good)-1]),                 // the last option cut short
		}
		bad := append([]byte(nil), good...)
		bad[len(bad)-1] ^= 0xff // checksum no longer matches
		junk = append(junk, bad)
		if !pool6.IsValid() {
			junk = append(junk, good) // well formed, but this P-CSCF has no IPv6 pool
		}
		before := r.srv.Stats().DHCPDropped
		for _, p := range junk {
			if err := u.pump.Inject(u.peer, p); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, func() bool { return r.srv.Stats().DHCPDropped-before >= uint64(len(junk)) })
		if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
			t.Fatalf("pool6 %v: OPTIONS after the junk: %v %v", pool6, res, err)
		}
		if r.srv.Stats().Leases != 1 {
			t.Fatalf("pool6 %v: %d leases, want alice's", pool6, r.srv.Stats().Leases)
		}
	}
}

// udp6 builds an IPv6 UDP packet with a correct checksum.
func udp6(src, dst netip.Addr, dport uint16, payload []byte) []byte {
	ulen := 8 + len(payload)
	b := make([]byte, 40+ulen)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(ulen))
	b[6], b[7] = 17, 255
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	u := b[40:]
	binary.BigEndian.PutUint16(u[0:], 546)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(ulen))
	copy(u[8:], payload)
	var sum uint32
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(p[i])<<8 | uint32(p[i+1])
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	add(s[:])
	add(d[:])
	sum += 17 + uint32(ulen)
	add(u)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	c := ^uint16(sum)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return b
}
