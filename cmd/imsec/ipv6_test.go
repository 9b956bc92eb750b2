package main

import (
	"context"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// natLine is `imsec nat`'s line per forward: "nat: INSIDE -> DEST (...".
var natLine = regexp.MustCompile(`(?m)^nat: (\S+) -> (\S+) \(`)

// TestPCSCFAndUEOverIPv6NAT runs the commands on IPv6 loopback: a P-CSCF
// on [::1], `imsec nat` with an IPv6 outside address and three IPv6
// forwards (SIP, signalling ESP, media ESP), and `imsec ue --once` behind
// it. The P-CSCF must see the NAT and the UE register, ping through the
// tunnel and de-register.
func TestPCSCFAndUEOverIPv6NAT(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback on this host: %v", err)
	} else {
		c.Close()
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	if code, _, errs := runCLI(t, "sub", "add", "--db", db, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP); code != 0 {
		t.Fatal(errs)
	}
	ctx := context.Background()
	srv := startPCSCF(t, ctx, "pcscf", "--domain", "a.example", "--db", db, "--sip", "[::1]:0", "--esp", "[::1]:0")
	for _, a := range []string{srv.sip, srv.esp, srv.media} {
		if !strings.HasPrefix(a, "[::1]:") {
			t.Fatalf("P-CSCF bound %s, want [::1]", a)
		}
	}
	n := startCLI(t, ctx, "nat", "nat", "--outside", "::1", "--forward", "[::1]:0="+srv.sip,
		"--forward", "[::1]:0="+srv.esp, "--forward", "[::1]:0="+srv.media)
	n.waitLine(t, "-> "+srv.media, 10*time.Second)
	inside := map[string]string{}
	for _, m := range natLine.FindAllStringSubmatch(n.out.String(), -1) {
		inside[m[2]] = m[1]
	}
	if len(inside) != 3 {
		t.Fatalf("nat forwards: %q", n.out.String())
	}
	ue := startCLI(t, ctx, "ue", "ue", "--pcscf", inside[srv.sip], "--pcscf-esp", inside[srv.esp], "--pcscf-media", inside[srv.media],
		"--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP, "--once")
	code := ue.wait(t, time.Minute)
	if out := ue.out.String(); code != 0 || !strings.Contains(out, "registered as sip:alice@a.example") || !strings.Contains(out, "de-registered") {
		t.Fatalf("ue exit %d\nstdout:\n%s\nstderr:\n%s\nserver:\n%s", code, out, ue.err.String(), srv.out.String())
	}
	if !strings.Contains(srv.out.String(), "NAT detected: Via [::1]:") {
		t.Errorf("P-CSCF did not detect the NAT:\n%s", srv.out.String())
	}
	if code := n.stop(t); code != 0 || !strings.Contains(n.out.String(), "mappings active 3") {
		t.Errorf("nat exit %d:\n%s", code, n.out.String())
	}
}

// TestPCSCFAndUEInnerPools: the inner pools from the command line. An
// IPv6-only P-CSCF (--pool none --pool6) serves a UE with --inner ipv6; a
// dual-stack one serves --inner dual (an address of each family, SIP over
// IPv6) and a plain IPv4 UE.
func TestPCSCFAndUEInnerPools(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	for _, u := range []string{"alice", "bob"} {
		if code, _, errs := runCLI(t, "sub", "add", "--db", db, "--impi", u+"@a.example", "--impu", "sip:"+u+"@a.example", "--k", tsK, "--op", tsOP); code != 0 {
			t.Fatal(errs)
		}
	}
	ctx := context.Background()
	once := func(srv *pcscf, user, inner, want string) {
		t.Helper()
		ue := startCLI(t, ctx, user, "ue", "--pcscf", srv.sip, "--pcscf-esp", srv.esp, "--impi", user+"@a.example",
			"--impu", "sip:"+user+"@a.example", "--k", tsK, "--op", tsOP, "--inner", inner, "--once")
		if code := ue.wait(t, time.Minute); code != 0 || !strings.Contains(ue.out.String(), "with inner address "+want+" (") {
			t.Fatalf("ue --inner %s: exit %d, want inner address %s\nstdout:\n%s\nstderr:\n%s\nserver:\n%s", inner, code, want, ue.out.String(), ue.err.String(), srv.out.String())
		}
	}
	v6 := startPCSCF(t, ctx, "pcscf (IPv6 pool)", "--domain", "a.example", "--db", db, "--pool", "none", "--pool6", "2001:db8:64::/64")
	if l := v6.waitLine(t, "ESP-in-UDP", time.Second); !strings.Contains(l, "inner 2001:db8:64::1 (pool6 2001:db8:64::/64)") {
		t.Fatalf("start line %q", l)
	}
	once(v6, "alice", "ipv6", "2001:db8:64::2")
	if !strings.Contains(v6.out.String(), "DHCPv6 REPLY") {
		t.Errorf("no DHCPv6 in the ladder:\n%s", v6.out.String())
	}
	v6.stop(t)
	dual := startPCSCF(t, ctx, "pcscf (dual)", "--domain", "a.example", "--db", db, "--pool6", "2001:db8:64::/64")
	if l := dual.waitLine(t, "ESP-in-UDP", time.Second); !strings.Contains(l, "inner 100.64.0.1 (pool 100.64.0.0/16) and 2001:db8:64::1 (pool6 2001:db8:64::/64)") {
		t.Fatalf("start line %q", l)
	}
	once(dual, "alice", "dual", "100.64.0.2, 2001:db8:64::2")
	once(dual, "bob", "ipv4", "100.64.0.3")
	if code := dual.stop(t); code != 0 {
		t.Fatalf("pcscf exit %d", code)
	}
}

func TestInnerPoolFlags(t *testing.T) {
	for _, args := range [][]string{
		{"pcscf", "--domain", "a.example", "--db", "x", "--pool", "none"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--pool6", "100.64.0.0/16"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--pool6", "2001:db8::/124"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--pool6", "nowhere"},
		{"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "sip:a@b", "--k", tsK, "--op", tsOP, "--inner", "ipv5"},
	} {
		code, _, errs := runCLI(t, args...)
		if code != 2 || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: code %d stderr %q", args, code, errs)
		}
	}
}
