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
