package main

import (
	"encoding/json"
	"math"
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
	wantKeys := []string{"alg", "allocs", "baseline_mbps", "ealg", "mbps", "op", "pps", "ratio", "size"}
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
		if allocs != 0 {
			t.Errorf("row %d (%s/%s %s): %v allocations per packet, want 0", i, ealg, alg, op, allocs)
		}
		// Sane: positive, below 100 GB/s, and consistent with each other.
		if !(mbps > 0 && mbps < 1e5 && base > 0 && base < 1e5 && pps > 0) {
			t.Errorf("row %d: implausible mbps %v, baseline %v, pps %v", i, mbps, base, pps)
		}
		if d := math.Abs(mbps - pps*size/1e6); d > 0.01+1e-3*mbps {
			t.Errorf("row %d: mbps %v but pps %v x %v bytes", i, mbps, pps, size)
		}
		if d := math.Abs(ratio - mbps/base); d > 0.002+1e-3*ratio {
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
}
