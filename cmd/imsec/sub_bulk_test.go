package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imsec/imsec/akakeys/hss"
)

// writeFile writes a test file and returns its path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// subCount returns the number of subscribers in db.
func subCount(t testing.TB, db string) int {
	t.Helper()
	store, err := hss.OpenSQLite(db, hss.SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	subs, err := store.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(subs)
}

// csvRows is a provisioning CSV with an opc column and rows for carol,
// dave and erin (erin with two IMPUs, an AMF and an SQN).
const csvRows = "impi,impu,k,opc,amf,sqn\n" +
	"carol@ims.example,sip:carol@ims.example," + subK1 + "," + subOPc1 + ",,\n" +
	"dave@ims.example,sip:dave@ims.example," + subK2 + "," + subOPc2 + ",8000,\n" +
	"erin@ims.example,sip:erin@ims.example tel:+15550199," + subK2 + "," + subOPc2 + ",b9b9,0000000001e3\n"

func TestSubImport(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	file := writeFile(t, dir, "ues.csv", csvRows)
	out, errs := subRun(t, 0, "sub", "import", "--db", db, file)
	if !strings.HasPrefix(out, "imported 3 subscribers (4 IMPUs) from "+file+" into ") {
		t.Fatalf("import output %q", out)
	}
	if errs != "" {
		t.Errorf("stderr %q: no progress for a small file", errs)
	}
	assertNoSecrets(t, "import output", out)
	if fi, err := os.Stat(db); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("database: %v, %v", fi, err)
	}
	out, _ = subRun(t, 0, "sub", "show", "--db", db, "--impi", "erin@ims.example")
	for _, want := range []string{"tel:+15550199", "OPc:      sha256:7f99581d (provisioned)", "AMF:      b9b9", "SQN:      0000000001e3"} {
		if !strings.Contains(strings.Join(strings.Fields(out), " "), strings.Join(strings.Fields(want), " ")) {
			t.Errorf("show erin lacks %q:\n%s", want, out)
		}
	}
	// A second file adds to the database.
	addAliceBob(t, db)
	if n := subCount(t, db); n != 5 {
		t.Fatalf("%d subscribers, want 5", n)
	}
}

// A bad row anywhere: the error names its line, nothing is stored, and a
// database that did not exist is not created.
func TestSubImportAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	addAliceBob(t, db)
	row := func(impi, impu, k string) string {
		return impi + "," + impu + "," + k + "," + subOPc1 + ",,\n"
	}
	good := row("c1@x", "sip:c1@x", subK1) + row("c2@x", "sip:c2@x", subK1)
	badK := subK1[:31] + "z"
	cases := []struct {
		name, csv string
		code      int
		msg       []string
	}{
		{"bad hex on line 5", csvRows + row("c3@x", "sip:c3@x", badK), 2, []string{"line 5: ", "k: not hex: invalid character at position 32"}},
		{"bad identity on line 3", "impi,impu,k,opc,amf,sqn\n" + good[:len(good)/2] + row("c 9@x", "sip:c9@x", subK1) + good[len(good)/2:], 2,
			[]string{"line 3: ", "space or control"}},
		{"IMPU of the database on line 4", "impi,impu,k,opc,amf,sqn\n" + good + row("c3@x", "sip:c3@x tel:+15550100", subK1), 1,
			[]string{"line 4: ", `"tel:+15550100" belongs to "alice@ims.example"`}},
		{"IMPI of the database on line 3", "impi,impu,k,opc,amf,sqn\n" + row("c1@x", "sip:c1@x", subK1) + row("bob@ims.example", "sip:c9@x", subK1), 1,
			[]string{"line 3: ", `subscriber already exists: "bob@ims.example"`}},
		{"missing column", "impi,impu,opc\nc1@x,sip:c1@x," + subOPc1 + "\n", 2, []string{"line 1: ", `no column "k"`}},
		{"IMPU twice in the file", "impi,impu,k,opc,amf,sqn\n" + good + row("c3@x", "sip:c2@x", subK1), 2,
			[]string{"line 4: ", `IMPU "sip:c2@x" is on line 3 already`}},
		{"header only", "impi,impu,k,opc\n", 2, []string{"has a header but no subscribers"}},
		{"cut short", strings.TrimSuffix(csvRows, "\n"), 2, []string{"line 4: ", "does not end with a newline"}},
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			file := writeFile(t, t.TempDir(), "ues.csv", c.csv)
			before, _ := subRun(t, 0, "sub", "list", "--db", db)
			out, errs := subRun(t, c.code, "sub", "import", "--db", db, file)
			if out != "" {
				t.Errorf("stdout %q", out)
			}
			want := append([]string{"imsec sub: import: " + file + " ", "nothing imported"}, c.msg...)
			for _, w := range want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr %q lacks %q", errs, w)
				}
			}
			if strings.Count(errs, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", errs)
			}
			assertNoSecrets(t, "stderr", errs)
			if after, _ := subRun(t, 0, "sub", "list", "--db", db); after != before {
				t.Errorf("the database changed:\n%s\nthen\n%s", before, after)
			}
			// Into a database that does not exist: refused before it is made.
			fresh := filepath.Join(t.TempDir(), "new.db")
			runCLI(t, "sub", "import", "--db", fresh, file)
			if _, err := os.Stat(fresh); c.code == 2 && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused file made the database: %v", err)
			}
		})
	}
}

func TestSubImportUsage(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	file := writeFile(t, dir, "ues.csv", csvRows)
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"sub", "import", "--db", db}, 2, "want one CSV file"},
		{[]string{"sub", "import", "--db", db, file, file}, 2, "want one CSV file (or - for standard input), got 2"},
		{[]string{"sub", "import", file}, 2, "--db FILE is required"},
		{[]string{"sub", "import", "--db", db, filepath.Join(dir, "missing.csv")}, 1, "no such file"},
	} {
		_, errs := subRun(t, c.code, c.args...)
		if !strings.Contains(errs, c.msg) {
			t.Errorf("%v: stderr %q lacks %q", c.args, errs, c.msg)
		}
	}
}

func TestSubGen(t *testing.T) {
	dir := t.TempDir()
	gen := []string{"sub", "gen", "--count", "3", "--domain", "ims.example"}
	out1, errs := subRun(t, 0, gen...)
	out2, _ := subRun(t, 0, gen...)
	if out1 != out2 {
		t.Fatal("two runs with the same flags differ")
	}
	if !strings.Contains(errs, "test keys only") {
		t.Errorf("no warning about derived keys: %q", errs)
	}
	lines := strings.Split(strings.TrimSpace(out1), "\n")
	// K of ue000001 with the default seed: see TestDeriveTestKeysKnownAnswers.
	if len(lines) != 4 || lines[0] != "impi,impu,k,op,amf,sqn" ||
		lines[1] != "ue000001@ims.example,sip:ue000001@ims.example,3160dffca43195e71b1e1e70679ab796,e011100aa0d6e99fcf65492e619ab7f9,8000,000000000000" ||
		!strings.HasPrefix(lines[3], "ue000003@ims.example,") {
		t.Fatalf("gen output:\n%s", out1)
	}
	// Keys given: in every row, and no warning.
	out, errs := subRun(t, 0, "sub", "gen", "--count", "2", "--domain", "lab.example", "--prefix", "cpe", "--start", "41",
		"--k", subK2, "--opc", subOPc2, "--amf", "b9b9")
	want := "impi,impu,k,opc,amf,sqn\n" +
		"cpe000041@lab.example,sip:cpe000041@lab.example," + subK2 + "," + subOPc2 + ",b9b9,000000000000\n" +
		"cpe000042@lab.example,sip:cpe000042@lab.example," + subK2 + "," + subOPc2 + ",b9b9,000000000000\n"
	if out != want || errs != "" {
		t.Fatalf("gen with keys:\n%s\nwant\n%s\nstderr %q", out, want, errs)
	}
	// --out: mode 0600, never over an existing file.
	file := filepath.Join(dir, "ues.csv")
	out, _ = subRun(t, 0, append(gen, "--out", file)...)
	if !strings.Contains(out, "wrote 3 subscribers (ue000001@ims.example to ue000003@ims.example) to "+file) {
		t.Fatalf("gen --out output %q", out)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != out1 {
		t.Fatalf("--out file differs from stdout: %v", err)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("--out mode %v", fi.Mode().Perm())
	}
	_, errs = subRun(t, 1, append(gen, "--out", file)...)
	if !strings.Contains(errs, "file exists") {
		t.Errorf("gen over an existing file: %q", errs)
	}
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"sub", "gen", "--domain", "x"}, "--count and --domain are required"},
		{[]string{"sub", "gen", "--count", "3"}, "--count and --domain are required"},
		{[]string{"sub", "gen", "--count", "-1", "--domain", "x"}, "want 1 to 10000000"},
		{[]string{"sub", "gen", "--count", "1", "--domain", "x", "--op", subOP1, "--opc", subOPc1}, "give --op or --opc, not both"},
		{[]string{"sub", "gen", "--count", "1", "--domain", "x", "--k", subK1[:30]}, "--k: want 16 bytes"},
		{[]string{"sub", "gen", "--count", "1", "--domain", "x y"}, "space or control"},
	} {
		_, errs := subRun(t, 2, c.args...)
		if !strings.Contains(errs, c.msg) {
			t.Errorf("%v: stderr %q lacks %q", c.args, errs, c.msg)
		}
	}
}

// A generated file of 100,000 subscribers imports whole (its speed is
// BenchmarkSubImport's).
func TestSubGenImport100k(t *testing.T) {
	if testing.Short() {
		t.Skip("imports 100,000 subscribers; skipped with -short")
	}
	dir := t.TempDir()
	file, db := filepath.Join(dir, "ues.csv"), filepath.Join(dir, "hss.db")
	subRun(t, 0, "sub", "gen", "--count", "100000", "--domain", "ims.example", "--out", file)
	out, errs := subRun(t, 0, "sub", "import", "--db", db, file)
	if !strings.HasPrefix(out, "imported 100000 subscribers (100000 IMPUs)") {
		t.Fatalf("import output %q", out)
	}
	progress := strings.Split(strings.TrimSpace(errs), "\n")
	if len(progress) != 10 || progress[9] != "imsec sub import: 100000/100000 subscribers" {
		t.Errorf("progress on stderr:\n%s", errs)
	}
	if n := subCount(t, db); n != 100000 {
		t.Fatalf("%d subscribers stored, want 100000", n)
	}
	// The last one has the keys a load generator computes for it.
	store, err := hss.OpenSQLite(db, hss.SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	r := hss.TestRange{Prefix: "ue", Domain: "ims.example", Start: 1, Count: 100000}
	got, err := store.Get(context.Background(), r.IMPI(100000))
	if err != nil {
		t.Fatal(err)
	}
	if want := r.Subscriber(100000); got.K != want.K || got.OPc != want.OPc || !slices.Equal(got.IMPUs, want.IMPUs) {
		t.Fatalf("subscriber 100000: %v, want %v", got, want)
	}
}

// A running HSS sees what imsec sub does in the database while it runs:
// the CLI opens its own handle, with its own connections, as another
// process does, and the HSS's identity cache and SQN ranges follow.
func TestSubChangesSeenByRunningHSS(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "hss.db")
	addAliceBob(t, db)
	store, err := hss.OpenSQLite(db, hss.SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h, err := hss.New(store, hss.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if impi, err := h.LookupIMPU(ctx, "tel:+15550100"); err != nil || impi != "alice@ims.example" {
		t.Fatalf("LookupIMPU: %q, %v", impi, err)
	}
	if _, err := h.Vector(ctx, "alice@ims.example"); err != nil {
		t.Fatal(err)
	}

	subRun(t, 0, "sub", "del", "--db", db, "--impi", "alice@ims.example")
	if _, err := h.LookupIMPU(ctx, "tel:+15550100"); !errors.Is(err, hss.ErrUnknownIMPU) {
		t.Fatalf("LookupIMPU after sub del: %v", err)
	}
	if _, err := h.Vector(ctx, "alice@ims.example"); !errors.Is(err, hss.ErrUnknownSubscriber) {
		t.Fatalf("Vector after sub del: %v", err)
	}

	file := writeFile(t, dir, "alice.csv", "impi,impu,k,opc\nalice@ims.example,sip:alice@new.example,"+subK2+","+subOPc2+"\n")
	subRun(t, 0, "sub", "import", "--db", db, file)
	if impus, err := h.IMPUs(ctx, "alice@ims.example"); err != nil || fmt.Sprint(impus) != "[sip:alice@new.example]" {
		t.Fatalf("IMPUs after sub import: %q, %v", impus, err)
	}
	if _, err := h.Vector(ctx, "alice@ims.example"); err != nil {
		t.Fatalf("Vector after sub import: %v", err)
	}
}

// BenchmarkSubImport is imsec sub import of 100,000 generated subscribers
// into a new database: reading and checking the CSV, opening the database,
// one transaction. One op is the whole import.
func BenchmarkSubImport(b *testing.B) {
	dir := b.TempDir()
	file := filepath.Join(dir, "ues.csv")
	cli := func(args ...string) {
		var out, errs bytes.Buffer
		if code := run(context.Background(), args, &out, &errs); code != 0 {
			b.Fatalf("imsec %s: exit %d: %s", strings.Join(args, " "), code, errs.String())
		}
	}
	cli("sub", "gen", "--count", "100000", "--domain", "ims.example", "--out", file)
	for i := 0; b.Loop(); i++ {
		cli("sub", "import", "--db", filepath.Join(dir, fmt.Sprintf("hss%d.db", i)), "--quiet", file)
	}
	b.ReportMetric(100000*float64(b.N)/b.Elapsed().Seconds(), "subscribers/s")
}
