package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	tsK  = "465b5ce8b199b49faa5f0a2ee238a6bc" // TS 35.208 test set 1
	tsOP = "cdc202d5123e20f62b6d676ac72cb318"
)

// TestPCSCFAndUEOnce runs both commands in-process: provision, serve,
// register with --once (which pings through the tunnel and de-registers).
func TestPCSCFAndUEOnce(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	if code, _, errs := runCLI(t, "sub", "add", "--db", db, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP); code != 0 {
		t.Fatal(errs)
	}
	keylog := filepath.Join(dir, "keys")
	ctx := context.Background()
	srv := startPCSCF(t, ctx, "pcscf", "--domain", "a.example", "--db", db, "--keylog", keylog)
	ue := startCLI(t, ctx, "ue", "ue", "--pcscf", srv.sip, "--pcscf-esp", srv.esp, "--impi", "alice@a.example",
		"--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP, "--once")
	code := ue.wait(t, time.Minute)
	if srvCode := srv.stop(t); srvCode != 0 {
		t.Errorf("pcscf exit %d: %s", srvCode, srv.err.String())
	}
	out := ue.out.String()
	if code != 0 || !strings.Contains(out, "registered as sip:alice@a.example with inner address 100.64.0.") || !strings.Contains(out, "de-registered") {
		t.Fatalf("ue exit %d\nstdout:\n%s\nstderr:\n%s\nserver:\n%s", code, out, ue.err.String(), srv.out.String())
	}
	for _, step := range []string{"401 Unauthorized", "DHCPACK", "RES == XRES", "de-registered"} {
		if !strings.Contains(srv.out.String(), step) {
			t.Errorf("server ladder lacks %q", step)
		}
	}
	k, err := os.ReadFile(keylog)
	if err != nil || strings.Count(string(k), "\n") != 6 || !strings.Contains(string(k), "AES-CBC [RFC3602]") { // 4 signalling SAs + the media pair
		t.Fatalf("key log: %v %q", err, k)
	}
	if fi, _ := os.Stat(keylog); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key log mode %v", fi.Mode())
	}
}

func TestUEWrongKeyFails(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	runCLI(t, "sub", "add", "--db", db, "--impi", "bob@a.example", "--impu", "sip:bob@a.example", "--k", tsK, "--op", tsOP)
	ctx := context.Background()
	srv := startPCSCF(t, ctx, "pcscf", "--domain", "a.example", "--db", db)
	ue := startCLI(t, ctx, "ue", "ue", "--pcscf", srv.sip, "--pcscf-esp", srv.esp, "--impi", "bob@a.example",
		"--impu", "sip:bob@a.example", "--k", strings.Repeat("11", 16), "--op", tsOP, "--once")
	if code := ue.wait(t, time.Minute); code == 0 || !strings.Contains(ue.err.String(), "failed authentication") {
		t.Fatalf("code %d stderr %q", code, ue.err.String())
	}
}

func TestPCSCFAndUEFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.json")
	os.WriteFile(cfg, []byte(`{"domain": "a.example", "dbb": "x"}`), 0o600)
	bad := [][]string{
		{"pcscf"},
		{"pcscf", "--domain", "a.example"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--sip", "nowhere"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--pool", "10.0.0.0/31"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--ipsec", "maybe"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--port-s", "70000"},
		{"pcscf", "--config", cfg},
		{"pcscf", "--domain", "a.example", "--db", "x", "--prefer", "aes-gcm/null"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--prefer", "aes-cbc"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--prefer", "null/hmac-sha-1-96"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--batch-pad", "256"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--rate-limit", "maybe"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--source-rate", "0"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--tcp-per-source", "-5"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--modes", "UDP-enc-tunnel"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--modes", "trans,trans"},
		{"pcscf", "--domain", "a.example", "--db", "x", "--modes", ""},
		{"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "sip:a@b", "--k", tsK, "--op", tsOP, "--modes", "tunnel"},
		{"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "sip:a@b", "--k", tsK, "--op", tsOP, "--probe", "-1s"},
		{"ue"},
		{"ue", "--pcscf", "127.0.0.1:5060"},
		{"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "alice"},
		{"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "sip:a@b", "--k", tsK},
		{"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "sip:a@b", "--k", tsK, "--op", tsOP, "--opc", tsOP},
		{"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "sip:a@b", "--k", tsK, "--op", tsOP, "--expires", "soon"},
		{"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "sip:a@b", "--k", tsK, "--op", tsOP, "--amf", "8"},
		{"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "sip:a@b", "--k", tsK, "--op", tsOP, "--batch-pad", "-5"},
	}
	for _, args := range bad {
		code, _, errs := runCLI(t, args...)
		if code != 2 || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: code %d stderr %q", args, code, errs)
		}
		if strings.Contains(errs, tsK) {
			t.Errorf("%v: key echoed", args)
		}
	}
	// A missing database is a runtime error that says how to make one.
	code, _, errs := runCLI(t, "pcscf", "--domain", "a.example", "--db", filepath.Join(dir, "none.db"))
	if code != 1 || !strings.Contains(errs, "imsec sub add") {
		t.Errorf("missing db: %d %q", code, errs)
	}
}

// TestUECallCommand: two peered P-CSCFs, bob left running (answers), and
// 'imsec ue call' from alice: exit 0 and a media report on both sides.
func TestUECallCommand(t *testing.T) {
	dir := t.TempDir()
	dbA, dbB := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	runCLI(t, "sub", "add", "--db", dbA, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP)
	runCLI(t, "sub", "add", "--db", dbB, "--impi", "bob@b.example", "--impu", "sip:bob@b.example", "--k", tsK, "--op", tsOP)
	ctx := context.Background()
	// Each P-CSCF binds ports of its own choosing, so B, started first,
	// cannot know A's SIP port: its peer entry for a.example names A's
	// address with the discard port. That is enough here: a P-CSCF accepts
	// a peer's INVITEs by address (a peer may send from any port), and in
	// this call B sends nothing to a.example of its own: it answers A's
	// requests where they came from.
	pB := startPCSCF(t, ctx, "P-CSCF B", "--domain", "b.example", "--db", dbB, "--peer", "a.example=127.0.0.1:9")
	pA := startPCSCF(t, ctx, "P-CSCF A", "--domain", "a.example", "--db", dbA, "--peer", "b.example="+pB.sip)
	bob := startCLI(t, ctx, "bob", "ue", "--pcscf", pB.sip, "--pcscf-esp", pB.esp, "--impi", "bob@b.example", "--impu", "sip:bob@b.example", "--k", tsK, "--op", tsOP)
	bob.waitLine(t, "200 OK: registered", 30*time.Second)
	alice := startCLI(t, ctx, "alice", "ue", "call", "sip:bob@b.example", "--duration", "1s", "--pcscf", pA.sip, "--pcscf-esp", pA.esp,
		"--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP)
	code := alice.wait(t, time.Minute)
	if out := alice.out.String(); code != 0 || !strings.Contains(out, "call with sip:bob@b.example (caller)") || !strings.Contains(out, "audio") {
		t.Fatalf("call: exit %d\n%s\n%s\nP-CSCF A:\n%s\nP-CSCF B:\n%s", code, out, alice.err.String(), pA.out.String(), pB.out.String())
	}
	bob.waitLine(t, "call with sip:alice@a.example (callee)", 10*time.Second)
	bob.stop(t) // bob de-registers on its way out, while P-CSCF B still runs
	if !strings.Contains(bob.out.String(), "de-registered") {
		t.Errorf("bob did not de-register on exit:\n%s", bob.out.String())
	}
}
