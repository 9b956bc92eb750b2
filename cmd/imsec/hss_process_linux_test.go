package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHSSProcessRegistrationAndCall: the design's topology with the HSS on
// a node of its own: 'imsec hss' runs as a separate process, and two
// P-CSCFs (domains a and b) reach it over Diameter Cx (--hss). A UE
// registers and pings through its tunnel (--once), then alice calls bob
// across the domains with media, as the embedded-HSS tests do.
func TestHSSProcessRegistrationAndCall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the imsec binary")
	}
	dir := t.TempDir()
	bin := buildImsec(t, dir)
	db := filepath.Join(dir, "hss.db")
	for _, s := range [][]string{
		{"sub", "add", "--db", db, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP},
		{"sub", "add", "--db", db, "--impi", "bob@b.example", "--impu", "sip:bob@b.example", "--k", tsK, "--op", tsOP},
	} {
		if code, _, errs := runCLI(t, s...); code != 0 {
			t.Fatal(errs)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hss := startChild(t, ctx, bin, "hss", "--db", db, "--listen", "127.0.0.1:0", "--origin-host", "hss.example", "--origin-realm", "example")
	m := hssStarted.FindStringSubmatch(hss.waitLine(t, "imsec hss", "Diameter Cx on", 30*time.Second))
	if m == nil {
		t.Fatalf("no address in the HSS's start line:\n%s", hss.out.String())
	}
	hssAddr := m[1]

	pB := startPCSCF(t, ctx, "P-CSCF B", "--domain", "b.example", "--hss", hssAddr, "--peer", "a.example=127.0.0.1:9")
	pA := startPCSCF(t, ctx, "P-CSCF A", "--domain", "a.example", "--hss", hssAddr, "--peer", "b.example="+pB.sip)

	once := startCLI(t, ctx, "alice once", "ue", "--pcscf", pA.sip, "--pcscf-esp", pA.esp, "--impi", "alice@a.example",
		"--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP, "--once")
	if code := once.wait(t, time.Minute); code != 0 || !strings.Contains(once.out.String(), "registered as sip:alice@a.example") {
		t.Fatalf("--once: exit %d\n%s\n%s", code, once.out.String(), once.err.String())
	}

	bob := startCLI(t, ctx, "bob", "ue", "--pcscf", pB.sip, "--pcscf-esp", pB.esp, "--impi", "bob@b.example", "--impu", "sip:bob@b.example", "--k", tsK, "--op", tsOP)
	bob.waitLine(t, "200 OK: registered", 30*time.Second)
	alice := startCLI(t, ctx, "alice", "ue", "call", "sip:bob@b.example", "--duration", "1s", "--pcscf", pA.sip, "--pcscf-esp", pA.esp,
		"--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP)
	if code := alice.wait(t, time.Minute); code != 0 || !strings.Contains(alice.out.String(), "call with sip:bob@b.example (caller)") {
		t.Fatalf("call: exit %d\n%s\n%s\nP-CSCF A:\n%s", code, alice.out.String(), alice.err.String(), pA.out.String())
	}
	bob.waitLine(t, "call with sip:alice@a.example (callee)", 10*time.Second)
	bob.stop(t)
	// Every vector came over Cx from the HSS process: its counters on exit.
	hss.cmd.Process.Signal(os.Interrupt)
	select {
	case <-hss.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("imsec hss did not stop on SIGINT")
	}
	if !strings.Contains(hss.out.String(), "MAR") {
		t.Fatalf("the HSS printed no MAR counter:\n%s", hss.out.String())
	}
	t.Logf("HSS:\n%s", hss.out.String())
}
