package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/imsec/imsec/bench"
)

func TestBenchCodecJSON(t *testing.T) {
	code, out, errs := runCLI(t, "bench", "codec", "--json", "--time", "5ms", "--sizes", "64")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("stdout is not a JSON array of objects: %v\n%s", err, out)
	}
	suites := bench.CodecSuites()
	if len(rows) != 2*len(suites) {
		t.Fatalf("%d rows, want %d", len(rows), 2*len(suites))
	}
	wantKeys := []string{"alg", "allocs", "baseline_mbps", "batch", "ealg", "mbps", "op", "pps", "ratio", "size"}
	seen := map[string]bool{}
	for i, r := range rows {
		keys := make([]string, 0, len(r))
		for k := range r {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, wantKeys) {
			t.Fatalf("row %d keys %v, want exactly %v", i, keys, wantKeys)
		}
		ealg, _ := r["ealg"].(string)
		alg, _ := r["alg"].(string)
		op, _ := r["op"].(string)
		num := func(k string) float64 {
			v, ok := r[k].(float64)
			if !ok {
				t.Fatalf("row %d: %s = %v is not a number", i, k, r[k])
			}
			return v
		}
		size, mbps, pps, allocs, base, ratio := num("size"), num("mbps"), num("pps"), num("allocs"), num("baseline_mbps"), num("ratio")
		s := suites[i/2]
		if ealg != s.EAlg || alg != string(s.Auth) || op != []string{"seal", "open"}[i%2] || size != 64 {
			t.Errorf("row %d = %v, want %s/%s 64 %s", i, r, s.EAlg, s.Auth, op)
		}
		seen[ealg+"/"+alg+"/"+op] = true
		if allocs != 0 && !raceEnabled {
			t.Errorf("row %d (%s/%s %s): %v allocations per packet, want 0", i, ealg, alg, op, allocs)
		}
		// Sane: positive, below 100 GB/s, and consistent with each other.
		if !(mbps > 0 && mbps < 1e5 && base > 0 && base < 1e5 && pps > 0) {
			t.Errorf("row %d: implausible mbps %v, baseline %v, pps %v", i, mbps, base, pps)
		}
		if d := math.Abs(mbps - pps*size/1e6); d > 0.01+1e-3*mbps {
			t.Errorf("row %d: mbps %v but pps %v x %v bytes", i, mbps, pps, size)
		}
		// mbps and baseline are printed rounded to 0.1: allow for that.
		if d := math.Abs(ratio - mbps/base); d > 0.0006+ratio*(0.05/mbps+0.05/base) {
			t.Errorf("row %d: ratio %v but mbps/baseline %v", i, ratio, mbps/base)
		}
	}
	if len(seen) != len(rows) {
		t.Errorf("duplicate rows: %d distinct of %d", len(seen), len(rows))
	}
	// Progress goes to stderr, one line per cell when it is not a terminal.
	if lines := strings.Count(errs, "\n"); lines != len(rows) || !strings.Contains(errs, "[1/14] aes-cbc/hmac-sha-1-96 64B seal") {
		t.Errorf("stderr progress: %d lines: %q", lines, errs)
	}
}

func TestBenchCodecTableAndFilters(t *testing.T) {
	code, out, errs := runCLI(t, "bench", "codec", "--time", "1ms", "--sizes", "64,100", "--ealg", "aes-gcm", "--alg", "null")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	lines := strings.Split(out, "\n")
	for _, col := range []string{"ealg", "alg", "size", "op", "MB/s", "pkt/s", "allocs", "baseline MB/s", "ratio"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header %q lacks column %q", lines[0], col)
		}
	}
	rows := 0
	for _, l := range lines[1:] {
		switch f := strings.Fields(l); {
		case len(f) == 9 && (f[0] == "aes-gcm(128)" || f[0] == "aes-gcm(256)") && f[1] == "null":
			rows++
		case len(f) == 9:
			t.Errorf("row outside the filters: %q", l)
		}
	}
	if rows != 2*2*2 { // two GCM key sizes x two sizes x seal/open
		t.Errorf("%d table rows, want 8:\n%s", rows, out)
	}
}

func TestBenchBadFlags(t *testing.T) {
	cases := [][]string{
		{"bench"},
		{"bench", "frobnicate"},
		{"bench", "codec", "--time", "0"},
		{"bench", "codec", "--time", "-1s"},
		{"bench", "codec", "--time", "fast"},
		{"bench", "codec", "--sizes", "0"},
		{"bench", "codec", "--sizes", "64,x"},
		{"bench", "codec", "--sizes", ""},
		{"bench", "codec", "--sizes", "70000"},
		{"bench", "codec", "--alg", "crc32"},
		{"bench", "codec", "--ealg", "rot13"},
		{"bench", "codec", "--ealg", "aes-gcm", "--alg", "hmac-md5-96"},
		{"bench", "codec", "--bogus"},
		{"bench", "codec", "extra"},
		{"bench", "tunnel", "--mode", "kernel"},
		{"bench", "tunnel", "--mode", ""},
		{"bench", "tunnel", "--duration", "0"},
		{"bench", "tunnel", "--duration", "-1s"},
		{"bench", "tunnel", "--duration", "long"},
		{"bench", "tunnel", "--ealg", "rot13"},
		{"bench", "tunnel", "--alg", "crc32"},
		{"bench", "tunnel", "--ealg", "aes-gcm", "--alg", "hmac-md5-96"},
		{"bench", "tunnel", "--ealg", "null", "--alg", "null"},
		{"bench", "tunnel", "--batch-pad", "256"},
		{"bench", "tunnel", "--batch-pad", "-2"},
		{"bench", "tunnel", "--bogus"},
		{"bench", "tunnel", "extra"},
	}
	for _, args := range cases {
		code, out, errs := runCLI(t, args...)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, errs)
		}
		if strings.Count(errs, "\n") != 1 || out != "" {
			t.Errorf("%q: want one line on stderr and nothing on stdout, got stderr %q stdout %q", args, errs, out)
		}
	}
}

func TestBenchHelp(t *testing.T) {
	code, out, _ := runCLI(t, "bench", "--help")
	if code != 0 || !strings.Contains(out, "codec") {
		t.Errorf("bench --help: exit %d, %q", code, out)
	}
	code, out, _ = runCLI(t, "help", "bench")
	if code != 0 || !strings.Contains(out, "codec") {
		t.Errorf("help bench: exit %d, %q", code, out)
	}
	code, out, _ = runCLI(t, "bench", "codec", "--help")
	if code != 0 || !strings.Contains(out, "--sizes") && !strings.Contains(out, "-sizes") {
		t.Errorf("bench codec --help: exit %d, %q", code, out)
	}
	code, out, _ = runCLI(t, "bench", "--help")
	if code != 0 || !strings.Contains(out, "tunnel") {
		t.Errorf("bench --help does not list tunnel: exit %d, %q", code, out)
	}
	code, out, _ = runCLI(t, "bench", "tunnel", "--help")
	if code != 0 || !strings.Contains(out, "duration") || !strings.Contains(out, "netstack") {
		t.Errorf("bench tunnel --help: exit %d, %q", code, out)
	}
}

// tunnelKeys are the keys of `bench tunnel --json`: the seven of the
// interface, then the small-packet detail and the MTU.
var tunnelKeys = []string{"alg", "cpu_s_per_gbit", "duration_s", "ealg", "gbps", "loss_ab", "loss_ba", "mode", "mtu", "pad_per_packet", "pps", "pps_ab", "pps_ba"}

// checkTunnelJSON parses one `bench tunnel --json` object and checks that
// its figures are consistent with each other and with the run asked for.
// It checks no speed: speed is what the command measures, not a test.
func checkTunnelJSON(t *testing.T, out, mode, ealg, alg string, seconds float64) map[string]any {
	t.Helper()
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out)
	}
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, tunnelKeys) {
		t.Fatalf("keys %v, want %v", keys, tunnelKeys)
	}
	if r["mode"] != mode || r["ealg"] != ealg || r["alg"] != alg {
		t.Errorf("mode/ealg/alg = %v/%v/%v, want %s/%s/%s", r["mode"], r["ealg"], r["alg"], mode, ealg, alg)
	}
	num := func(k string) float64 {
		v, ok := r[k].(float64)
		if !ok {
			t.Fatalf("%s = %v is not a number", k, r[k])
		}
		return v
	}
	if g := num("gbps"); !(g > 0 && g < 1000) {
		t.Errorf("gbps %v", g)
	}
	if d := num("duration_s"); math.Abs(d-seconds) > 0.5 {
		t.Errorf("duration_s %v, want about %v", d, seconds)
	}
	ab, ba, pps := num("pps_ab"), num("pps_ba"), num("pps")
	if !(ab > 0 && ba > 0 && pps == math.Min(ab, ba)) {
		t.Errorf("pps %v, pps_ab %v, pps_ba %v: want both positive and pps the smaller", pps, ab, ba)
	}
	for _, k := range []string{"loss_ab", "loss_ba"} {
		if l := num(k); l < 0 || l > 1 {
			t.Errorf("%s %v outside [0, 1]", k, l)
		}
	}
	if c := num("cpu_s_per_gbit"); !(c > 0 && c < 100) {
		t.Errorf("cpu_s_per_gbit %v", c)
	}
	if m := num("mtu"); m < 1280 || m > 1500 {
		t.Errorf("mtu %v", m)
	}
	if p := num("pad_per_packet"); p < 0 || p > 255 {
		t.Errorf("pad_per_packet %v outside [0, 255]", p)
	}
	return r
}

func TestBenchTunnelNetstackJSON(t *testing.T) {
	code, out, errs := runCLI(t, "bench", "tunnel", "--json", "--duration", "1s")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	checkTunnelJSON(t, out, "netstack", "aes-cbc", "hmac-sha-1-96", 1)
	// Progress on stderr, one line per update when it is not a terminal.
	for _, want := range []string{"[1/4] setup", "[3/4] small packets a->b", "[4/4] small packets b->a"} {
		if !strings.Contains(errs, want+"") {
			t.Errorf("stderr lacks %q: %q", want, errs)
		}
	}
}

// TestBenchTunnelNoBatchPad: with --batch-pad -1 the pumps add no padding.
func TestBenchTunnelNoBatchPad(t *testing.T) {
	code, out, errs := runCLI(t, "bench", "tunnel", "--json", "--duration", "1s", "--batch-pad", "-1")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if r := checkTunnelJSON(t, out, "netstack", "aes-cbc", "hmac-sha-1-96", 1); r["pad_per_packet"] != 0.0 {
		t.Errorf("pad_per_packet %v with --batch-pad -1", r["pad_per_packet"])
	}
}

func TestBenchTunnelNetstackGCMTable(t *testing.T) {
	code, out, errs := runCLI(t, "bench", "tunnel", "--ealg", "aes-gcm", "--duration", "1s")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	for _, want := range []string{"netstack", "aes-gcm(128) / null", "Gbit/s", "s per Gbit", "small packets a->b", "packets/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestBenchTunnelTUN runs the tun mode for a second as root, or checks the
// error without root. It also checks that the namespaces are gone after.
func TestBenchTunnelTUN(t *testing.T) {
	if os.Geteuid() != 0 {
		code, out, errs := runCLI(t, "bench", "tunnel", "--mode", "tun", "--duration", "1s")
		if code != 1 || out != "" || !strings.Contains(errs, "needs root") {
			t.Fatalf("--mode tun without root: exit %d, stdout %q, stderr %q", code, out, errs)
		}
		return
	}
	for _, tool := range []string{"ip", "iperf3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("--mode tun needs %s (CI installs iproute2 and iperf3): %v", tool, err)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver: %v", err)
	}
	code, out, errs := runCLI(t, "bench", "tunnel", "--mode", "tun", "--ealg", "aes-gcm", "--json", "--duration", "1s")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	checkTunnelJSON(t, out, "tun", "aes-gcm(128)", "null", 1)
	ns, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if prefix := fmt.Sprintf("imsec-bench-%d-", os.Getpid()); strings.Contains(string(ns), prefix) {
		t.Errorf("namespaces left behind:\n%s", ns)
	}
}
