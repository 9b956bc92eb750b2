package main

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

// TS 35.208 §4.3 test set 1.
const (
	ts1K    = "465b5ce8b199b49faa5f0a2ee238a6bc"
	ts1OP   = "cdc202d5123e20f62b6d676ac72cb318"
	ts1OPc  = "cd63cb71954a9f4e48a5994e37a02baf"
	ts1RAND = "23553cbe9637a89d218ae64dae47bf35"
	ts1SQN  = "ff9bb4d0b607"
	ts1AMF  = "b9b9"
)

// runAKAJSON runs imsec with args, wants exit code want, and decodes stdout
// as one JSON object of strings.
func runAKAJSON(t *testing.T, want int, args ...string) (map[string]string, string) {
	t.Helper()
	code, out, errs := runCLI(t, args...)
	if code != want {
		t.Fatalf("imsec %s: exit %d, want %d; stderr %q", strings.Join(args, " "), code, want, errs)
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("imsec %s: stdout %q is not one JSON object of strings: %v", strings.Join(args, " "), out, err)
	}
	if strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("stdout %q is not one line", out)
	}
	return m, errs
}

func TestAKAVectorTestSet1(t *testing.T) {
	// Published values of TS 35.208 test set 1; autn = SQN^f5 || AMF || f1.
	want := map[string]string{
		"opc": ts1OPc, "mac_a": "4a9ffac354dfafb3", "mac_s": "01cfaf9ec4e871e9", "xres": "a54211d5e3ba50bf",
		"ck": "b40ba9a3c58b2a05bbf0d987b21bf8cb", "ik": "f769bcd751044604127672711c6d3441",
		"ak": "aa689c648370", "ak_star": "451e8beca43b", "autn": "55f328b43577" + ts1AMF + "4a9ffac354dfafb3",
	}
	for _, keyArgs := range [][]string{{"--op", ts1OP}, {"--opc", ts1OPc}, {"--opc", "0x" + strings.ToUpper(ts1OPc)}} {
		args := append([]string{"aka", "vector", "--k", ts1K}, keyArgs...)
		args = append(args, "--rand", ts1RAND, "--sqn", ts1SQN, "--amf", ts1AMF)
		got, _ := runAKAJSON(t, 0, args...)
		if len(got) != len(want) {
			t.Errorf("%v: keys %v, want exactly %d keys", keyArgs, got, len(want))
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%v: %s = %q, want %q", keyArgs, k, got[k], v)
			}
		}
	}
}

func TestAKAVectorTestSet3(t *testing.T) {
	got, _ := runAKAJSON(t, 0, "aka", "vector", "--k", "fec86ba6eb707ed08905757b1bb44b8f", "--op", "dbc59adcb6f9a0ef735477b7fadf8374",
		"--rand", "9f7c8d021accf4db213ccff0c7f71a6a", "--sqn", "9d0277595ffc", "--amf", "725c")
	// TS 35.208 §4.3 test set 3.
	for k, v := range map[string]string{"opc": "1006020f0a478bf6b699f15c062e42b3", "mac_a": "9cabc3e99baf7281", "mac_s": "95814ba2b3044324",
		"xres": "8011c48c0c214ed2", "ck": "5dbdbb2954e8f3cde665b046179a5098", "ik": "59a92d3b476a0443487055cf88b2307b",
		"ak": "33484dc2136b", "ak_star": "deacdd848cc6"} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestAKAAUTS(t *testing.T) {
	got, _ := runAKAJSON(t, 0, "aka", "auts", "--k", ts1K, "--op", ts1OP, "--rand", ts1RAND, "--sqn-ms", ts1SQN)
	// AUTS = SQN_MS ^ f5* || MAC-S; f5* of test set 1 is 451e8beca43b.
	if !strings.HasPrefix(got["auts"], "ba853f3c123c") || len(got["auts"]) != 28 || len(got) != 1 {
		t.Fatalf("auts %v, want 14 bytes starting with SQN_MS^AK* = ba853f3c123c", got)
	}
	b, _ := hex.DecodeString(got["auts"])
	m := akakeys.NewMilenage(akakeys.K(mustHex(t, ts1K)), akakeys.OPc(mustHex(t, ts1OPc)))
	sqnMS, err := m.VerifyAUTS(akakeys.RAND(mustHex(t, ts1RAND)), akakeys.AUTS(b))
	if err != nil || hex.EncodeToString(sqnMS[:]) != ts1SQN {
		t.Fatalf("VerifyAUTS of the CLI's AUTS = %x, %v", sqnMS, err)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAKAUE(t *testing.T) {
	vec, _ := runAKAJSON(t, 0, "aka", "vector", "--k", ts1K, "--opc", ts1OPc, "--rand", ts1RAND, "--sqn", ts1SQN, "--amf", ts1AMF)
	ue := []string{"aka", "ue", "--k", ts1K, "--opc", ts1OPc, "--rand", ts1RAND, "--autn", vec["autn"]}

	// Test set 1's SQN is far more than 2^28 ahead of a fresh USIM: sync
	// failure, with the AUTS for SQN_MS = 0 on stdout.
	got, errs := runAKAJSON(t, 3, ue...)
	if !strings.Contains(errs, "synchronisation failure") || !strings.Contains(errs, got["auts"]) || strings.Count(errs, "\n") != 1 {
		t.Fatalf("stderr %q", errs)
	}
	want, _ := runAKAJSON(t, 0, "aka", "auts", "--k", ts1K, "--opc", ts1OPc, "--rand", ts1RAND, "--sqn-ms", "000000000000")
	if got["auts"] != want["auts"] {
		t.Fatalf("ue auts %s, aka auts --sqn-ms 0 gives %s", got["auts"], want["auts"])
	}

	// A USIM that has accepted SQN - 32 (same IND slot) takes it and answers
	// with the published f2, f3, f4.
	got, _ = runAKAJSON(t, 0, append(ue, "--sqn-ms", "ff9bb4d0b5e7")...)
	if got["res"] != "a54211d5e3ba50bf" || got["ck"] != "b40ba9a3c58b2a05bbf0d987b21bf8cb" || got["ik"] != "f769bcd751044604127672711c6d3441" || len(got) != 3 {
		t.Fatalf("ue answer %v", got)
	}
	// ... but not one that has accepted SQN itself (replay).
	runAKAJSON(t, 3, append(ue, "--sqn-ms", ts1SQN)...)

	// A small SQN is fresh for a fresh USIM.
	small, _ := runAKAJSON(t, 0, "aka", "vector", "--k", ts1K, "--op", ts1OP, "--rand", ts1RAND, "--sqn", "000000000021", "--amf", "8000")
	got, _ = runAKAJSON(t, 0, "aka", "ue", "--k", ts1K, "--op", ts1OP, "--rand", ts1RAND, "--autn", small["autn"], "--amf", "8000")
	if got["res"] != small["xres"] {
		t.Fatalf("res %s, xres %s", got["res"], small["xres"])
	}

	// --amf must match AUTN's AMF.
	code, out, errs := runCLI(t, "aka", "ue", "--k", ts1K, "--op", ts1OP, "--rand", ts1RAND, "--autn", small["autn"], "--amf", "0000")
	if code != 1 || out != "" || !strings.Contains(errs, "AMF") {
		t.Fatalf("AMF mismatch: exit %d stdout %q stderr %q", code, out, errs)
	}

	// A flipped bit of AUTN or RAND, or the wrong K: MAC failure, exit 1.
	autn := mustHex(t, small["autn"])
	autn[15] ^= 1
	rnd := mustHex(t, ts1RAND)
	rnd[0] ^= 0x80
	for _, args := range [][]string{
		{"aka", "ue", "--k", ts1K, "--op", ts1OP, "--rand", ts1RAND, "--autn", hex.EncodeToString(autn)},
		{"aka", "ue", "--k", ts1K, "--op", ts1OP, "--rand", hex.EncodeToString(rnd), "--autn", small["autn"]},
		{"aka", "ue", "--k", "00" + ts1K[2:], "--op", ts1OP, "--rand", ts1RAND, "--autn", small["autn"]},
	} {
		code, out, errs := runCLI(t, args...)
		if code != 1 || out != "" || !strings.Contains(errs, "MAC failure") {
			t.Errorf("%v: exit %d stdout %q stderr %q, want exit 1 and a MAC failure", args, code, out, errs)
		}
	}
}

func TestAKABadInput(t *testing.T) {
	vec := []string{"--k", ts1K, "--op", ts1OP, "--rand", ts1RAND, "--sqn", ts1SQN, "--amf", ts1AMF}
	without := func(args []string, flag string) []string {
		var out []string
		for i := 0; i < len(args); i += 2 {
			if args[i] != flag {
				out = append(out, args[i], args[i+1])
			}
		}
		return out
	}
	with := func(args []string, flag, value string) []string {
		return append(without(args, flag), flag, value)
	}
	pre := func(sub string, args []string) []string { return append([]string{"aka", sub}, args...) }
	auts := []string{"--k", ts1K, "--opc", ts1OPc, "--rand", ts1RAND, "--sqn-ms", ts1SQN}
	ue := []string{"--k", ts1K, "--opc", ts1OPc, "--rand", ts1RAND, "--autn", "55f328b43577b9b94a9ffac354dfafb3"}

	for _, tc := range []struct {
		args []string
		want string // the stderr line must name this
	}{
		{[]string{"aka"}, "missing subcommand"},
		{[]string{"aka", "frobnicate"}, `unknown subcommand "frobnicate"`},
		{pre("vector", without(vec, "--k")), "--k is required"},
		{pre("vector", with(vec, "--k", "465b")), "--k: want 16 bytes"},
		{pre("vector", with(vec, "--k", ts1K+"00")), "--k: want 16 bytes"},
		{pre("vector", with(vec, "--k", "zz"+ts1K[2:])), "--k: not hex"},
		{pre("vector", append(vec, "--opc", ts1OPc)), "not both"},
		{pre("vector", without(vec, "--op")), "--op or --opc is required"},
		{pre("vector", with(vec, "--op", "cdc2")), "--op: want 16 bytes"},
		{pre("vector", with(without(vec, "--op"), "--opc", "cd63")), "--opc: want 16 bytes"},
		{pre("vector", without(vec, "--rand")), "--rand is required"},
		{pre("vector", with(vec, "--rand", ts1RAND[:30])), "--rand: want 16 bytes"},
		{pre("vector", without(vec, "--sqn")), "--sqn is required"},
		{pre("vector", with(vec, "--sqn", "ff9bb4d0b6")), "--sqn: want 6 bytes"},
		{pre("vector", without(vec, "--amf")), "--amf is required"},
		{pre("vector", with(vec, "--amf", "b9b9b9")), "--amf: want 2 bytes"},
		{pre("vector", append(vec, "--bogus", "1")), "-bogus"},
		{pre("vector", append(vec, "extra")), `unexpected argument "extra"`},
		{pre("auts", without(auts, "--sqn-ms")), "--sqn-ms is required"},
		{pre("auts", with(auts, "--sqn-ms", "00")), "--sqn-ms: want 6 bytes"},
		{pre("auts", without(auts, "--rand")), "--rand is required"},
		{pre("auts", without(auts, "--opc")), "--op or --opc is required"},
		{pre("ue", without(ue, "--autn")), "--autn is required"},
		{pre("ue", with(ue, "--autn", "55f3")), "--autn: want 16 bytes"},
		{pre("ue", with(ue, "--amf", "8")), "--amf: not hex"},
		{pre("ue", with(ue, "--amf", "800000")), "--amf: want 2 bytes"},
		{pre("ue", with(ue, "--sqn-ms", "0000")), "--sqn-ms: want 6 bytes"},
		{pre("ue", append(ue, "--op", ts1OP)), "not both"},
		{pre("ue", without(ue, "--rand")), "--rand is required"},
	} {
		code, out, errs := runCLI(t, tc.args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", tc.args, code, errs)
			continue
		}
		if out != "" {
			t.Errorf("%v: stdout %q, want nothing", tc.args, out)
		}
		if strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "imsec aka: ") || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: stderr %q, want one line naming %q", tc.args, errs, tc.want)
		}
	}
}

func TestAKAHelp(t *testing.T) {
	for _, args := range [][]string{{"aka", "--help"}, {"aka", "-h"}, {"aka", "help"}, {"help", "aka"}} {
		code, out, _ := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%v: exit %d", args, code)
		}
		for _, want := range []string{"vector", "auts", "ue", "imsec aka vector --k", "imsec aka auts --k", "imsec aka ue --k", "--amf", "Exit status"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: help lacks %q", args, want)
			}
		}
	}
	for _, sub := range []string{"vector", "auts", "ue"} {
		code, out, errs := runCLI(t, "aka", sub, "--help")
		if code != 0 || !strings.HasPrefix(out, "Usage: imsec aka "+sub) || strings.Count(out, "Usage:") != 1 || !strings.Contains(out, "-opc") || errs != "" {
			t.Errorf("aka %s --help: exit %d stdout %q stderr %q", sub, code, out, errs)
		}
	}
	// The examples in the help text work as written.
	code, out, _ := runCLI(t, "aka", "ue", "--k", ts1K, "--opc", ts1OPc, "--rand", ts1RAND, "--autn", "55f328b43577b9b94a9ffac354dfafb3", "--sqn-ms", "ff9bb4d0b5e7")
	if code != 0 || !strings.Contains(out, "a54211d5e3ba50bf") {
		t.Errorf("help's ue example: exit %d, %q", code, out)
	}
	if code, _, _ := runCLI(t, "aka", "auts", "--k", ts1K, "--opc", ts1OPc, "--rand", ts1RAND, "--sqn-ms", "000000000021"); code != 0 {
		t.Errorf("help's auts example: exit %d", code)
	}
}
