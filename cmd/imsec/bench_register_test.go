package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/bench"
)

// TestBenchRegisterCommand: imsec bench register with worker processes
// (this test binary started again as imsec) against the in-process P-CSCF:
// every UE registers, and the JSON has the fields the issue names.
func TestBenchRegisterCommand(t *testing.T) {
	t.Setenv(asCLI, "1")
	code, out, errs := runCLI(t, "bench", "register", "--ues", "40", "--rate", "400", "--per-worker", "20", "--hold", "300ms",
		"--keepalive", "50ms", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var res bench.RegisterResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if res.Registered != 40 || res.Workers != 2 || res.Shared || res.PCSCFCPUMsPerReg == nil || res.PCSCFAllocKiBPerReg == nil || *res.PCSCFAllocKiBPerReg <= 0 || res.PCSCFGCCPUPct == nil || res.P99ms <= 0 || res.KeepalivesRx == 0 {
		t.Fatalf("result %+v", res)
	}
	for _, k := range []string{`"ues"`, `"registered"`, `"failed"`, `"reg_per_s"`, `"p50_ms"`, `"p95_ms"`, `"p99_ms"`, `"pcscf_cpu_ms_per_reg"`, `"pcscf_rss_kib_per_ue"`} {
		if !strings.Contains(out, k) {
			t.Errorf("JSON lacks %s: %s", k, out)
		}
	}
}

// TestBenchRegisterNoKeepalives: --keepalive 0 holds the UEs without
// keepalives (it used to mean the 20 s default, which over a 1.5 s hold
// of 60 UEs sends about 4).
func TestBenchRegisterNoKeepalives(t *testing.T) {
	t.Setenv(asCLI, "1")
	code, out, errs := runCLI(t, "bench", "register", "--ues", "60", "--rate", "600", "--hold", "1500ms", "--keepalive", "0", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var res bench.RegisterResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if res.Registered != 60 || res.KeepalivesRx != 0 {
		t.Fatalf("registered %d, %d keepalives received; want 60 and none", res.Registered, res.KeepalivesRx)
	}
}

func TestBenchRegisterUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "register"},
		{"bench", "register", "--ues", "5", "--rate", "0"},
		{"bench", "register", "--ues", "5", "--pcscf", "127.0.0.1:5060"},
		{"bench", "register", "--ues", "5", "--pcscf-pid", "1"},
	} {
		if code, _, errs := runCLI(t, args...); code != 2 {
			t.Errorf("%v: exit %d, %s", args, code, errs)
		}
	}
}

// TestBenchRegisterFromGeneratedRange: a range written by 'imsec sub gen'
// and imported into an SQLite HSS is the range the load generator
// computes: every UE registers against an HSS that only has the file.
func TestBenchRegisterFromGeneratedRange(t *testing.T) {
	t.Setenv(asCLI, "1")
	dir := t.TempDir()
	csv, db := filepath.Join(dir, "ues.csv"), filepath.Join(dir, "hss.db")
	for _, args := range [][]string{
		{"sub", "gen", "--count", "30", "--domain", "bench.example", "--prefix", "ue", "--seed", "s1", "--out", csv},
		{"sub", "import", "--db", db, csv},
	} {
		if code, _, errs := runCLI(t, args...); code != 0 {
			t.Fatalf("%v: %s", args, errs)
		}
	}
	code, out, errs := runCLI(t, "bench", "register", "--ues", "30", "--rate", "300", "--seed", "s1", "--db", db, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var res bench.RegisterResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Registered != 30 {
		t.Fatalf("%+v %v: %s", res, err, out)
	}
	// Another seed: every USIM refuses the network.
	code, out, _ = runCLI(t, "bench", "register", "--ues", "5", "--rate", "100", "--seed", "s2", "--db", db, "--json")
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.Registered != 0 || res.Failed["usim"] != 5 {
		t.Fatalf("wrong seed: exit %d %+v", code, res)
	}
}

// TestBenchRegisterWorkerStopsWhenOrphaned: a worker whose runner is gone
// (its end of the worker's stdin closed, as when the runner is killed)
// stops instead of holding its UEs on alone. Before, a killed runner left
// its workers sending keepalives until someone found them.
func TestBenchRegisterWorkerStopsWhenOrphaned(t *testing.T) {
	// A P-CSCF that never answers: the UEs wait on their timers.
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	spec, err := json.Marshal(bench.WorkerSpec{First: 1, Count: 2, Rate: 100, Bind: "127.0.0.1", SIP: sink.LocalAddr().String(),
		ESP: sink.LocalAddr().String(), Domain: "bench.example", Prefix: "ue", Expires: 600, Keepalive: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "bench", "register", "--worker", string(spec))
	cmd.Env = append(os.Environ(), asCLI+"=1")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	in.Close() // the runner is gone
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("orphaned worker: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("the worker ran on for 10 s after its runner was gone")
	}
}
