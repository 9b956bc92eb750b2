package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	tsK  = "465b5ce8b199b49faa5f0a2ee238a6bc" // TS 35.208 test set 1
	tsOP = "cdc202d5123e20f62b6d676ac72cb318"
)

func freePort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestPCSCFAndUEOnce runs both commands in-process: provision, serve,
// register with --once (which pings through the tunnel and de-registers).
func TestPCSCFAndUEOnce(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	if code, _, errs := runCLI(t, "sub", "add", "--db", db, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP); code != 0 {
		t.Fatal(errs)
	}
	sipPort, espPort := freePort(t), freePort(t)
	sipAddr := "127.0.0.1:" + strconv.Itoa(sipPort)
	espAddr := "127.0.0.1:" + strconv.Itoa(espPort)
	keylog := filepath.Join(dir, "keys")
	ctx, cancel := context.WithCancel(context.Background())
	var srvOut, srvErr syncBuf
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"pcscf", "--domain", "a.example", "--db", db, "--sip", sipAddr, "--esp", espAddr, "--keylog", keylog}, &srvOut, &srvErr)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(srvOut.String(), "ESP-in-UDP") {
		if time.Now().After(deadline) {
			t.Fatalf("pcscf did not start: %s %s", srvOut.String(), srvErr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	code, out, errs := runCLI(t, "ue", "--pcscf", sipAddr, "--pcscf-esp", espAddr, "--impi", "alice@a.example",
		"--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP, "--once")
	cancel()
	if srvCode := <-done; srvCode != 0 {
		t.Errorf("pcscf exit %d: %s", srvCode, srvErr.String())
	}
	if code != 0 || !strings.Contains(out, "registered as sip:alice@a.example with inner address 100.64.0.") || !strings.Contains(out, "de-registered") {
		t.Fatalf("ue exit %d\nstdout:\n%s\nstderr:\n%s\nserver:\n%s", code, out, errs, srvOut.String())
	}
	for _, step := range []string{"401 Unauthorized", "DHCPACK", "RES == XRES", "de-registered"} {
		if !strings.Contains(srvOut.String(), step) {
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
	sipAddr, espAddr := "127.0.0.1:"+strconv.Itoa(freePort(t)), "127.0.0.1:"+strconv.Itoa(freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var srvOut, srvErr syncBuf
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"pcscf", "--domain", "a.example", "--db", db, "--sip", sipAddr, "--esp", espAddr}, &srvOut, &srvErr)
	}()
	defer func() { cancel(); <-done }()
	for !strings.Contains(srvOut.String(), "ESP-in-UDP") {
		time.Sleep(10 * time.Millisecond)
	}
	code, _, errs := runCLI(t, "ue", "--pcscf", sipAddr, "--pcscf-esp", espAddr, "--impi", "bob@a.example",
		"--impu", "sip:bob@a.example", "--k", strings.Repeat("11", 16), "--op", tsOP, "--once")
	if code == 0 || !strings.Contains(errs, "failed authentication") {
		t.Fatalf("code %d stderr %q", code, errs)
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
	port := func() string { return "127.0.0.1:" + strconv.Itoa(freePort(t)) }
	sipA, sipB := port(), port()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var outA, outB, outBob, errs syncBuf
	var wg sync.WaitGroup
	start := func(ctx context.Context, out *syncBuf, args ...string) chan struct{} {
		done := make(chan struct{})
		wg.Add(1)
		go func() { defer wg.Done(); defer close(done); run(ctx, args, out, &errs) }()
		return done
	}
	start(ctx, &outA, "pcscf", "--domain", "a.example", "--db", dbA, "--sip", sipA, "--esp", port(), "--media-esp", port(), "--peer", "b.example="+sipB)
	start(ctx, &outB, "pcscf", "--domain", "b.example", "--db", dbB, "--sip", sipB, "--esp", port(), "--media-esp", port(), "--peer", "a.example="+sipA)
	waitOut := func(b *syncBuf, s string) {
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(b.String(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in:\n%s\nstderr:\n%s", s, b.String(), errs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitOut(&outA, "ESP-in-UDP")
	waitOut(&outB, "ESP-in-UDP")
	espB := strings.Fields(strings.SplitN(outB.String(), "ESP-in-UDP ", 2)[1])[0]
	espA := strings.Fields(strings.SplitN(outA.String(), "ESP-in-UDP ", 2)[1])[0]
	bobCtx, stopBob := context.WithCancel(ctx)
	bobDone := start(bobCtx, &outBob, "ue", "--pcscf", sipB, "--pcscf-esp", strings.TrimSuffix(espB, ","), "--impi", "bob@b.example", "--impu", "sip:bob@b.example", "--k", tsK, "--op", tsOP)
	waitOut(&outBob, "200 OK: registered")
	code, out, stderr := runCLI(t, "ue", "call", "sip:bob@b.example", "--duration", "1s", "--pcscf", sipA, "--pcscf-esp", strings.TrimSuffix(espA, ","),
		"--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP)
	if code != 0 || !strings.Contains(out, "call with sip:bob@b.example (caller)") || !strings.Contains(out, "audio") {
		t.Fatalf("call: exit %d\n%s\n%s\nP-CSCF A:\n%s\nP-CSCF B:\n%s", code, out, stderr, outA.String(), outB.String())
	}
	waitOut(&outBob, "call with sip:alice@a.example (callee)")
	stopBob() // bob de-registers on its way out, while P-CSCF B still runs
	<-bobDone
	cancel()
	wg.Wait()
	if !strings.Contains(outBob.String(), "de-registered") {
		t.Errorf("bob did not de-register on exit:\n%s", outBob.String())
	}
}
