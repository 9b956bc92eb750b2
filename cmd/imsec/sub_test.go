package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

// Keys of TS 35.208 §4.3 test sets 1 and 2.
const (
	subK1   = "465b5ce8b199b49faa5f0a2ee238a6bc"
	subOP1  = "cdc202d5123e20f62b6d676ac72cb318"
	subOPc1 = "cd63cb71954a9f4e48a5994e37a02baf"
	subK2   = "0396eb317b6d1c36f19c1c84cd6ffd16"
	subOPc2 = "53c15671c60a4b731c55b4a441c0bde2"
)

// subRun runs imsec and requires exit code want.
func subRun(t *testing.T, want int, args ...string) (string, string) {
	t.Helper()
	code, out, errs := runCLI(t, args...)
	if code != want {
		t.Fatalf("imsec %s: exit %d, want %d\nstdout %q\nstderr %q", strings.Join(args, " "), code, want, out, errs)
	}
	return out, errs
}

// assertNoSecrets fails if text holds any test key in hex, or even its
// first 8 hex digits.
func assertNoSecrets(t *testing.T, what, text string) {
	t.Helper()
	low := strings.ToLower(text)
	for _, k := range []string{subK1, subOP1, subOPc1, subK2, subOPc2} {
		if strings.Contains(low, k[:8]) {
			t.Errorf("%s shows a key (%s…):\n%s", what, k[:8], text)
		}
	}
}

func addAliceBob(t *testing.T, db string) {
	t.Helper()
	out, _ := subRun(t, 0, "sub", "add", "--db", db, "--impi", "alice@ims.example",
		"--impu", "sip:alice@ims.example", "--impu", "tel:+15550100", "--k", subK1, "--op", subOP1)
	if !strings.Contains(out, "added alice@ims.example") || !strings.Contains(out, "OP sha256:02f8f4fd (OPc derived)") {
		t.Fatalf("add output %q", out)
	}
	assertNoSecrets(t, "add output", out)
	out, _ = subRun(t, 0, "sub", "add", "--db", db, "--impi", "bob@ims.example",
		"--impu", "sip:bob@ims.example", "--k", "0x"+strings.ToUpper(subK2), "--opc", subOPc2, "--amf", "b9b9", "--sqn", "0000000001e3")
	assertNoSecrets(t, "add output", out)
}

func TestSubAddListShowDel(t *testing.T) {
	db := filepath.Join(t.TempDir(), "hss.db")
	addAliceBob(t, db)

	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("database mode %v, want 0600", m)
	}

	out, _ := subRun(t, 0, "sub", "list", "--db", db)
	assertNoSecrets(t, "list", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("list: want header and 2 rows:\n%s", out)
	}
	// Fingerprints: printf %s KEY | xxd -r -p | sha256sum | cut -c1-8
	for _, want := range []string{"alice@ims.example", "sip:alice@ims.example,tel:+15550100", "sha256:836b7a93",
		"OP sha256:02f8f4fd", "8000", "000000000000", "0/0", "never"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("alice row lacks %q: %s", want, lines[1])
		}
	}
	// 0x1e3 = SEQ 15, IND 3.
	for _, want := range []string{"bob@ims.example", "OPc sha256:7f99581d", "b9b9", "0000000001e3", "15/3"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("bob row lacks %q: %s", want, lines[2])
		}
	}

	out, _ = subRun(t, 0, "sub", "list", "--db", db, "--json")
	assertNoSecrets(t, "list --json", out)
	var views []hss.SubscriberView
	if err := json.Unmarshal([]byte(out), &views); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	if len(views) != 2 || views[0].KeyKind != "OP" || views[1].KeyKind != "OPc" || views[1].SEQ != 15 || views[1].IND != 3 ||
		len(views[0].IMPUs) != 2 || views[0].KFingerprint != "sha256:836b7a93" {
		t.Fatalf("list --json = %+v", views)
	}

	out, _ = subRun(t, 0, "sub", "show", "--db", db, "--impi", "alice@ims.example")
	assertNoSecrets(t, "show", out)
	for _, want := range []string{"sip:alice@ims.example (default)", "tel:+15550100", "OP:", "(provisioned)", "OPc:", "(derived from OP)", "SEQ 0, IND 0 of 5 bits"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	out, _ = subRun(t, 0, "sub", "show", "--db", db, "--impi", "bob@ims.example", "--json", "--ind-bits", "4")
	assertNoSecrets(t, "show --json", out)
	var v hss.SubscriberView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.SEQ != 0x1e || v.IND != 3 {
		t.Fatalf("show --json --ind-bits 4: %+v %v", v, err)
	}

	out, _ = subRun(t, 0, "sub", "del", "--db", db, "--impi", "alice@ims.example")
	if !strings.Contains(out, "deleted alice@ims.example") {
		t.Fatalf("del output %q", out)
	}
	out, _ = subRun(t, 0, "sub", "list", "--db", db)
	if strings.Contains(out, "alice") || !strings.Contains(out, "bob@ims.example") {
		t.Fatalf("list after del:\n%s", out)
	}
	subRun(t, 0, "sub", "del", "--db", db, "--impi", "bob@ims.example")
	out, _ = subRun(t, 0, "sub", "list", "--db", db)
	if !strings.Contains(out, "(no subscribers)") {
		t.Fatalf("empty list:\n%s", out)
	}
	out, _ = subRun(t, 0, "sub", "list", "--db", db, "--json")
	if strings.TrimSpace(out) != "[]" {
		t.Fatalf("empty list --json: %q", out)
	}
}

// The table shows what the HSS did: SQN, SEQ/IND and resyncs.
func TestSubListShowsHSSState(t *testing.T) {
	db := filepath.Join(t.TempDir(), "hss.db")
	addAliceBob(t, db)
	store, err := hss.OpenSQLite(db, hss.SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := hss.New(store, hss.Config{})
	ctx := context.Background()
	v, err := h.Vector(ctx, "alice@ims.example")
	if err != nil {
		t.Fatal(err)
	}
	var k akakeys.K
	var op akakeys.OP
	copy(k[:], mustDecode(t, subK1))
	copy(op[:], mustDecode(t, subOP1))
	auts := akakeys.NewMilenageOP(k, op).AUTS(v.RAND, h.Scheme().Join(100, 9))
	if _, err := h.Resync(ctx, "alice@ims.example", v.RAND, auts); err != nil {
		t.Fatal(err)
	}
	store.Close()

	out, _ := subRun(t, 0, "sub", "list", "--db", db)
	row := strings.Split(out, "\n")[1]
	// After resync to SEQ 100 / IND 9 the vector took SEQ 101, IND 10, and
	// the HSS stored the top of the range it reserved from there: 64 steps
	// of SEQ+1, IND+1, so SEQ 164, IND 9 (hss.DefaultReserve).
	for _, want := range []string{"alice@ims.example", "000000001489", "164/9", "  1  "} {
		if !strings.Contains(row, want) {
			t.Errorf("row lacks %q: %s", want, row)
		}
	}
	if strings.Contains(row, "never") {
		t.Errorf("last resync not shown: %s", row)
	}
}

func mustDecode(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hexArg("test", s, len(s)/2)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSubBadInput(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	addAliceBob(t, db)
	badK := subK1[:31] + "z" // a near-key with a typo: must not be echoed
	add := func(extra ...string) []string {
		return append([]string{"sub", "add", "--db", db, "--impi", "carol@ims.example", "--impu", "sip:carol@ims.example"}, extra...)
	}
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no action", []string{"sub"}, 2, "missing action"},
		{"unknown action", []string{"sub", "frob"}, 2, `unknown action "frob"`},
		{"unknown flag", []string{"sub", "list", "--db", db, "--frob"}, 2, "flag provided but not defined"},
		{"stray argument", []string{"sub", "list", "--db", db, "extra"}, 2, `unexpected argument "extra"`},
		{"no db", []string{"sub", "list"}, 2, "--db FILE is required"},
		{"add no impi", []string{"sub", "add", "--db", db, "--impu", "sip:c@x", "--k", subK1, "--opc", subOPc1}, 2, "--impi is required"},
		{"add no impu", []string{"sub", "add", "--db", db, "--impi", "c@x", "--k", subK1, "--opc", subOPc1}, 2, "at least one --impu"},
		{"add no k", add("--opc", subOPc1), 2, "--k is required"},
		{"add k not hex", add("--k", badK, "--opc", subOPc1), 2, "--k: not hex: invalid character at position 32"},
		{"add k short", add("--k", subK1[:30], "--opc", subOPc1), 2, "--k: want 16 bytes (32 hex digits), got 15 bytes"},
		{"add k odd", add("--k", subK1[:31], "--opc", subOPc1), 2, "--k: not hex: odd number of digits"},
		{"add op and opc", add("--k", subK1, "--op", subOP1, "--opc", subOPc1), 2, "give --op or --opc, not both"},
		{"add neither op", add("--k", subK1), 2, "--op or --opc is required"},
		{"add op long", add("--k", subK1, "--op", subOP1+"00"), 2, "--op: want 16 bytes"},
		{"add opc bad", add("--k", subK1, "--opc", "xyz"), 2, "--opc: not hex"},
		{"add amf", add("--k", subK1, "--opc", subOPc1, "--amf", "800"), 2, "--amf"},
		{"add sqn", add("--k", subK1, "--opc", subOPc1, "--sqn", "01"), 2, "--sqn: want 6 bytes"},
		{"add bad impu", []string{"sub", "add", "--db", db, "--impi", "c@x", "--impu", "mailto:c@x", "--k", subK1, "--opc", subOPc1}, 2,
			`IMPU "mailto:c@x" is not a sip:, sips: or tel: URI`},
		{"add impi space", []string{"sub", "add", "--db", db, "--impi", "c @x", "--impu", "sip:c@x", "--k", subK1, "--opc", subOPc1}, 2, "space or control"},
		{"add duplicate impi", []string{"sub", "add", "--db", db, "--impi", "alice@ims.example", "--impu", "sip:c@x", "--k", subK1, "--opc", subOPc1}, 1,
			`subscriber already exists: "alice@ims.example"`},
		{"add impu taken", add("--k", subK1, "--opc", subOPc1, "--impu", "tel:+15550100"), 1, `"tel:+15550100" belongs to "alice@ims.example"`},
		{"show unknown", []string{"sub", "show", "--db", db, "--impi", "nobody@x"}, 1, `unknown subscriber: "nobody@x"`},
		{"show no impi", []string{"sub", "show", "--db", db}, 2, "--impi is required"},
		{"del unknown", []string{"sub", "del", "--db", db, "--impi", "nobody@x"}, 1, `unknown subscriber: "nobody@x"`},
		{"del no impi", []string{"sub", "del", "--db", db}, 2, "--impi is required"},
		{"list missing db", []string{"sub", "list", "--db", filepath.Join(dir, "typo.db")}, 1, "does not exist"},
		{"ind bits", []string{"sub", "list", "--db", db, "--ind-bits", "0"}, 2, "--ind-bits: want 1 to 16"},
		{"not a database", []string{"sub", "list", "--db", "sub_test.go"}, 1, "not an SQLite database"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errs := runCLI(t, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d; stderr %q", code, c.code, errs)
			}
			if !strings.Contains(errs, c.msg) {
				t.Errorf("stderr %q lacks %q", errs, c.msg)
			}
			if strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "imsec sub: ") {
				t.Errorf("stderr is not one 'imsec sub:' line: %q", errs)
			}
			if out != "" {
				t.Errorf("stdout %q on error", out)
			}
			assertNoSecrets(t, "stderr", errs)
			if strings.Contains(errs, badK[:20]) {
				t.Errorf("stderr echoes the mistyped key: %q", errs)
			}
		})
	}
	// A failed add changed nothing, and no typo'd file was created.
	out, _ := subRun(t, 0, "sub", "list", "--db", db)
	if strings.Count(strings.TrimSpace(out), "\n") != 2 || strings.Contains(out, "carol") {
		t.Fatalf("list after failed adds:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "typo.db")); err == nil {
		t.Error("list created the mistyped database file")
	}
}

func TestSubHelp(t *testing.T) {
	for _, args := range [][]string{{"sub", "--help"}, {"help", "sub"}, {"sub", "help"}} {
		out, _ := subRun(t, 0, args...)
		for _, want := range []string{"imsec sub add --db hss.db --impi alice@ims.example", "sub list", "sub show", "sub del",
			"sub import", "sub gen", "impi,impu,k,op,amf,sqn", "Exit status", "sha256sum"} {
			if !strings.Contains(out, want) {
				t.Errorf("%v: help lacks %q", args, want)
			}
		}
	}
	for _, action := range []string{"add", "list", "show", "del", "import", "gen"} {
		out, _ := subRun(t, 0, "sub", action, "--help")
		flag := "-db"
		if action == "gen" {
			flag = "-count"
		}
		if !strings.Contains(out, "Usage: imsec sub "+action) || !strings.Contains(out, "Example:") || !strings.Contains(out, flag) {
			t.Errorf("sub %s --help:\n%s", action, out)
		}
	}
}

// Every action refuses a database that is empty, not SQLite, cut short,
// another application's or from a newer imsec: exit 1, one line naming the
// file and the problem, nothing on stdout, the file left as it was. Only a
// file that does not exist is created (by add).
func TestSubBadDatabase(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	addAliceBob(t, good)
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	sqliteFile := func(name string, stmts ...string) string {
		p := filepath.Join(dir, name)
		db, err := sql.Open("sqlite", p)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, stmt := range stmts {
			if _, err := db.Exec(stmt); err != nil {
				t.Fatalf("%s: %v", stmt, err)
			}
		}
		return p
	}
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	future := file("future.db", goodBytes)
	sqliteFile("future.db", "PRAGMA user_version = 99")
	cases := []struct {
		name, path, msg string
	}{
		{"empty", file("empty.db", nil), "is empty (0 bytes), not an imsec subscriber database"},
		{"not sqlite", file("notes.txt", []byte(strings.Repeat("not a database\n", 40))), "is not an SQLite database (600 bytes without the SQLite header)"},
		{"cut in half", file("half.db", goodBytes[:len(goodBytes)/2]), "is truncated: "},
		{"another application", sqliteFile("other.db", "CREATE TABLE notes (body TEXT)"), "is an SQLite database of another application"},
		{"future schema", future, "has schema version 99, this imsec knows up to 2 (upgrade imsec)"},
	}
	csvFile := file("carol.csv", []byte("impi,impu,k,opc\ncarol@ims.example,sip:carol@ims.example,"+subK1+","+subOPc1+"\n"))
	actions := [][]string{
		{"list"},
		{"import", csvFile},
		{"show", "--impi", "alice@ims.example"},
		{"del", "--impi", "alice@ims.example"},
		{"add", "--impi", "carol@ims.example", "--impu", "sip:carol@ims.example", "--k", subK1, "--opc", subOPc1},
	}
	for _, c := range cases {
		for _, action := range actions {
			t.Run(c.name+"/"+action[0], func(t *testing.T) {
				before, err := os.ReadFile(c.path)
				if err != nil {
					t.Fatal(err)
				}
				args := append([]string{"sub", action[0], "--db", c.path}, action[1:]...)
				out, errs := subRun(t, 1, args...)
				prefix := "imsec sub: " + action[0] + ": hss: unusable subscriber database: " + c.path + " "
				if !strings.HasPrefix(errs, prefix) || !strings.Contains(errs, c.msg) || strings.Count(errs, "\n") != 1 {
					t.Errorf("stderr %q, want one line starting %q and holding %q", errs, prefix, c.msg)
				}
				if out != "" {
					t.Errorf("stdout %q", out)
				}
				assertNoSecrets(t, "stderr", errs)
				after, err := os.ReadFile(c.path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(before, after) {
					t.Errorf("refused %s changed the file", action[0])
				}
				for _, suffix := range []string{"-wal", "-shm", "-journal"} {
					if _, err := os.Stat(c.path + suffix); err == nil {
						t.Errorf("refused %s left %s", action[0], filepath.Base(c.path+suffix))
					}
				}
			})
		}
	}

	// The empty file's message says what to do; doing it works.
	empty := filepath.Join(dir, "empty.db")
	_, errs := subRun(t, 1, "sub", "add", "--db", empty, "--impi", "carol@ims.example", "--impu", "sip:carol@ims.example", "--k", subK1, "--opc", subOPc1)
	if !strings.Contains(errs, "remove it and run 'imsec sub add --db "+empty+" ...'") {
		t.Fatalf("stderr %q lacks the way out", errs)
	}
	if err := os.Remove(empty); err != nil {
		t.Fatal(err)
	}
	subRun(t, 0, "sub", "add", "--db", empty, "--impi", "carol@ims.example", "--impu", "sip:carol@ims.example", "--k", subK1, "--opc", subOPc1)
	out, _ := subRun(t, 0, "sub", "list", "--db", empty)
	if !strings.Contains(out, "carol@ims.example") {
		t.Fatalf("list of the new database:\n%s", out)
	}
}
