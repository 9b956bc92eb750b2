package hss

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

func TestSQLiteOpenErrors(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()

	missing := filepath.Join(dir, "missing.db")
	if _, err := OpenSQLite(missing, SQLiteOptions{MustExist: true}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("MustExist on a missing file: %v", err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("MustExist created the file")
	}

	if _, err := OpenSQLite("", SQLiteOptions{}); err == nil {
		t.Error("empty path accepted")
	}
	if _, err := OpenSQLite(filepath.Join(dir, "a?b.db"), SQLiteOptions{}); err == nil {
		t.Error("path with '?' accepted")
	}
	if _, err := OpenSQLite(dir, SQLiteOptions{}); err == nil {
		t.Error("directory accepted as a database")
	}

	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, []byte(strings.Repeat("this is not a database\n", 100)), 0o600)
	if _, err := OpenSQLite(text, SQLiteOptions{}); !errors.Is(err, ErrNotDatabase) {
		t.Errorf("text file: %v, want ErrNotDatabase", err)
	}

	// Another application's SQLite file is refused and left alone.
	other := filepath.Join(dir, "other.db")
	db, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (x)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := OpenSQLite(other, SQLiteOptions{}); !errors.Is(err, ErrNotDatabase) || !strings.Contains(err.Error(), "another application") {
		t.Errorf("foreign SQLite file: %v", err)
	}

	// A schema from the future is refused, not downgraded.
	_, path := openTemp(t)
	raw := rawDB(t, path)
	if _, err := raw.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1)); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if _, err := OpenSQLite(path, SQLiteOptions{}); !errors.Is(err, ErrNotDatabase) || !strings.Contains(err.Error(), "upgrade imsec") {
		t.Errorf("newer schema: %v", err)
	}
}

func TestSQLiteSchemaVersion(t *testing.T) {
	s, path := openTemp(t)
	s.Close()
	raw := rawDB(t, path)
	defer raw.Close()
	var v, app int
	var mode string
	raw.QueryRow("PRAGMA user_version").Scan(&v)
	raw.QueryRow("PRAGMA application_id").Scan(&app)
	raw.QueryRow("PRAGMA journal_mode").Scan(&mode)
	if v != len(migrations) || app != sqliteAppID || mode != "wal" {
		t.Fatalf("user_version %d application_id %#x journal_mode %s", v, app, mode)
	}
	// Reopening an up-to-date file runs no migration and keeps the data.
	s2, err := OpenSQLite(path, SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}

// rawDB opens the file with the driver directly, as someone with the sqlite3
// shell would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

func TestSQLiteCorruptRows(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, sql, msg string
	}{
		{"short K", "UPDATE subscriber SET k = X'0102' WHERE impi = ?", "K is 2 bytes, want 16"},
		{"long OPc", "UPDATE subscriber SET opc = zeroblob(17) WHERE impi = ?", "OPc is 17 bytes, want 16"},
		{"empty K", "UPDATE subscriber SET k = X'' WHERE impi = ?", "K is 0 bytes"},
		{"short OP", "UPDATE subscriber SET op = X'00' WHERE impi = ?", "OP is 1 bytes"},
		{"OP not matching", "UPDATE subscriber SET op = zeroblob(16) WHERE impi = ?", "OPc does not match OP"},
		{"AMF", "UPDATE subscriber SET amf = X'800000' WHERE impi = ?", "AMF is 3 bytes"},
		{"SQN range", "UPDATE subscriber SET sqn = 281474976710656 WHERE impi = ?", "not a 48-bit number"},
		{"negative resyncs", "UPDATE subscriber SET resyncs = -1 WHERE impi = ?", "negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, path := openTemp(t)
			h, _ := New(s, Config{})
			a := alice()
			if err := s.Add(ctx, a); err != nil {
				t.Fatal(err)
			}
			raw := rawDB(t, path)
			defer raw.Close()
			// The schema's CHECKs refuse this; a hand edit can turn them off.
			if _, err := raw.Exec(c.sql, a.IMPI); err == nil && !strings.Contains(c.name, "OP not") {
				t.Fatalf("schema CHECK let %q through", c.sql)
			}
			if _, err := raw.Exec("PRAGMA ignore_check_constraints = ON"); err != nil {
				t.Fatal(err)
			}
			if _, err := raw.Exec(c.sql, a.IMPI); err != nil {
				t.Fatalf("corrupting: %v", err)
			}
			_, err := s.Get(ctx, a.IMPI)
			checkCorrupt(t, "Get", err, c.msg)
			_, err = s.List(ctx)
			checkCorrupt(t, "List", err, c.msg)
			_, err = h.Vector(ctx, a.IMPI)
			checkCorrupt(t, "Vector", err, c.msg)
		})
	}
}

func checkCorrupt(t *testing.T, op string, err error, msg string) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), `"alice@ims.example"`) {
		t.Errorf("%s: %v, want ErrCorrupt naming alice and %q", op, err, msg)
		return
	}
	assertNoKeys(t, op, err.Error())
}

// drawVectors draws n vectors for impi from h, verifying each against a
// slow recomputation, and returns their SQNs.
func drawVectors(t testing.TB, h *HSS, impi string, m *akakeys.Milenage, n int) ([]uint64, error) {
	out := make([]uint64, 0, n)
	for range n {
		v, err := h.Vector(context.Background(), impi)
		if err != nil {
			return out, err
		}
		if want := m.Vector(v.RAND, v.SQN, v.AMF); want != v {
			return out, fmt.Errorf("vector for SQN %x does not recompute", v.SQN)
		}
		out = append(out, v.SQN.Uint64())
	}
	return out, nil
}

// concurrentDraw runs workers goroutines, each drawing per vectors from one
// of hs (round robin), and returns all SQNs.
func concurrentDraw(t *testing.T, hs []*HSS, impi string, workers, per int) []uint64 {
	t.Helper()
	m := akakeys.NewMilenage(k1, opc1)
	var mu sync.Mutex
	var all []uint64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			sqns, err := drawVectors(t, hs[w%len(hs)], impi, m, per)
			mu.Lock()
			all = append(all, sqns...)
			mu.Unlock()
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return all
}

// checkSQNs requires all SQNs distinct, each above floor, each with SEQ
// strictly greater than floor's.
func checkSQNs(t *testing.T, sqns []uint64, floor uint64) (max uint64) {
	t.Helper()
	seen := make(map[uint64]bool, len(sqns))
	max = floor
	for _, q := range sqns {
		if seen[q] {
			t.Fatalf("SQN %012x issued twice", q)
		}
		seen[q] = true
		if q>>akakeys.DefaultIndBits <= floor>>akakeys.DefaultIndBits {
			t.Fatalf("SQN %012x not above %012x", q, floor)
		}
		if q > max {
			max = q
		}
	}
	return max
}

func TestSQLiteConcurrentVectorsNeverRepeatSQN(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	if err := s.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	h, _ := New(s, Config{})
	const workers, per = 16, 50
	sqns := concurrentDraw(t, []*HSS{h}, alice().IMPI, workers, per)
	if len(sqns) != workers*per {
		t.Fatalf("%d vectors, want %d", len(sqns), workers*per)
	}
	max := checkSQNs(t, sqns, 0)
	// Each vector took exactly one SEQ step: SEQ runs 1..800.
	if seq := max >> akakeys.DefaultIndBits; seq != workers*per {
		t.Fatalf("highest SEQ %d, want %d", seq, workers*per)
	}

	// Close and reopen: the counter continues above everything issued.
	s.Close()
	s2, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	h2, _ := New(s2, Config{})
	more := concurrentDraw(t, []*HSS{h2}, alice().IMPI, 4, 10)
	checkSQNs(t, append(more, sqns...), 0)
	checkSQNs(t, more, max)
}

func TestSQLiteTwoHandlesOneFile(t *testing.T) {
	s1, path := openTemp(t)
	ctx := context.Background()
	if err := s1.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	s2, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	h1, _ := New(s1, Config{})
	h2, _ := New(s2, Config{})
	// Two *sql.DB handles with their own pools and write semaphores: they
	// meet only at SQLite's file lock, as two processes would. Each HSS
	// issues from ranges of its own; the unissued rest of the last range
	// of each, at most DefaultReserve-1 SEQ values, is all that is skipped.
	sqns := concurrentDraw(t, []*HSS{h1, h2}, alice().IMPI, 8, 40)
	max := checkSQNs(t, sqns, 0)
	if seq := max >> akakeys.DefaultIndBits; seq < 8*40 || seq > 8*40+2*(DefaultReserve-1) {
		t.Fatalf("highest SEQ %d, want %d to %d", seq, 8*40, 8*40+2*(DefaultReserve-1))
	}
}

// The helper process: when HSS_TEST_HELPER_DB is set, this "test" draws
// HSS_TEST_HELPER_N vectors (0: until killed) and prints each SQN in hex on
// its own line once Vector has returned.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv("HSS_TEST_HELPER_DB")
	if path == "" {
		return // not the helper: nothing to do
	}
	n, _ := strconv.Atoi(os.Getenv("HSS_TEST_HELPER_N"))
	s, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	h, _ := New(s, Config{})
	for i := 0; n == 0 || i < n; i++ {
		v, err := h.Vector(context.Background(), alice().IMPI)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
		fmt.Fprintf(os.Stdout, "%x\n", v.SQN[:]) // one write per line
	}
	s.Close()
	os.Exit(0)
}

func helper(t *testing.T, path string, n int) (*exec.Cmd, io.ReadCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "HSS_TEST_HELPER_DB="+path, "HSS_TEST_HELPER_N="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out
}

// readSQNs reads whole lines of 12 hex digits; a torn last line is dropped.
func readSQNs(t *testing.T, r io.Reader, stopAfter int, stop func()) []uint64 {
	t.Helper()
	var out []uint64
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return out
		}
		b, herr := hex.DecodeString(strings.TrimSpace(line))
		if herr != nil || len(b) != 6 {
			t.Fatalf("helper printed %q", line)
		}
		out = append(out, akakeys.SQN(b).Uint64())
		if len(out) == stopAfter && stop != nil {
			stop()
		}
	}
}

func TestSQLiteSeveralProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts helper processes; skipped with -short")
	}
	s, path := openTemp(t)
	ctx := context.Background()
	if err := s.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	h, _ := New(s, Config{})
	const n = 60
	var wg sync.WaitGroup
	results := make([][]uint64, 2)
	for i := range results {
		cmd, out := helper(t, path, n)
		wg.Go(func() {
			results[i] = readSQNs(t, out, 0, nil)
			if err := cmd.Wait(); err != nil {
				t.Errorf("helper %d: %v", i, err)
			}
		})
	}
	local := concurrentDraw(t, []*HSS{h}, alice().IMPI, 2, n)
	wg.Wait()
	all := append(local, results[0]...)
	all = append(all, results[1]...)
	if len(all) != 4*n {
		t.Fatalf("%d vectors, want %d", len(all), 4*n)
	}
	checkSQNs(t, all, 0)
}

func TestSQLiteCrashKeepsIssuedSQNs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a helper process; skipped with -short")
	}
	s, path := openTemp(t)
	ctx := context.Background()
	if err := s.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The helper draws vectors in a loop until it is killed (SIGKILL: no
	// deferred code, no clean close), mid-transaction or not.
	cmd, out := helper(t, path, 0)
	issued := readSQNs(t, out, 40, func() { cmd.Process.Kill() })
	cmd.Wait()
	if len(issued) < 40 {
		t.Fatalf("helper printed only %d SQNs", len(issued))
	}
	max := checkSQNs(t, issued, 0)

	s2, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer s2.Close()
	h, _ := New(s2, Config{})
	after, err := drawVectors(t, h, alice().IMPI, akakeys.NewMilenage(k1, opc1), 20)
	if err != nil {
		t.Fatal(err)
	}
	// Every SQN the crashed process handed out is below every new one.
	checkSQNs(t, after, max)
}
