package main

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var hssStarted = regexp.MustCompile(`Diameter Cx on (\S+) \(TCP\)`)

// TestHSSPCSCFUEOnce runs 'imsec hss', 'imsec pcscf --hss' and
// 'imsec ue --once' in-process: the registrar gets its vector over Cx.
func TestHSSPCSCFUEOnce(t *testing.T) {
	db := filepath.Join(t.TempDir(), "hss.db")
	if code, _, errs := runCLI(t, "sub", "add", "--db", db, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP); code != 0 {
		t.Fatal(errs)
	}
	ctx := context.Background()
	h := startCLI(t, ctx, "hss", "hss", "--db", db, "--listen", "127.0.0.1:0", "--origin-host", "hss.a.example", "--origin-realm", "a.example")
	m := hssStarted.FindStringSubmatch(h.waitLine(t, "Diameter Cx on", 10*time.Second))
	if m == nil {
		t.Fatal("no address in the start line")
	}
	srv := startPCSCF(t, ctx, "pcscf", "--domain", "a.example", "--hss", m[1])
	ue := startCLI(t, ctx, "ue", "ue", "--pcscf", srv.sip, "--pcscf-esp", srv.esp, "--impi", "alice@a.example",
		"--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP, "--once")
	code := ue.wait(t, time.Minute)
	if srvCode := srv.stop(t); srvCode != 0 {
		t.Errorf("pcscf exit %d: %s", srvCode, srv.err.String())
	}
	if code != 0 || !strings.Contains(ue.out.String(), "registered as sip:alice@a.example") {
		t.Fatalf("ue exit %d\nstdout:\n%s\nstderr:\n%s\nserver:\n%s", code, ue.out.String(), ue.err.String(), srv.out.String())
	}
	if hc := h.stop(t); hc != 0 {
		t.Fatalf("hss exit %d: %s", hc, h.err.String())
	}
	if out := h.out.String(); !strings.Contains(out, "MAR 1") {
		t.Fatalf("hss counters: %s", out)
	}
}

func TestHSSUsage(t *testing.T) {
	if code, _, _ := runCLI(t, "hss", "--listen", "127.0.0.1:0"); code != 2 {
		t.Fatalf("no --db: exit %d", code)
	}
	for _, n := range []string{"0", "65537"} {
		code, _, errs := runCLI(t, "hss", "--db", "x.db", "--sqn-reserve", n)
		if code != 2 || !strings.Contains(errs, "--sqn-reserve: want 1 to 65536") {
			t.Fatalf("--sqn-reserve %s: exit %d, %q", n, code, errs)
		}
	}
	if code, _, _ := runCLI(t, "pcscf", "--domain", "a.example"); code != 2 {
		t.Fatalf("pcscf without --db or --hss: exit %d", code)
	}
}
