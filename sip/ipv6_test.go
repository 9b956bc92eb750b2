package sip

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/tun/nat"
)

// The IPv6 outer path: the P-CSCF, the UE, the ESP-in-UDP tunnel, the NAT
// and keepalives on IPv6 loopback. The inner side stays as configured
// (the IPv4 pool by default); ipv6_inner_test.go covers inner IPv6.

var lo6 = netip.IPv6Loopback()

// needIPv6 skips on a host without IPv6 loopback (a container started with
// IPv6 disabled), which is not a missing feature of imsec.
func needIPv6(t *testing.T) {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback on this host: %v", err)
	}
	c.Close()
}

// onLoopback6 puts a rig's P-CSCF on [::1].
func onLoopback6(c *ServerConfig) {
	c.SIP = netip.AddrPortFrom(lo6, 0)
	c.ESP = netip.AddrPortFrom(lo6, 0)
}

// TestIPv6OuterRegistration: a UE registers with a P-CSCF over IPv6, the
// SAs carry SIP both ways (the protected REGISTER, an OPTIONS from the
// P-CSCF), NAT keepalives arrive over IPv6, re-registration moves to a new
// set and de-registration leaves nothing; the key log names IPv6, so
// Wireshark applies it to these packets.
func TestIPv6OuterRegistration(t *testing.T) {
	needIPv6(t)
	r := newRig(t, onLoopback6)
	if a := r.srv.SIPAddr().Addr(); a != lo6 {
		t.Fatalf("SIP on %v", a)
	}
	if a := r.srv.MediaESPAddr().Addr(); a != lo6 {
		t.Fatalf("media ESP on %v, want the ESP socket's address", a)
	}
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(c *UEConfig) { c.Keepalive = 50 * time.Millisecond })
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	ri := r.reg(alice.impi)
	if !ri.Registered || ri.NAT || !ri.InnerAddr.Is4() || ri.Endpoint.Addr() != lo6 {
		t.Fatalf("registration %+v", ri)
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS over IPv6: %v %v", res, err)
	}
	if _, err := u.Ping(ctx, 7); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.srv.Pump().Counters().KeepalivesReceived >= 2 })
	if err := u.Reregister(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.reg(alice.impi).IMPI == "" })
	lines := strings.Split(strings.TrimSpace(r.kl.String()), "\n")
	if len(lines) != 12 { // two sets of four, two media pairs (the UE's lines)
		t.Fatalf("key log has %d lines:\n%s", len(lines), r.kl.String())
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, `"IPv6","*","*",`) {
			t.Fatalf("key log line %q: want IPv6 with wildcard addresses", l)
		}
	}
	if c := r.srv.Pump().Counters(); len(c.Drops) != 0 {
		t.Fatalf("P-CSCF pump drops %v", c.Drops)
	}
}

// TestIPv6OuterThroughNAT: the UE reaches the P-CSCF only through the
// userspace NAT, every leg IPv6 (SIP, signalling ESP, media ESP); the
// P-CSCF detects the NAT (Via differs from the source) and a call's media
// crosses it too.
func TestIPv6OuterThroughNAT(t *testing.T) {
	needIPv6(t)
	r := newRig(t, onLoopback6)
	alice := newSub(t, r.store, "alice", "a.example")
	n, err := nat.New(nat.Config{Outside: lo6, Filtering: nat.AddressPortDependent, Forwards: []nat.Forward{
		{Inside: netip.AddrPortFrom(lo6, 0), Destination: r.srv.SIPAddr()},
		{Inside: netip.AddrPortFrom(lo6, 0), Destination: r.srv.ESPAddr()},
		{Inside: netip.AddrPortFrom(lo6, 0), Destination: r.srv.MediaESPAddr()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ins := n.InsideAddrs()
	for _, a := range ins {
		if a.Addr() != lo6 {
			t.Fatalf("NAT inside address %v", a)
		}
	}
	u := r.ue(alice, func(c *UEConfig) { c.PCSCF, c.PCSCFESP, c.PCSCFMediaESP = ins[0], ins[1], ins[2] })
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
		t.Fatalf("OPTIONS through the IPv6 NAT: %v %v", res, err)
	}
	c := n.Counters()
	if c.MappingsCreated < 3 || c.In == 0 {
		t.Fatalf("NAT counters %+v: want a mapping per leg and inbound traffic", c)
	}
	if err := u.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestIPv6OuterCall: two P-CSCFs peered over IPv6, alice behind an IPv6
// NAT, bob direct; a call with media through both media tunnels.
func TestIPv6OuterCall(t *testing.T) {
	needIPv6(t)
	bobEnded := make(chan CallReport, 1)
	a := newRig(t, func(c *ServerConfig) { c.Domain = "a.example"; onLoopback6(c) })
	b := newRig(t, func(c *ServerConfig) { c.Domain = "b.example"; onLoopback6(c) })
	a.srv.SetPeer("b.example", b.srv.SIPAddr())
	b.srv.SetPeer("a.example", a.srv.SIPAddr())
	sa := newSub(t, a.store, "alice", "a.example")
	sb := newSub(t, b.store, "bob", "b.example")
	n, err := nat.New(nat.Config{Outside: lo6, Filtering: nat.AddressPortDependent, Forwards: []nat.Forward{
		{Inside: netip.AddrPortFrom(lo6, 0), Destination: a.srv.SIPAddr()},
		{Inside: netip.AddrPortFrom(lo6, 0), Destination: a.srv.ESPAddr()},
		{Inside: netip.AddrPortFrom(lo6, 0), Destination: a.srv.MediaESPAddr()}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	in := n.InsideAddrs()
	alice := a.ue(sa, func(c *UEConfig) { c.PCSCF, c.PCSCFESP, c.PCSCFMediaESP = in[0], in[1], in[2] })
	bob := b.ue(sb, func(c *UEConfig) { c.OnCallEnd = func(r CallReport) { bobEnded <- r } })
	ctx := ctxT(t)
	for _, u := range []*UE{alice, bob} {
		if err := u.Register(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := alice.Call(ctx, "sip:bob@b.example", time.Second, MediaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-bobEnded:
	case <-time.After(5 * time.Second):
		t.Fatal("bob never saw the BYE")
	}
	if len(rep.Received.Streams) != 2 {
		t.Fatalf("alice received %d streams, want audio and video:\n%s", len(rep.Received.Streams), rep)
	}
	for _, s := range rep.Received.Streams {
		if s.Packets < 10 || s.LossPercent > 5 {
			t.Errorf("alice's %s stream: %d packets, %.1f%% loss", s.Kind, s.Packets, s.LossPercent)
		}
	}
}
