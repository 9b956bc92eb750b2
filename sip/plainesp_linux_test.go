package sip

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/tun/ipesp"
	"github.com/imsec/imsec/tun/nat"
)

// needRaw skips a test that needs a raw socket when the process may not
// open one.
func needRaw(t *testing.T) {
	t.Helper()
	c, err := ipesp.Listen(netip.MustParseAddr("127.0.0.1"))
	if errors.Is(err, ipesp.ErrNoPrivilege) {
		t.Skipf("plain ESP needs CAP_NET_RAW (run as root): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestRegisterPlainESP registers a UE over plain ESP (IP protocol 50) in
// transport mode and in tunnel mode, each end preferring that mode: the
// P-CSCF sees no NAT, so it picks it; OPTIONS from the P-CSCF and a ping
// from the UE cross the SAs; de-registration removes them.
func TestRegisterPlainESP(t *testing.T) {
	needRaw(t)
	for _, mode := range []string{ModTrans, ModTun} {
		t.Run(mode, func(t *testing.T) {
			modes := []string{mode, ModUDPEncTun}
			r := newRig(t, func(c *ServerConfig) { c.Modes = modes })
			alice := newSub(t, r.store, "alice", "a.example")
			local := netip.MustParseAddr(uniqueLoopback())
			u := r.ue(alice, func(c *UEConfig) { c.Modes, c.Local, c.NoMedia = modes, local, true })
			ctx := ctxT(t)
			if err := u.Register(ctx); err != nil {
				t.Fatalf("%v\nP-CSCF pump %+v\nUE pump %+v", err, r.srv.Pump().Counters(), u.pump.Counters())
			}
			if !r.lad.hasEvent(func(e Event) bool {
				return e.Kind == EvChallenge && strings.Contains(e.Detail, "mod="+mode+";")
			}) {
				t.Fatalf("the 401 did not choose mod=%s", mode)
			}
			info := u.Info()
			ri := r.reg(alice.impi)
			if !ri.Registered || !ri.Protected || ri.InnerAddr != info.InnerAddr {
				t.Fatalf("server %+v, UE %+v", ri, info)
			}
			if mode == ModTrans && info.InnerAddr != local {
				t.Fatalf("transport mode: the UE's address inside the SAs is %v, want its own %v", info.InnerAddr, local)
			}
			if mode == ModTun && !r.srv.cfg.Pool.Contains(info.InnerAddr) {
				t.Fatalf("tunnel mode: inner address %v not from the pool", info.InnerAddr)
			}
			res, err := r.srv.Options(ctx, alice.impi)
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("OPTIONS: %v %v", res, err)
			}
			if _, err := u.Ping(ctx, 1); err != nil {
				t.Fatalf("ping: %v", err)
			}
			// Plain ESP: the peer's endpoint has no port, and nothing came
			// in UDP.
			var peerEP netip.AddrPort
			r.srv.mu.Lock()
			if reg := r.srv.regs[alice.impi]; reg != nil && reg.peer != nil {
				peerEP = reg.peer.Endpoint()
			}
			r.srv.mu.Unlock()
			if peerEP != netip.AddrPortFrom(local, 0) {
				t.Fatalf("P-CSCF sends ESP to %v, want %v (plain)", peerEP, netip.AddrPortFrom(local, 0))
			}
			c := r.srv.Pump().Counters()
			if c.RxPackets < 3 || len(c.Drops) != 0 || c.NotIP != 0 || c.Spoofed != 0 {
				t.Fatalf("P-CSCF pump counters %+v", c)
			}
			// Re-registration moves to a new set in the same mode.
			if err := u.Reregister(ctx); err != nil {
				t.Fatalf("re-registration: %v", err)
			}
			if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
				t.Fatalf("OPTIONS after re-registration: %v %v", res, err)
			}
			// The re-registration's 401 went to where the UE's ESP comes
			// from, not to its inner address (which came through the SAs).
			if c := r.srv.Pump().Counters(); c.SendErrors != 0 {
				t.Fatalf("P-CSCF pump: %d send errors", c.SendErrors)
			}
			if err := u.Deregister(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, func() bool { return r.reg(alice.impi).IMPI == "" })
			if n := len(r.srv.Pump().SACounters(nil)); n != 0 {
				t.Fatalf("%d SAs left on the server after de-registration", n)
			}
		})
	}
}

// TestPlainESPNotBehindNAT: both ends prefer transport mode, but the UE
// sits behind a NAT: the P-CSCF sees Via differ from the source and picks
// UDP-enc-tun (TS 24.229 Annex F.2.2), and the registration works.
func TestPlainESPNotBehindNAT(t *testing.T) {
	needRaw(t)
	modes := []string{ModTrans, ModUDPEncTun}
	r := newRig(t, func(c *ServerConfig) { c.Modes = modes })
	alice := newSub(t, r.store, "alice", "a.example")
	// The NAT's inside is not the UE's own address: a UE whose address is
	// the one it sends ESP to does not offer transport mode.
	lo, inside := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr(uniqueLoopback())
	ins := natInFront(t, r, lo, inside)
	u := r.ue(alice, func(c *UEConfig) { c.PCSCF, c.PCSCFESP, c.Modes, c.NoMedia = ins[0], ins[1], modes, true })
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if !r.lad.hasEvent(func(e Event) bool {
		return e.Kind == EvRegisterSent && strings.Contains(e.Detail, "mod trans/UDP-enc-tun")
	}) {
		t.Fatal("the UE did not offer trans and UDP-enc-tun")
	}
	if !r.lad.hasEvent(func(e Event) bool { return e.Kind == EvChallenge && strings.Contains(e.Detail, "mod=UDP-enc-tun") }) ||
		r.lad.hasEvent(func(e Event) bool { return e.Kind == EvChallenge && strings.Contains(e.Detail, "mod=trans") }) {
		t.Fatal("behind a NAT the P-CSCF must pick UDP-enc-tun")
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS through NAT: %v %v", res, err)
	}
}

// TestPlainESPFallbackWithoutCapNetRaw runs TestPlainESPFallbackChild in
// a child process without CAP_NET_RAW (setpriv drops it from every set):
// both ends want transport mode first, cannot open the raw socket, say so,
// and register with UDP-enc-tun.
func TestPlainESPFallbackWithoutCapNetRaw(t *testing.T) {
	if os.Getenv("IMSEC_FALLBACK_CHILD") != "" {
		t.Skip("child")
	}
	needRaw(t) // we must have it to be able to drop it
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to drop CAP_NET_RAW")
	}
	ctx := ctxT(t)
	cmd := exec.CommandContext(ctx, setpriv, "--inh-caps=-net_raw", "--ambient-caps=-net_raw", "--bounding-set=-net_raw", "--",
		os.Args[0], "-test.run=^TestPlainESPFallbackChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "IMSEC_FALLBACK_CHILD=1")
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestPlainESPFallbackChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestPlainESPFallbackChild(t *testing.T) {
	if os.Getenv("IMSEC_FALLBACK_CHILD") == "" {
		t.Skip("runs as TestPlainESPFallbackWithoutCapNetRaw's child")
	}
	if _, err := ipesp.Listen(netip.MustParseAddr("127.0.0.1")); !errors.Is(err, ipesp.ErrNoPrivilege) {
		t.Fatalf("the child may still open a raw socket: %v", err)
	}
	modes := []string{ModTrans, ModTun, ModUDPEncTun}
	r := newRig(t, func(c *ServerConfig) { c.Modes = modes })
	if got := r.srv.Modes(); !slices.Equal(got, []string{ModUDPEncTun}) {
		t.Fatalf("P-CSCF modes without the privilege: %v", got)
	}
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(c *UEConfig) { c.Modes = modes })
	if err := u.Register(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(u.modes, []string{ModUDPEncTun}) {
		t.Fatalf("UE offers %v without the privilege", u.modes)
	}
	if !r.lad.hasEvent(func(e Event) bool {
		return e.Kind == EvChallenge && strings.Contains(e.Detail, "mod=UDP-enc-tun")
	}) {
		t.Fatal("not UDP-enc-tun")
	}
}

// TestUDPEncTransBehindNAT: imsec's extension, transport mode in UDP
// (RFC 3948 transport mode), through a userspace NAT: both ends prefer
// it, the P-CSCF sees the NAT and may still pick it (it is UDP), the UE is
// known inside the SAs by the address the P-CSCF sees, and OPTIONS and a
// re-registration cross. No privilege needed.
func TestUDPEncTransBehindNAT(t *testing.T) {
	modes := []string{ModUDPEncTrans, ModUDPEncTun}
	r := newRig(t, func(c *ServerConfig) { c.Modes = modes })
	alice := newSub(t, r.store, "alice", "a.example")
	// The NAT's inside is another loopback address than the UE's own
	// (127.0.0.1): in transport mode the UE's netstack holds its own
	// address and reaches the P-CSCF at the address it sends ESP to.
	lo, inside := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr(uniqueLoopback())
	ins := natInFront(t, r, lo, inside)
	u := r.ue(alice, func(c *UEConfig) { c.PCSCF, c.PCSCFESP, c.Modes, c.NoMedia = ins[0], ins[1], modes, true })
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatalf("%v\nP-CSCF pump %+v\nUE pump %+v", err, r.srv.Pump().Counters(), u.pump.Counters())
	}
	if !r.lad.hasEvent(func(e Event) bool { return e.Kind == EvChallenge && strings.Contains(e.Detail, "mod=UDP-enc-trans;") }) {
		t.Fatal("the P-CSCF did not pick UDP-enc-trans")
	}
	ri := r.reg(alice.impi)
	if !ri.NAT || !ri.Registered || ri.InnerAddr != lo {
		t.Fatalf("server view %+v", ri)
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}
	if err := u.Reregister(ctx); err != nil {
		t.Fatalf("re-registration: %v", err)
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS after re-registration: %v %v", res, err)
	}
	// A second UE behind the same NAT address may not take transport
	// mode: the P-CSCF knows transport mode UEs by their address.
	bob := newSub(t, r.store, "bob", "a.example")
	u2 := r.ue(bob, func(c *UEConfig) { c.PCSCF, c.PCSCFESP, c.Modes, c.NoMedia = ins[0], ins[1], modes, true })
	if err := u2.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if ri := r.reg(bob.impi); !ri.Registered || ri.InnerAddr == lo || !r.srv.cfg.Pool.Contains(ri.InnerAddr) {
		t.Fatalf("second UE behind the NAT: %+v", ri)
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS to the first UE after the second registered: %v %v", res, err)
	}
}

// TestTransportModeNeedsOwnAddress: a UE whose address is the P-CSCF's
// (both on 127.0.0.1) leaves the transport modes out of its offer and
// registers in the next mode.
func TestTransportModeNeedsOwnAddress(t *testing.T) {
	modes := []string{ModUDPEncTrans, ModUDPEncTun}
	r := newRig(t, func(c *ServerConfig) { c.Modes = modes })
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(c *UEConfig) { c.Modes, c.Local = modes, netip.MustParseAddr("127.0.0.1") })
	if err := u.Register(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(u.modes, []string{ModUDPEncTun}) {
		t.Fatalf("the UE offers %v", u.modes)
	}
}

// TestCallInTransportMode: two UEs registered over plain ESP in transport
// mode call each other with media, which crosses the media tunnels (ESP in
// UDP to the P-CSCF's relay). Their address inside is their own, a
// loopback one here: before, the media netstacks dropped it as martian and
// no packet reached the relay. (The media tunnel's pinhole ping still goes
// unanswered with loopback addresses; the media flow regardless.)
func TestCallInTransportMode(t *testing.T) {
	needRaw(t)
	modes := []string{ModTrans}
	r := newRig(t, func(c *ServerConfig) { c.Modes = modes })
	ended := make(chan CallReport, 2)
	var ues []*UE
	for _, name := range []string{"alice", "bob"} {
		s := newSub(t, r.store, name, "a.example")
		u := r.ue(s, func(c *UEConfig) {
			c.Modes, c.Local = modes, netip.MustParseAddr(uniqueLoopback())
			c.OnCallEnd = func(rep CallReport) { ended <- rep }
		})
		if err := u.Register(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		ues = append(ues, u)
	}
	rep, err := ues[0].Call(ctxT(t), "sip:bob@a.example", time.Second, MediaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alice:\n%s", rep)
	t.Logf("P-CSCF media pump %+v", r.srv.mediaPump.Counters())
	t.Logf("alice media pump %+v", ues[0].MediaPump().Counters())
	for _, s := range rep.Received.Streams {
		if s.Packets < 20 {
			t.Errorf("alice's %s stream: %d packets", s.Kind, s.Packets)
		}
	}
	if len(rep.Received.Streams) != 2 {
		t.Fatalf("alice received %d streams, want 2", len(rep.Received.Streams))
	}
}

// natInFront puts a NAT (outside lo, port-restricted) between a UE at
// inside and r's P-CSCF, and returns where the UE reaches its SIP and its
// ESP. The NAT closes with the test.
func natInFront(t *testing.T, r *rig, lo, inside netip.Addr) []netip.AddrPort {
	t.Helper()
	n, err := nat.New(nat.Config{Outside: lo, Filtering: nat.AddressPortDependent, Forwards: []nat.Forward{
		{Inside: netip.AddrPortFrom(inside, 0), Destination: r.srv.SIPAddr()},
		{Inside: netip.AddrPortFrom(inside, 0), Destination: r.srv.ESPAddr()},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n.InsideAddrs()
}
