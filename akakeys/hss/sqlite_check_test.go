package hss

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

// v1Fixture is a database written by the code of commit 861c03c, before the
// checks on open: alice (OP), bob (OPc), one vector drawn for alice.
const v1Fixture = "testdata/v1-by-861c03c.db"

// copyFixture copies a database file to a fresh directory, so that opening
// it neither changes testdata nor leaves -wal/-shm files there.
func copyFixture(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "hss.db")
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// validDB makes a closed database (checkpointed: no -wal) holding alice, bob
// and extra more subscribers.
func validDB(t *testing.T, extra int) string {
	t.Helper()
	s, path := openTemp(t)
	ctx := context.Background()
	subs := []Subscriber{alice(), bob()}
	for i := range extra {
		c := bob()
		c.IMPI = fmt.Sprintf("user%04d@ims.example", i)
		c.IMPUs = []string{"sip:" + c.IMPI}
		subs = append(subs, c)
	}
	for _, sub := range subs {
		if err := s.Add(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// rawEdit runs statements on the file as someone with the sqlite3 shell
// would (foreign keys and CHECK constraints off), then closes it.
func rawEdit(t *testing.T, path string, stmts ...string) {
	t.Helper()
	db := rawDB(t, path)
	defer db.Close()
	for _, stmt := range append([]string{"PRAGMA foreign_keys = OFF", "PRAGMA ignore_check_constraints = ON"}, stmts...) {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}

// tablePage returns the offset and size of the root page of a table (a leaf
// for our few rows).
func tablePage(t *testing.T, path, table string) (off, size int) {
	t.Helper()
	db := rawDB(t, path)
	defer db.Close()
	var root int
	if err := db.QueryRow("SELECT rootpage FROM sqlite_schema WHERE name = ?", table).Scan(&root); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("PRAGMA page_size").Scan(&size); err != nil {
		t.Fatal(err)
	}
	return (root - 1) * size, size
}

// flip xors one byte of the file, chosen by pick from the page of table.
func flip(t *testing.T, path, table string, mask byte, pick func(page []byte) int) {
	t.Helper()
	off, size := tablePage(t, path, table)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := pick(b[off : off+size])
	if i < 0 {
		t.Fatalf("nothing to flip in table %s", table)
	}
	b[off+i] ^= mask
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// fileState is what "left as it was" compares: contents, mode, and which
// sidecar files exist.
type fileState struct {
	data     []byte
	mode     os.FileMode
	sidecars []string
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var side []string
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if _, err := os.Stat(path + suffix); err == nil {
			side = append(side, suffix)
		}
	}
	return fileState{b, fi.Mode(), side}
}

// assertRefused requires OpenSQLite to fail with ErrBadDatabase, naming the
// file and every want, and to leave the file as it was.
func assertRefused(t *testing.T, path string, opts SQLiteOptions, want ...string) {
	t.Helper()
	before := stateOf(t, path)
	s, err := OpenSQLite(path, opts)
	if err == nil {
		s.Close()
		t.Fatalf("opened; want ErrBadDatabase naming %q", want)
	}
	if !errors.Is(err, ErrBadDatabase) {
		t.Errorf("error %q does not wrap ErrBadDatabase", err)
	}
	msg := err.Error()
	t.Log(msg)
	for _, w := range append([]string{path}, want...) {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q lacks %q", msg, w)
		}
	}
	assertNoKeys(t, "error", msg)
	after := stateOf(t, path)
	if !bytes.Equal(before.data, after.data) {
		t.Errorf("refused file was changed (%d bytes before, %d after)", len(before.data), len(after.data))
	}
	if before.mode != after.mode {
		t.Errorf("refused file's mode changed from %v to %v", before.mode, after.mode)
	}
	// SQLite may remove an empty -wal it finds, but nothing may appear.
	for _, s := range after.sidecars {
		if !slices.Contains(before.sidecars, s) {
			t.Errorf("refusing left a %s file behind (before: %q)", s, before.sidecars)
		}
	}
}

func TestSQLiteRefusesBadDatabases(t *testing.T) {
	aliceRow := func(page []byte) int { return bytes.Index(page, []byte(alice().IMPI)) }
	cases := []struct {
		name string
		make func(t *testing.T) string // returns the path of the bad file
		want []string
	}{
		{"empty file", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "hss.db")
			os.WriteFile(p, nil, 0o600)
			return p
		}, []string{"is empty (0 bytes)", "imsec sub add --db"}},

		{"random bytes", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "hss.db")
			b := make([]byte, 8192)
			r := rand.NewChaCha8([32]byte{1})
			r.Read(b)
			os.WriteFile(p, b, 0o640)
			return p
		}, []string{"not an SQLite database", "8192 bytes without the SQLite header"}},

		{"cut in half", func(t *testing.T) string {
			p := validDB(t, 30)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o600)
			return p
		}, []string{"is truncated: ", "bytes, its header says ", "restore it from a backup"}},

		// Cut in half while a -wal file lies beside it: the header's page
		// count is not evidence then, and SQLite finds the damage.
		{"cut in half, WAL beside", func(t *testing.T) string {
			p := validDB(t, 30)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o600)
			os.WriteFile(p+"-wal", nil, 0o600)
			return p
		}, []string{"is damaged: ", "malformed", "restore it from a backup"}},

		// A flipped bit in alice's IMPI in the table row: the row no longer
		// matches its entry in the primary key's index, and lookups by
		// IMPI, served from the index, would still find it as alice.
		// quick_check does not compare indexes with tables; integrity_check
		// does.
		{"flipped byte in a row", func(t *testing.T) string {
			p := validDB(t, 0)
			flip(t, p, "subscriber", 0x02, aliceRow)
			return p
		}, []string{"is damaged: PRAGMA integrity_check reports", "missing from index sqlite_autoindex_subscriber_1"}},

		// A flipped bit in the b-tree page header (page type 0x0d, leaf of
		// a table): the page no longer parses. Opening reads only page 1,
		// so without the check this surfaced at the first lookup.
		{"flipped byte in a page header", func(t *testing.T) string {
			p := validDB(t, 0)
			flip(t, p, "subscriber", 0x01, func(page []byte) int { return 0 })
			return p
		}, []string{"is damaged", "integrity_check"}},

		{"CHECK violated by hand", func(t *testing.T) string {
			p := validDB(t, 0)
			rawEdit(t, p, "UPDATE subscriber SET k = X'01' WHERE impi = 'bob@ims.example'")
			return p
		}, []string{"is damaged: PRAGMA integrity_check reports", "CHECK constraint failed in subscriber"}},

		{"IMPU of a deleted subscriber", func(t *testing.T) string {
			p := validDB(t, 0)
			rawEdit(t, p, "DELETE FROM subscriber WHERE impi = 'bob@ims.example'")
			return p
		}, []string{"foreign_key_check finds 1 dangling reference", "impu row", "missing subscriber"}},

		{"another application's database", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "other.db")
			db := rawDB(t, p)
			defer db.Close()
			// Rollback journal (the default): switching it to WAL would
			// change the file, as OpenSQLite did before it checked first.
			if _, err := db.Exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('hello')"); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"another application", "application_id 0x0, tables notes"}},

		{"empty SQLite database", func(t *testing.T) string {
			// What a process creating the file leaves if it dies between
			// the switch to WAL and its first commit.
			p := filepath.Join(t.TempDir(), "hss.db")
			db := rawDB(t, p)
			defer db.Close()
			if _, err := db.Exec("PRAGMA journal_mode = WAL"); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"SQLite database with nothing in it", "imsec sub add --db"}},

		{"schema from the future", func(t *testing.T) string {
			p := validDB(t, 0)
			rawEdit(t, p, fmt.Sprintf("PRAGMA user_version = %d", len(migrations)+1))
			return p
		}, []string{fmt.Sprintf("schema version %d, this imsec knows up to %d (upgrade imsec)", len(migrations)+1, len(migrations))}},

		{"our mark without a version", func(t *testing.T) string {
			p := validDB(t, 0)
			rawEdit(t, p, "PRAGMA user_version = 0")
			return p
		}, []string{"imsec application_id but no schema version"}},

		{"table dropped", func(t *testing.T) string {
			p := validDB(t, 0)
			rawEdit(t, p, "DROP TABLE impu")
			return p
		}, []string{fmt.Sprintf("does not have the tables of schema version %d", len(migrations)), "missing index impu_by_impi", "missing table impu"}},

		// Without its triggers or its row, the identity generation would
		// not move, and running HSSs would serve deleted subscribers from
		// their caches.
		{"generation trigger dropped", func(t *testing.T) string {
			p := validDB(t, 0)
			rawEdit(t, p, "DROP TRIGGER impu_deleted")
			return p
		}, []string{"missing trigger impu_deleted"}},

		{"generation row deleted", func(t *testing.T) string {
			p := validDB(t, 0)
			rawEdit(t, p, "DELETE FROM identity_generation")
			return p
		}, []string{"0 rows in identity_generation, want 1", "edited by hand"}},

		{"table changed", func(t *testing.T) string {
			p := validDB(t, 0)
			rawEdit(t, p, "ALTER TABLE subscriber ADD COLUMN note TEXT")
			return p
		}, []string{"changed table subscriber"}},

		{"trigger added", func(t *testing.T) string {
			p := validDB(t, 0)
			rawEdit(t, p, "CREATE TRIGGER keep_sqn BEFORE UPDATE OF sqn ON subscriber BEGIN SELECT RAISE(IGNORE); END")
			return p
		}, []string{"unexpected trigger keep_sqn"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, opts := range []SQLiteOptions{{}, {MustExist: true}} {
				path := c.make(t)
				assertRefused(t, path, opts, c.want...)
			}
		})
	}
}

// Every prefix of a valid database (at and around each 256-byte boundary,
// pages being 4096) is refused, never opened as a smaller database.
func TestSQLiteRefusesEveryPrefix(t *testing.T) {
	full, err := os.ReadFile(v1Fixture)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hss.db")
	for n := 0; n < len(full); n++ {
		if d := n % 256; d > 1 && d < 255 && n > sqliteHeaderSize+1 {
			continue
		}
		if err := os.WriteFile(path, full[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
		if err == nil {
			s.Close()
			t.Fatalf("prefix of %d of %d bytes opened", n, len(full))
		}
		if !errors.Is(err, ErrBadDatabase) {
			t.Fatalf("prefix of %d bytes: %v, want ErrBadDatabase", n, err)
		}
	}
}

// A database written before the checks existed (schema version 1, stamped
// with application_id and user_version by that code already) opens as it
// is, with its subscribers and SQN state.
func TestSQLiteOpensDatabaseOfPreviousCode(t *testing.T) {
	path := copyFixture(t, v1Fixture)
	s, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	subs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 2 || subs[0].IMPI != alice().IMPI || subs[1].IMPI != bob().IMPI {
		t.Fatalf("subscribers %v", subs)
	}
	if a := subs[0]; a.OP == nil || *a.OP != op1 || a.K != k1 || a.SQN.Uint64()>>akakeys.DefaultIndBits != 1 {
		t.Errorf("alice: OP %v, K matches %v, SQN %x (want SEQ 1)", a.OP != nil, a.K == k1, a.SQN[:])
	}
	if b := subs[1]; b.OPc != opc2 || b.SQN.Uint64() != 0x1e0 {
		t.Errorf("bob: OPc matches %v, SQN %x", b.OPc == opc2, b.SQN[:])
	}
	h, _ := New(s, Config{})
	if _, err := h.Vector(ctx, bob().IMPI); err != nil {
		t.Fatal(err)
	}
}

// ANALYZE's statistics table is not part of our schema and not a reason to
// refuse the file.
func TestSQLiteAcceptsStatistics(t *testing.T) {
	path := validDB(t, 0)
	rawEdit(t, path, "ANALYZE")
	s, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// A file that does not exist is still created by a caller that asks for it,
// and checked like any other on the next open.
func TestSQLiteCreatesOnlyMissingFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	s, err := OpenSQLite(path, SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(context.Background(), alice()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenSQLite(path, SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// Whatever the file holds, OpenSQLite returns a store or an error, and the
// error is ErrBadDatabase: no panic, no other failure.
func FuzzOpenSQLite(f *testing.F) {
	full, err := os.ReadFile(v1Fixture)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(full)
	f.Add(full[:len(full)/2])
	f.Add(full[:sqliteHeaderSize])
	f.Add([]byte{})
	f.Add([]byte(sqliteMagic))
	path := filepath.Join(f.TempDir(), "hss.db")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			os.Remove(path + suffix)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
		if err != nil {
			if !errors.Is(err, ErrBadDatabase) {
				t.Fatalf("%v, want ErrBadDatabase", err)
			}
			return
		}
		defer s.Close()
		if _, err := s.List(context.Background()); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("List of a checked database: %v", err)
		}
	})
}
