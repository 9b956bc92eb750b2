package hss

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"

	"modernc.org/sqlite"
)

// What makes an existing file an imsec subscriber database we can use. Every
// check here only reads; a file that fails one is left as it was (but for
// what SQLite does on its own when the handle closes: remove an empty -wal,
// fold a committed one into the file).

// The SQLite database header (https://www.sqlite.org/fileformat2.html,
// "The Database Header"): 100 bytes, starting with this string.
const (
	sqliteMagic      = "SQLite format 3\x00"
	sqliteHeaderSize = 100
)

// Primary result codes of SQLite (https://www.sqlite.org/rescode.html).
const (
	sqlitePerm     = 3
	sqliteBusy     = 5
	sqliteLocked   = 6
	sqliteNoMem    = 7
	sqliteReadOnly = 8
	sqliteIntr     = 9
	sqliteIOErr    = 10
	sqliteCorrupt  = 11 // SQLITE_CORRUPT: "database disk image is malformed"
	sqliteFull     = 13
	sqliteCantOpen = 14
	sqliteProtocol = 15
	sqliteAuth     = 23
	sqliteNotADB   = 26 // SQLITE_NOTADB: "file is not a database"
)

const restoreHint = "restore it from a backup"

// newHint is what to do with a file that holds no imsec database.
func newHint(path string) string {
	return "if it held subscribers, " + restoreHint +
		"; to start a new database, remove it and run 'imsec sub add --db " + path + " ...'"
}

// checkFile refuses, before SQLite sees it, an existing file that is empty
// or does not start with the SQLite header. SQLite itself would take an
// empty file for a new database and make it one on the first write, which
// turns a truncated database into an empty one that rejects every
// subscriber.
//
// A file OpenSQLite creates is empty only until its first statement (the
// switch to WAL writes the header), so another process opening it in that
// instant is refused too, and succeeds when run again.
func checkFile(f *os.File, size int64, path string) error {
	if size == 0 {
		return fmt.Errorf("%w: %s is empty (0 bytes), not an imsec subscriber database; %s",
			ErrBadDatabase, path, newHint(path))
	}
	var hdr [sqliteHeaderSize]byte
	if size >= sqliteHeaderSize {
		if _, err := f.ReadAt(hdr[:], 0); err != nil {
			return fmt.Errorf("hss: database %s: reading its header: %w", path, err)
		}
	}
	if size < sqliteHeaderSize || string(hdr[:len(sqliteMagic)]) != sqliteMagic {
		return fmt.Errorf("%w: %s is not an SQLite database (%d bytes without the SQLite header); check the path, or %s",
			ErrBadDatabase, path, size, restoreHint)
	}
	if want, pages, pageSize := headerFileSize(hdr); want > size && !exists(path+"-wal") && !exists(path+"-journal") {
		// Without a WAL or journal that holds pages of it, the file is the
		// whole database: one cut short (an interrupted copy, a full
		// disk) is said to be so. SQLite would only call it malformed.
		return fmt.Errorf("%w: %s is truncated: %d bytes, its header says %d (%d pages of %d); %s",
			ErrBadDatabase, path, size, want, pages, pageSize, restoreHint)
	}
	return nil
}

// headerFileSize returns the database size the header records, or 0 if the
// header does not record a valid one: the page count at offset 28 counts
// only if the change counter (offset 24) equals the version-valid-for number
// (offset 92), and the page size at offset 16 is a power of two from 512 to
// 65536 (stored as 1).
func headerFileSize(hdr [sqliteHeaderSize]byte) (size int64, pages uint32, pageSize int64) {
	pageSize = int64(binary.BigEndian.Uint16(hdr[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	if pageSize < 512 || pageSize&(pageSize-1) != 0 {
		return 0, 0, 0
	}
	if !bytes.Equal(hdr[24:28], hdr[92:96]) {
		return 0, 0, 0
	}
	pages = binary.BigEndian.Uint32(hdr[28:32])
	return int64(pages) * pageSize, pages, pageSize
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// check verifies, in one read transaction (WAL readers do not hold up a
// running server's writes), that the file is an imsec database whose
// schema this code knows, with exactly the tables, indexes and triggers
// migrations 1..version make (an added trigger could rewrite SQNs), that SQLite finds nothing wrong with it (PRAGMA
// integrity_check: page structure, every index against its table, NOT NULL,
// CHECK and STRICT types), and that every IMPU belongs to a stored
// subscriber (PRAGMA foreign_key_check). It returns the schema version.
//
// integrity_check rather than the faster quick_check: quick_check does not
// compare indexes with their tables, and a row whose IMPI no longer matches
// its index entry is served under the indexed name. It costs little more:
// on 100,000 subscribers with two IMPUs each (35 MB, 2-core VM,
// BenchmarkOpenSQLiteChecked) integrity_check took 0.4 to 0.6 s, quick_check
// 0.1 to 0.3 s, foreign_key_check 0.15 to 0.2 s, the whole OpenSQLite 0.6 s;
// with 1,000 subscribers OpenSQLite takes 9 ms.
func (s *SQLiteStore) check(ctx context.Context) (version int, err error) {
	want, err := wantSchema()
	if err != nil {
		return 0, fmt.Errorf("hss: building the reference schema: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, s.checkErr("starting to read it", err)
	}
	defer tx.Rollback()
	err = func() error {
		var appID int
		if err := tx.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
			return s.checkErr("reading its header", err)
		}
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
			return s.checkErr("reading its header", err)
		}
		have, err := schemaObjects(ctx, tx)
		if err != nil {
			return s.checkErr("reading its schema", err)
		}
		switch {
		case appID == 0 && version == 0 && len(have) == 0:
			// What a creating process that died before its first commit
			// leaves, or someone's empty file.
			return fmt.Errorf("%w: %s is an SQLite database with nothing in it, not an imsec subscriber database; %s",
				ErrBadDatabase, s.path, newHint(s.path))
		case appID != sqliteAppID:
			return fmt.Errorf("%w: %s is an SQLite database of another application (application_id %#x, %s); check the path",
				ErrBadDatabase, s.path, appID, tableNames(have))
		case version > len(migrations):
			return s.futureErr(version)
		case version < 1:
			// create sets application_id and user_version in one transaction.
			return fmt.Errorf("%w: %s has the imsec application_id but no schema version (user_version %d): damaged or edited by hand; %s",
				ErrBadDatabase, s.path, version, restoreHint)
		}
		if diff := schemaDiff(want[version], have); diff != "" {
			return fmt.Errorf("%w: %s does not have the tables of schema version %d (%s): damaged or edited by hand; %s",
				ErrBadDatabase, s.path, version, diff, restoreHint)
		}
		if err := s.integrityCheck(ctx, tx); err != nil {
			return err
		}
		if err := s.generationCheck(ctx, tx, version); err != nil {
			return err
		}
		return s.foreignKeyCheck(ctx, tx)
	}()
	return version, err
}

func (s *SQLiteStore) futureErr(version int) error {
	return fmt.Errorf("%w: %s has schema version %d, this imsec knows up to %d (upgrade imsec)",
		ErrBadDatabase, s.path, version, len(migrations))
}

func (s *SQLiteStore) integrityCheck(ctx context.Context, tx *sql.Tx) error {
	problems, err := pragmaLines(ctx, tx, "PRAGMA integrity_check")
	if err != nil {
		return s.checkErr("PRAGMA integrity_check", err)
	}
	if len(problems) == 1 && problems[0] == "ok" {
		return nil
	}
	return fmt.Errorf("%w: %s is damaged: PRAGMA integrity_check reports %s; %s",
		ErrBadDatabase, s.path, firstFew(problems, 3), restoreHint)
}

// generationCheck requires the one row of identity_generation (schema
// version 2 on) that the triggers count in: without it no change would be
// counted, and the caches of processes using the file would never learn of
// one.
func (s *SQLiteStore) generationCheck(ctx context.Context, tx *sql.Tx, version int) error {
	if version < 2 {
		return nil
	}
	var rows int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM identity_generation").Scan(&rows); err != nil {
		return s.checkErr("reading identity_generation", err)
	}
	if rows != 1 {
		return fmt.Errorf("%w: %s has %d rows in identity_generation, want 1: damaged or edited by hand; %s",
			ErrBadDatabase, s.path, rows, restoreHint)
	}
	return nil
}

func (s *SQLiteStore) foreignKeyCheck(ctx context.Context, tx *sql.Tx) error {
	const fkCheck = "PRAGMA foreign_key_check"
	rows, err := tx.QueryContext(ctx, "SELECT \"table\", rowid, parent FROM pragma_foreign_key_check")
	if err != nil {
		return s.checkErr(fkCheck, err)
	}
	defer rows.Close()
	var (
		n             int
		first         string
		table, parent string
		rowid         sql.NullInt64
	)
	for rows.Next() {
		if err := rows.Scan(&table, &rowid, &parent); err != nil {
			return s.checkErr(fkCheck, err)
		}
		if n == 0 {
			first = fmt.Sprintf("%s row %d refers to a missing %s", table, rowid.Int64, parent)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return s.checkErr(fkCheck, err)
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s is inconsistent: PRAGMA foreign_key_check finds %d dangling reference(s), the first: %s; damaged or edited by hand; %s",
		ErrBadDatabase, s.path, n, first, restoreHint)
}

// checkErr describes a step of the check that SQLite could not finish. The
// statements are fixed, so an SQLite error other than one of the
// environment (locks, I/O, memory, permissions) comes from the file: a
// damaged database makes a check fail rather than report, and a header
// SQLite does not support gives "unsupported file format".
func (s *SQLiteStore) checkErr(step string, err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlitePerm, sqliteBusy, sqliteLocked, sqliteNoMem, sqliteReadOnly, sqliteIntr,
			sqliteIOErr, sqliteFull, sqliteCantOpen, sqliteProtocol, sqliteAuth:
		default:
			return fmt.Errorf("%w: %s is damaged: %s fails: %v; %s", ErrBadDatabase, s.path, step, err, restoreHint)
		}
	}
	return fmt.Errorf("hss: %s: %s: %w", s.path, step, err)
}

// queryer is *sql.Tx or *sql.Conn.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// pragmaLines returns the one-column result of a PRAGMA as text.
func pragmaLines(ctx context.Context, q queryer, pragma string) ([]string, error) {
	rows, err := q.QueryContext(ctx, pragma)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil, err
		}
		out = append(out, line)
	}
	return out, rows.Err()
}

// firstFew quotes up to n lines and counts the rest.
func firstFew(lines []string, n int) string {
	if len(lines) == 0 {
		return "nothing, not even ok"
	}
	shown := lines[:min(n, len(lines))]
	q := make([]string, len(shown))
	for i, l := range shown {
		q[i] = fmt.Sprintf("%q", l)
	}
	out := strings.Join(q, ", ")
	if more := len(lines) - len(shown); more > 0 {
		out += fmt.Sprintf(" and %d more", more)
	}
	return out
}

// schemaObject is one row of sqlite_schema: a table, index, view or trigger.
type schemaObject struct {
	typ, name, table, sql string // sql is "" for the automatic indexes
}

// schemaObjects lists a database's schema by name, leaving out the
// statistics tables that ANALYZE or PRAGMA optimize may add.
func schemaObjects(ctx context.Context, q queryer) (map[string]schemaObject, error) {
	rows, err := q.QueryContext(ctx,
		"SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_stat%' ESCAPE '\\'")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]schemaObject{}
	for rows.Next() {
		var o schemaObject
		var text sql.NullString
		if err := rows.Scan(&o.typ, &o.name, &o.table, &text); err != nil {
			return nil, err
		}
		o.sql = text.String
		out[o.name] = o
	}
	return out, rows.Err()
}

// wantSchema returns, for each version v, the schema migrations 1..v make,
// built once in an in-memory database so that it cannot drift from them.
var wantSchema = sync.OnceValues(func() ([]map[string]schemaObject, error) {
	ctx := context.Background()
	db, err := sql.Open("sqlite", ":memory:")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	conn, err := db.Conn(ctx) // one connection, one in-memory database
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	out := []map[string]schemaObject{{}}
	for _, stmts := range migrations {
		for _, stmt := range stmts {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return nil, err
			}
		}
		objs, err := schemaObjects(ctx, conn)
		if err != nil {
			return nil, err
		}
		out = append(out, objs)
	}
	return out, nil
})

// schemaDiff describes how have differs from want ("" if it does not).
func schemaDiff(want, have map[string]schemaObject) string {
	var diffs []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		w := want[name]
		h, ok := have[name]
		switch {
		case !ok:
			diffs = append(diffs, "missing "+w.typ+" "+name)
		case h != w:
			diffs = append(diffs, "changed "+w.typ+" "+name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if _, ok := want[name]; !ok {
			diffs = append(diffs, "unexpected "+have[name].typ+" "+name)
		}
	}
	return strings.Join(diffs, ", ")
}

// tableNames describes the tables of a foreign database, for the operator
// to recognise it.
func tableNames(objs map[string]schemaObject) string {
	var tables []string
	for _, name := range slices.Sorted(maps.Keys(objs)) {
		if objs[name].typ == "table" {
			tables = append(tables, name)
		}
	}
	switch {
	case len(tables) == 0:
		return "no tables"
	case len(tables) > 5:
		return fmt.Sprintf("tables %s and %d more", strings.Join(tables[:5], ", "), len(tables)-5)
	}
	return "tables " + strings.Join(tables, ", ")
}
