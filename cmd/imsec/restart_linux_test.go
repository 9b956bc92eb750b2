package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/internal/loopback"
)

// TestUERecoversFromKilledPCSCF: a registered UE (in this process) and a
// P-CSCF (a child process). The P-CSCF is killed with SIGKILL and started
// again on the same addresses, remembering nothing; the UE's liveness probe
// notices and the UE registers again on its own, long before its
// registration (an hour) would have been refreshed. The recovery time is
// logged.
func TestUERecoversFromKilledPCSCF(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the imsec binary")
	}
	dir := t.TempDir()
	bin := buildImsec(t, dir)
	db := filepath.Join(dir, "hss.db")
	if code, _, errs := runCLI(t, "sub", "add", "--db", db, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP); code != 0 {
		t.Fatal(errs)
	}
	// The P-CSCF binds port 0 on a loopback address of its own; its second
	// life takes the same ports there, which nothing else holds.
	lo := loopback.Random().String()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	startPCSCFProcess := func(name string, args ...string) *child {
		c := startChild(t, ctx, bin, append([]string{"pcscf", "--domain", "a.example", "--db", db}, args...)...)
		c.waitLine(t, name, "ESP-in-UDP", 30*time.Second)
		return c
	}
	first := startPCSCFProcess("pcscf", "--sip", lo+":0", "--esp", lo+":0")
	m := pcscfStarted.FindStringSubmatch(strings.TrimSpace(lastLine(first.out.String(), "ESP-in-UDP")))
	if m == nil {
		t.Fatalf("start line: %q", first.out.String())
	}
	sipAddr, espAddr, mediaAddr := m[1], m[2], m[3]

	ue := startCLI(t, ctx, "ue", "ue", "--pcscf", sipAddr, "--pcscf-esp", espAddr, "--impi", "alice@a.example",
		"--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP, "--expires", "3600", "--keepalive", "1s", "--probe", "500ms")
	ue.waitLine(t, "200 OK: registered", 30*time.Second)

	if err := first.cmd.Process.Kill(); err != nil { // SIGKILL: no de-registration, no cleanup
		t.Fatal(err)
	}
	<-first.exited
	killed := time.Now()
	again := startPCSCFProcess("pcscf again", "--sip", sipAddr, "--esp", espAddr, "--media-esp", mediaAddr)
	again.waitLine(t, "pcscf again", "200 OK  [expires", 60*time.Second)
	recovered := time.Since(killed)
	t.Logf("the UE registered again %v after the P-CSCF was killed (probe every 500 ms, 5 s probe timeout)", recovered.Round(time.Millisecond))
	if !strings.Contains(ue.out.String(), "starting over") {
		t.Fatalf("the UE did not start over:\n%s", ue.out.String())
	}
	if code := ue.stop(t); code != 0 {
		t.Fatalf("ue exit %d: %s", code, ue.err.String())
	}
}

// lastLine is the last line of s holding sub.
func lastLine(s, sub string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	return ""
}
