package hss

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite"

	"github.com/imsec/imsec/akakeys"
)

// SQLiteOptions configures OpenSQLite. The zero value is the default.
type SQLiteOptions struct {
	// MustExist makes OpenSQLite fail instead of creating an empty
	// database when the file does not exist (for read-mostly commands,
	// where a mistyped path should not silently make a new file).
	MustExist bool
	// BusyTimeout is how long a write waits for another process holding
	// the database's write lock; zero means 10 seconds.
	BusyTimeout time.Duration
}

// SQLiteStore is a Store in one SQLite file (modernc.org/sqlite, pure Go),
// safe for concurrent use by goroutines and by several processes opening the
// same file.
//
// The file is created with mode 0600, and an existing file, -wal or -shm
// readable by group or others is tightened to 0600 on open (SQLite gives
// -wal and -shm the mode of the database file). It runs in WAL mode with
// synchronous=FULL, so a committed SQN survives a crash or power loss, and
// with secure_delete, so a deleted subscriber's keys are overwritten in the
// database file. Every write is one BEGIN IMMEDIATE transaction: it takes
// the file's write lock first, so concurrent read-modify-writes serialise
// across processes (waiting up to BusyTimeout). UpdateSQN calls waiting at
// the same time share one transaction (sqlite_sqn.go). Statements are
// prepared once (sqlite_stmts.go).
//
// The schema version is PRAGMA user_version, upgraded on open by the
// migrations in this file; PRAGMA application_id marks the file as ours.
// An existing file is checked before anything is written to it (see
// checkFile and check in sqlite_check.go): an empty file, one that is not
// SQLite, another application's, one of an unknown schema version or with
// tables missing or changed, and a damaged one (PRAGMA integrity_check,
// foreign_key_check) are refused with ErrBadDatabase, so a server never runs
// on a database that silently lost its subscribers.
type SQLiteStore struct {
	db   *sql.DB
	path string
	// wsem serialises this handle's write transactions, so goroutines of
	// one process queue here (in order, cancellable) rather than spinning
	// in SQLite's busy handler; other handles and processes meet at
	// SQLite's lock.
	wsem chan struct{}
	stmt *sqliteStmts // prepared once the schema is current; read-only after open
	sqnq sqnQueue     // UpdateSQN calls waiting for a group commit (sqlite_sqn.go)
}

var (
	_ Store        = (*SQLiteStore)(nil)
	_ Generational = (*SQLiteStore)(nil)
)

// sqliteAppID is PRAGMA application_id of our files: "IMSE".
const sqliteAppID = 0x494d5345

// migrations[i] upgrades the schema from version i to i+1. Append only;
// never edit a migration that has shipped: the check on open compares a
// file's schema with the text these statements make (wantSchema), and
// TestSQLiteOpensDatabaseOfPreviousCode opens a file made by shipped code.
var migrations = [][]string{
	// 1: subscribers and their IMPUs.
	{
		`CREATE TABLE subscriber (
			impi        TEXT    NOT NULL PRIMARY KEY,
			k           BLOB    NOT NULL CHECK (length(k) = 16),
			opc         BLOB    NOT NULL CHECK (length(opc) = 16),
			op          BLOB             CHECK (op IS NULL OR length(op) = 16),
			amf         BLOB    NOT NULL CHECK (length(amf) = 2),
			sqn         INTEGER NOT NULL CHECK (sqn BETWEEN 0 AND 281474976710655),
			resyncs     INTEGER NOT NULL DEFAULT 0 CHECK (resyncs >= 0),
			last_resync INTEGER -- Unix milliseconds; NULL if never
		) STRICT`,
		`CREATE TABLE impu (
			impu TEXT    NOT NULL PRIMARY KEY,
			impi TEXT    NOT NULL REFERENCES subscriber(impi) ON DELETE CASCADE,
			pos  INTEGER NOT NULL -- order given at provisioning; 0 is the default IMPU
		) STRICT`,
		`CREATE INDEX impu_by_impi ON impu(impi, pos)`,
	},
	// 2: a counter of identity changes, for the caches of Generation.
	// Triggers move it, so that every writer does, imsec or not (a hand
	// edit in the sqlite3 shell too); an SQN update does not.
	{
		`CREATE TABLE identity_generation (
			id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
			n  INTEGER NOT NULL CHECK (n >= 0)
		) STRICT`,
		`INSERT INTO identity_generation (id, n) VALUES (1, 0)`,
		`CREATE TRIGGER subscriber_added AFTER INSERT ON subscriber
			BEGIN UPDATE identity_generation SET n = n + 1 WHERE id = 1; END`,
		`CREATE TRIGGER subscriber_deleted AFTER DELETE ON subscriber
			BEGIN UPDATE identity_generation SET n = n + 1 WHERE id = 1; END`,
		`CREATE TRIGGER subscriber_rekeyed AFTER UPDATE OF impi, k, opc, op, amf ON subscriber
			BEGIN UPDATE identity_generation SET n = n + 1 WHERE id = 1; END`,
		`CREATE TRIGGER impu_added AFTER INSERT ON impu
			BEGIN UPDATE identity_generation SET n = n + 1 WHERE id = 1; END`,
		`CREATE TRIGGER impu_deleted AFTER DELETE ON impu
			BEGIN UPDATE identity_generation SET n = n + 1 WHERE id = 1; END`,
		`CREATE TRIGGER impu_changed AFTER UPDATE ON impu
			BEGIN UPDATE identity_generation SET n = n + 1 WHERE id = 1; END`,
	},
}

// OpenSQLite opens (creating it unless opts.MustExist) the subscriber
// database at path and upgrades its schema. Only a file that does not exist
// is created; an existing file, even an empty one, must pass the checks on
// open or OpenSQLite fails with ErrBadDatabase and leaves it as it was. The
// checks read the whole file (PRAGMA integrity_check): about 0.6 s for
// 100,000 subscribers.
func OpenSQLite(path string, opts SQLiteOptions) (*SQLiteStore, error) {
	if path == "" {
		return nil, errors.New("hss: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("hss: database path %q: %w", path, err)
	}
	if strings.ContainsRune(abs, '?') {
		// The driver would take what follows '?' as connection parameters.
		return nil, fmt.Errorf("hss: database path %q must not contain '?'", path)
	}
	created, err := prepareFile(abs, opts.MustExist)
	if err != nil {
		return nil, err
	}
	busy := opts.BusyTimeout
	if busy <= 0 {
		busy = 10 * time.Second
	}
	// Per-connection settings; the driver applies them to every connection
	// of the pool. _txlock=immediate makes every read-write BeginTx a BEGIN
	// IMMEDIATE (read-only ones stay deferred).
	dsn := abs + "?_txlock=immediate" +
		"&_pragma=busy_timeout(" + strconv.FormatInt(busy.Milliseconds(), 10) + ")" +
		"&_pragma=foreign_keys(1)" +
		"&_pragma=synchronous(FULL)" +
		"&_pragma=secure_delete(1)" +
		// Statement journals in memory, not in temporary files: every
		// INSERT that fires the identity_generation triggers needs one,
		// and as files they cost two thirds of a bulk import in pwrite
		// calls (BenchmarkAddAll).
		"&_pragma=temp_store(2)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("hss: open %s: %w", abs, err)
	}
	s := &SQLiteStore{db: db, path: abs, wsem: make(chan struct{}, 1)}
	ctx := context.Background()
	if created {
		err = s.create(ctx)
	} else {
		var version int
		if version, err = s.check(ctx); err == nil {
			err = s.upgrade(ctx, version)
		}
	}
	if err != nil {
		// A file this call created and failed to fill is left too: it is
		// refused as empty from then on, with a message that says to
		// remove it. Removing it here could remove what another process
		// wrote meanwhile.
		db.Close()
		return nil, err
	}
	// Only now that it is known to be ours: a refused file keeps its mode.
	if err := tighten(abs); err != nil {
		db.Close()
		return nil, err
	}
	if s.stmt, err = prepareStmts(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("hss: %s: %w", abs, err)
	}
	return s, nil
}

// Path returns the absolute path of the database file.
func (s *SQLiteStore) Path() string { return s.path }

// Close closes the database.
func (s *SQLiteStore) Close() error {
	return errors.Join(s.stmt.Close(), s.db.Close())
}

// prepareFile opens the database file, or creates it with mode 0600 unless
// mustExist (created says whether this call made it). It refuses what is not
// a regular file, and an existing file that cannot be an SQLite database
// (checkFile). The file is closed again before SQLite opens it: closing a
// second descriptor of a file would drop the process's POSIX locks on it,
// SQLite's included.
func prepareFile(path string, mustExist bool) (created bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) && !mustExist {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		created = err == nil
		if errors.Is(err, fs.ErrExist) { // another process was quicker
			f, err = os.OpenFile(path, os.O_RDWR, 0)
		}
	}
	if err != nil {
		if mustExist && errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("hss: database %s does not exist", path)
		}
		return false, fmt.Errorf("hss: database %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("hss: database %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("hss: database %s is not a regular file", path)
	}
	if !created {
		if err := checkFile(f, fi.Size(), path); err != nil {
			return false, err
		}
	}
	return created, nil
}

// tighten sets mode 0600 on the database file and its -wal, -shm and
// -journal files where they exist with a looser mode.
func tighten(path string) error {
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		p := path + suffix
		stat := os.Lstat
		if suffix == "" {
			stat = os.Stat // the database itself may be a symlink
		}
		fi, err := stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("hss: %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("hss: %s is not a regular file", p)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, 0o600); err != nil {
				return fmt.Errorf("hss: %s is readable by others (mode %v) and cannot be tightened: %w", p, fi.Mode().Perm(), err)
			}
		}
	}
	return nil
}

// create makes the empty file this OpenSQLite created an imsec database of
// the current schema version, in one transaction. Other processes refuse the
// file while it is empty (checkFile), so nobody else writes to it meanwhile.
func (s *SQLiteStore) create(ctx context.Context) error {
	if err := s.setWAL(ctx); err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", sqliteAppID)); err != nil {
			return s.openErr(err)
		}
		return s.migrate(ctx, tx, 0)
	})
}

// upgrade switches a checked database of schema version checked to WAL (a
// no-op for ours unless changed by hand) and migrates it to the current
// version if it is older.
func (s *SQLiteStore) upgrade(ctx context.Context, checked int) error {
	if err := s.setWAL(ctx); err != nil {
		return err
	}
	if checked == len(migrations) {
		return nil
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		// Another process may have migrated it since the check.
		var version int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
			return s.openErr(err)
		}
		return s.migrate(ctx, tx, version)
	})
}

func (s *SQLiteStore) setWAL(ctx context.Context) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		return s.openErr(err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("hss: %s: cannot switch to WAL journal mode (got %q)", s.path, mode)
	}
	return nil
}

// migrate runs the migrations from schema version from to the current one
// and records the version.
func (s *SQLiteStore) migrate(ctx context.Context, tx *sql.Tx, from int) error {
	if from > len(migrations) {
		return s.futureErr(from)
	}
	if from == len(migrations) {
		return nil
	}
	for v := from; v < len(migrations); v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("hss: %s: migrating schema to version %d: %w", s.path, v+1, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return fmt.Errorf("hss: %s: setting schema version: %w", s.path, err)
	}
	return nil
}

// openErr names the file and recognises a file that SQLite finds damaged or
// not to be a database at all.
func (s *SQLiteStore) openErr(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqliteCorrupt:
			return fmt.Errorf("%w: %s is damaged (SQLite: %v); %s", ErrBadDatabase, s.path, err, restoreHint)
		case sqliteNotADB:
			return fmt.Errorf("%w: %s is not an SQLite database (SQLite: %v); check the path, or %s", ErrBadDatabase, s.path, err, restoreHint)
		}
	}
	return fmt.Errorf("hss: %s: %w", s.path, err)
}

// write runs fn in one BEGIN IMMEDIATE transaction and commits it (durably:
// synchronous=FULL). A failed fn rolls back and its error is returned as is.
func (s *SQLiteStore) write(ctx context.Context, fn func(*sql.Tx) error) error {
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.wsem }()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.openErr(err)
	}
	defer tx.Rollback() // no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("hss: %s: commit: %w", s.path, err)
	}
	return nil
}

// read runs fn in one read-only transaction, a consistent snapshot.
func (s *SQLiteStore) read(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s.openErr(err)
	}
	defer tx.Rollback()
	return fn(tx)
}

type rowScanner interface{ Scan(dest ...any) error }

// scanSubscriber decodes one subscriber row, checking every field, so that a
// damaged or hand-edited row gives ErrCorrupt instead of wrong keys. Errors
// name the IMPI and the field, never a value of a key column.
func scanSubscriber(r rowScanner) (Subscriber, error) {
	var (
		s               Subscriber
		k, opc, op, amf []byte
		sqn, resyncs    int64
		lastResync      sql.NullInt64
	)
	if err := r.Scan(&s.IMPI, &k, &opc, &op, &amf, &sqn, &resyncs, &lastResync); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Subscriber{}, err
		}
		return Subscriber{}, fmt.Errorf("%w %q: %v", ErrCorrupt, s.IMPI, err)
	}
	bad := func(format string, a ...any) (Subscriber, error) {
		return Subscriber{}, fmt.Errorf("%w %q: "+format, append([]any{ErrCorrupt, s.IMPI}, a...)...)
	}
	if len(k) != len(s.K) {
		return bad("K is %d bytes, want %d", len(k), len(s.K))
	}
	if len(opc) != len(s.OPc) {
		return bad("OPc is %d bytes, want %d", len(opc), len(s.OPc))
	}
	if op != nil && len(op) != len(akakeys.OP{}) {
		return bad("OP is %d bytes, want %d", len(op), len(akakeys.OP{}))
	}
	if len(amf) != len(s.AMF) {
		return bad("AMF is %d bytes, want %d", len(amf), len(s.AMF))
	}
	if sqn < 0 || sqn >= 1<<48 {
		return bad("SQN %d is not a 48-bit number", sqn)
	}
	if resyncs < 0 {
		return bad("resync count %d is negative", resyncs)
	}
	copy(s.K[:], k)
	copy(s.OPc[:], opc)
	copy(s.AMF[:], amf)
	if op != nil {
		s.OP = new(akakeys.OP)
		copy(s.OP[:], op)
		if akakeys.ComputeOPc(s.K, *s.OP) != s.OPc {
			return bad("OPc does not match OP and K")
		}
	}
	s.SQN = akakeys.SQNFromUint64(uint64(sqn))
	s.Resyncs = uint64(resyncs)
	if lastResync.Valid {
		s.LastResync = time.UnixMilli(lastResync.Int64)
	}
	return s, nil
}

func (s *SQLiteStore) loadSubscriber(ctx context.Context, tx *sql.Tx, impi string) (Subscriber, error) {
	sub, err := scanSubscriber(tx.StmtContext(ctx, s.stmt.subscriber).QueryRowContext(ctx, impi))
	if errors.Is(err, sql.ErrNoRows) {
		return Subscriber{}, fmt.Errorf("%w: %q", ErrUnknownSubscriber, impi)
	}
	if err != nil && !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("hss: %s: reading %q: %w", s.path, impi, err)
	}
	return sub, err
}

func (s *SQLiteStore) loadIMPUs(ctx context.Context, tx *sql.Tx, impi string) ([]string, error) {
	rows, err := tx.StmtContext(ctx, s.stmt.impusOf).QueryContext(ctx, impi)
	if err != nil {
		return nil, fmt.Errorf("hss: %s: reading IMPUs of %q: %w", s.path, impi, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("%w %q: IMPU: %v", ErrCorrupt, impi, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("hss: %s: reading IMPUs of %q: %w", s.path, impi, err)
	}
	return out, nil
}

// Add implements Store.
func (s *SQLiteStore) Add(ctx context.Context, sub Subscriber) error {
	if err := sub.Validate(); err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		return s.insert(ctx, newInserter(ctx, tx, s.stmt), sub)
	})
}

// inserter is the statements Add and AddAll insert with, bound to one
// write transaction.
type inserter struct {
	exists, owner, sub, impu *sql.Stmt
}

func newInserter(ctx context.Context, tx *sql.Tx, st *sqliteStmts) inserter {
	return inserter{
		exists: tx.StmtContext(ctx, st.exists),
		owner:  tx.StmtContext(ctx, st.impuOwner),
		sub:    tx.StmtContext(ctx, st.insertSub),
		impu:   tx.StmtContext(ctx, st.insertIMPU),
	}
}

// insert adds one validated subscriber in the transaction of in, or fails
// with ErrDuplicateIMPI or ErrIMPUTaken before writing anything of it.
func (s *SQLiteStore) insert(ctx context.Context, in inserter, sub Subscriber) error {
	var one int
	err := in.exists.QueryRowContext(ctx, sub.IMPI).Scan(&one)
	if err == nil {
		return fmt.Errorf("%w: %q", ErrDuplicateIMPI, sub.IMPI)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("hss: %s: %w", s.path, err)
	}
	for _, u := range sub.IMPUs {
		var owner string
		err := in.owner.QueryRowContext(ctx, u).Scan(&owner)
		if err == nil {
			return fmt.Errorf("%w: %q belongs to %q", ErrIMPUTaken, u, owner)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("hss: %s: %w", s.path, err)
		}
	}
	var op []byte // NULL unless OP was given
	if sub.OP != nil {
		op = sub.OP[:]
	}
	var last sql.NullInt64
	if !sub.LastResync.IsZero() {
		last = sql.NullInt64{Int64: sub.LastResync.UnixMilli(), Valid: true}
	}
	if _, err := in.sub.ExecContext(ctx,
		sub.IMPI, sub.K[:], sub.OPc[:], op, sub.AMF[:], int64(sub.SQN.Uint64()), int64(sub.Resyncs), last,
	); err != nil {
		return fmt.Errorf("hss: %s: adding %q: %w", s.path, sub.IMPI, err)
	}
	for i, u := range sub.IMPUs {
		if _, err := in.impu.ExecContext(ctx, u, sub.IMPI, i); err != nil {
			return fmt.Errorf("hss: %s: adding IMPU %q: %w", s.path, u, err)
		}
	}
	return nil
}

// Get implements Store.
func (s *SQLiteStore) Get(ctx context.Context, impi string) (Subscriber, error) {
	var sub Subscriber
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if sub, err = s.loadSubscriber(ctx, tx, impi); err != nil {
			return err
		}
		sub.IMPUs, err = s.loadIMPUs(ctx, tx, impi)
		return err
	})
	if err != nil {
		return Subscriber{}, err
	}
	return sub, nil
}

// List implements Store.
func (s *SQLiteStore) List(ctx context.Context) ([]Subscriber, error) {
	var out []Subscriber
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT "+subscriberColumns+" FROM subscriber ORDER BY impi")
		if err != nil {
			return fmt.Errorf("hss: %s: listing: %w", s.path, err)
		}
		defer rows.Close()
		index := map[string]int{}
		for rows.Next() {
			sub, err := scanSubscriber(rows)
			if err != nil {
				return err
			}
			index[sub.IMPI] = len(out)
			out = append(out, sub)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("hss: %s: listing: %w", s.path, err)
		}
		urows, err := tx.QueryContext(ctx, "SELECT impu, impi FROM impu ORDER BY impi, pos")
		if err != nil {
			return fmt.Errorf("hss: %s: listing IMPUs: %w", s.path, err)
		}
		defer urows.Close()
		for urows.Next() {
			var u, impi string
			if err := urows.Scan(&u, &impi); err != nil {
				return fmt.Errorf("%w: IMPU row: %v", ErrCorrupt, err)
			}
			if i, ok := index[impi]; ok {
				out[i].IMPUs = append(out[i].IMPUs, u)
			}
		}
		if err := urows.Err(); err != nil {
			return fmt.Errorf("hss: %s: listing IMPUs: %w", s.path, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Delete implements Store.
func (s *SQLiteStore) Delete(ctx context.Context, impi string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.StmtContext(ctx, s.stmt.deleteIMPUs).ExecContext(ctx, impi); err != nil {
			return fmt.Errorf("hss: %s: deleting %q: %w", s.path, impi, err)
		}
		res, err := tx.StmtContext(ctx, s.stmt.deleteSub).ExecContext(ctx, impi)
		if err != nil {
			return fmt.Errorf("hss: %s: deleting %q: %w", s.path, impi, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("hss: %s: deleting %q: %w", s.path, impi, err)
		} else if n == 0 {
			return fmt.Errorf("%w: %q", ErrUnknownSubscriber, impi)
		}
		return nil
	})
}

// LookupIMPU implements Store.
func (s *SQLiteStore) LookupIMPU(ctx context.Context, impu string) (string, error) {
	var impi string
	err := s.stmt.impuOwner.QueryRowContext(ctx, impu).Scan(&impi)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("%w: %q", ErrUnknownIMPU, impu)
	}
	if err != nil {
		return "", fmt.Errorf("hss: %s: looking up %q: %w", s.path, impu, err)
	}
	return impi, nil
}

// Generation implements Generational: the counter of identity changes
// that the triggers of schema version 2 move whenever a subscriber row is
// added, deleted or re-keyed, or an IMPU row added, deleted or changed, by
// any connection of any process (imsec sub add/del, an import, a hand edit).
// UpdateSQN does not move it.
//
// A counter in the file rather than PRAGMA data_version: data_version is
// per connection, so values from database/sql's pooled connections cannot
// be compared, and it changes on every commit of every other connection,
// an SQN reservation included, which would empty the HSS's caches at every
// reservation of any process. Reading the counter costs one row read, about
// what the PRAGMA costs.
func (s *SQLiteStore) Generation(ctx context.Context) (uint64, error) {
	var n int64
	if err := s.stmt.generation.QueryRowContext(ctx).Scan(&n); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("%w: %s: the identity_generation row is missing (edited by hand?)", ErrCorrupt, s.path)
		}
		return 0, fmt.Errorf("hss: %s: reading the identity generation: %w", s.path, err)
	}
	return uint64(n), nil
}
