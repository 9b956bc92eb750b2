package pgstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/akakeys/hss/storetest"
	"github.com/imsec/imsec/internal/pgtest"
)

// The tests of this file share one PostgreSQL server (internal/pgtest),
// each in a database of its own, and skip when PostgreSQL is not installed.
// The role secretive must give its password.
func TestMain(m *testing.M) {
	if dsn := os.Getenv(childEnv); dsn != "" {
		os.Exit(hssChild(dsn))
	}
	os.Exit(pgtest.Main(m, pgtest.Options{HBA: []string{"local all secretive scram-sha-256"}}))
}

func open(t testing.TB, dsn string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// withParam adds a query parameter to a connection URL.
func withParam(dsn, kv string) string { return dsn + "&" + kv }

func TestConformance(t *testing.T) {
	srv := pgtest.Shared(t)
	storetest.Run(t, func(t *testing.T) hss.Store { return open(t, srv.NewDatabase(t), Options{}) })
	// Pools of their own on one database: as processes would have.
	storetest.RunShared(t, func(t *testing.T, n int) []hss.Store {
		dsn := srv.NewDatabase(t)
		out := make([]hss.Store, n)
		for i := range out {
			out[i] = open(t, dsn, Options{})
		}
		return out
	})
	// Two subscriber sets in one database, in schemas of their own.
	dsn := srv.NewDatabase(t)
	storetest.Run(t, func(t *testing.T) hss.Store {
		return open(t, dsn, Options{Schema: "hss " + strings.ReplaceAll(t.Name(), "/", " ")})
	})
}

// TestConformanceSerializable runs the suite on a database whose default
// isolation level is SERIALIZABLE: racing UpdateSQNs and Adds fail with
// serialization failures and are run again.
func TestConformanceSerializable(t *testing.T) {
	srv := pgtest.Shared(t)
	var retries atomic.Uint64
	opened := func(t *testing.T, dsn string) *Store {
		s := open(t, withParam(dsn, "default_transaction_isolation=serializable"), Options{})
		t.Cleanup(func() { retries.Add(s.Retries()) })
		return s
	}
	storetest.RunShared(t, func(t *testing.T, n int) []hss.Store {
		dsn := srv.NewDatabase(t)
		out := make([]hss.Store, n)
		for i := range out {
			out[i] = opened(t, dsn)
		}
		return out
	})
	t.Logf("%d transactions run again", retries.Load())
}

// lockedElsewhere starts a transaction on a connection of its own that
// updates impi's SQN to sqn and holds the row lock until commit is called.
func lockedElsewhere(t *testing.T, dsn, impi string, sqn uint64) (commit func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	if err := conn.Exec(ctx, fmt.Sprintf("BEGIN; UPDATE imsec.subscriber SET sqn = %d WHERE impi = '%s'", sqn, impi)).Close(); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := conn.Exec(ctx, "COMMIT").Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// waitBlocked waits until a backend of the database waits for a lock.
func waitBlocked(t *testing.T, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		var n int
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		if err != nil {
			t.Fatalf("waiting for UpdateSQN to block on the row lock: %v", err)
		}
		if n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal("UpdateSQN never waited for the row lock")
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// TestUpdateSQNWaitsForRowLock: under READ COMMITTED an UpdateSQN that
// meets another transaction's row lock waits for its commit, then calls fn
// once with the SQN that transaction stored.
func TestUpdateSQNWaitsForRowLock(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	s := open(t, dsn, Options{})
	ctx := context.Background()
	if err := s.Add(ctx, storetest.Bob()); err != nil {
		t.Fatal(err)
	}
	commit := lockedElsewhere(t, dsn, "bob@ims.example", 0x700)
	var calls atomic.Int32
	done := make(chan error, 1)
	var got hss.Subscriber
	go func() {
		var err error
		got, err = s.UpdateSQN(ctx, "bob@ims.example", func(cur hss.Subscriber) (hss.SQNUpdate, error) {
			calls.Add(1)
			return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(cur.SQN.Uint64() + 1)}, nil
		})
		done <- err
	}()
	waitBlocked(t, s)
	if n := calls.Load(); n != 0 {
		t.Fatalf("fn ran %d times while another transaction held the row", n)
	}
	commit()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.SQN.Uint64() != 0x701 || calls.Load() != 1 || s.Retries() != 0 {
		t.Fatalf("SQN %x after fn ran %d times (%d retries); want 701, once, none", got.SQN, calls.Load(), s.Retries())
	}
}

// TestUpdateSQNRetriesSerializationFailure: under SERIALIZABLE the waiting
// UpdateSQN fails with a serialization failure when the lock holder
// commits; the store runs it again, fn included, and the second fn sees
// the committed SQN.
func TestUpdateSQNRetriesSerializationFailure(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	s := open(t, withParam(dsn, "default_transaction_isolation=serializable"), Options{})
	ctx := context.Background()
	if err := s.Add(ctx, storetest.Bob()); err != nil {
		t.Fatal(err)
	}
	commit := lockedElsewhere(t, dsn, "bob@ims.example", 0x700)
	var seen []uint64
	done := make(chan error, 1)
	var got hss.Subscriber
	go func() {
		var err error
		got, err = s.UpdateSQN(ctx, "bob@ims.example", func(cur hss.Subscriber) (hss.SQNUpdate, error) {
			seen = append(seen, cur.SQN.Uint64())
			return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(cur.SQN.Uint64() + 1)}, nil
		})
		done <- err
	}()
	waitBlocked(t, s)
	commit()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.SQN.Uint64() != 0x701 || s.Retries() != 1 || len(seen) != 1 || seen[0] != 0x700 {
		// The first attempt fails in SELECT ... FOR UPDATE, before fn.
		t.Fatalf("SQN %x, %d retries, fn saw %x; want 701, 1 retry, fn once with 700", got.SQN, s.Retries(), seen)
	}
	if after, _ := s.Get(ctx, "bob@ims.example"); after.SQN.Uint64() != 0x701 {
		t.Fatalf("stored SQN %x", after.SQN)
	}
}

// TestOpen covers what Open does with databases that are not an imsec
// schema of the current version, and the settings it insists on.
func TestOpen(t *testing.T) {
	srv := pgtest.Shared(t)
	ctx := context.Background()
	dbName := func(dsn string) string { return dsn[strings.LastIndex(dsn, "/")+1 : strings.Index(dsn, "?")] }

	t.Run("CreatesThenReopens", func(t *testing.T) {
		dsn := srv.NewDatabase(t)
		s := open(t, dsn, Options{})
		if err := s.Add(ctx, storetest.Alice()); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = open(t, dsn, Options{MustExist: true})
		if got, err := s.Get(ctx, storetest.Alice().IMPI); err != nil || !storetest.Equal(got, storetest.Alice()) {
			t.Fatalf("after reopening: %v, %v", got, err)
		}
	})

	t.Run("ConcurrentCreate", func(t *testing.T) {
		dsn := srv.NewDatabase(t)
		errs := make(chan error, 4)
		for range 4 {
			go func() {
				s, err := Open(ctx, dsn, Options{})
				if err == nil {
					s.Close()
				}
				errs <- err
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Errorf("concurrent Open of an empty database: %v", err)
			}
		}
	})

	t.Run("MustExist", func(t *testing.T) {
		dsn := srv.NewDatabase(t)
		_, err := Open(ctx, dsn, Options{MustExist: true})
		if err == nil || !strings.Contains(err.Error(), "no imsec subscribers") || !strings.Contains(err.Error(), "imsec sub add") {
			t.Fatalf("MustExist on an empty database: %v", err)
		}
		var n int
		s := open(t, dsn, Options{Schema: "other"})
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM pg_namespace WHERE nspname = 'imsec'").Scan(&n); err != nil || n != 0 {
			t.Fatalf("MustExist created the schema: %d, %v", n, err)
		}
	})

	t.Run("SchemaMadeByDBA", func(t *testing.T) {
		dsn := srv.NewDatabase(t)
		srv.Exec(t, dbName(dsn), "CREATE SCHEMA imsec")
		s := open(t, dsn, Options{})
		if err := s.Add(ctx, storetest.Alice()); err != nil {
			t.Fatal(err)
		}
	})

	refused := []struct {
		name  string
		setup []string // SQL on a database where Open made the schema, or on an empty one
		fresh bool     // setup runs on an empty database
		want  string
	}{
		{"ForeignTables", []string{"CREATE SCHEMA imsec", "CREATE TABLE imsec.subscriber (name text)"}, true, "not imsec's (subscriber)"},
		{"ForeignMeta", []string{"CREATE SCHEMA imsec", "CREATE TABLE imsec.meta (k text, v text)"}, true, "table meta that is not imsec's"},
		{"OtherApplication", []string{"UPDATE imsec.meta SET application = 'billing'"}, false, `another application ("billing")`},
		{"NewerVersion", []string{"UPDATE imsec.meta SET version = 99"}, false, "schema version 99, this imsec knows up to 1 (upgrade imsec)"},
		{"NoVersion", []string{"DELETE FROM imsec.meta"}, false, "meta has 0 rows"},
		{"TableMissing", []string{"DROP TABLE imsec.impu"}, false, "table impu is not as imsec made it (missing)"},
		{"IMPUsNotUnique", []string{"ALTER TABLE imsec.impu DROP CONSTRAINT impu_pkey"}, false, "no constraint impu_pkey"},
		{"Collation", []string{`ALTER TABLE imsec.impu ALTER COLUMN impu TYPE text COLLATE "en-US-x-icu"`}, false, `column 1 is impu text (collation "en-US-x-icu"`},
		{"ColumnType", []string{"ALTER TABLE imsec.subscriber ALTER COLUMN sqn TYPE numeric"}, false, "sqn numeric"},
	}
	for _, c := range refused {
		t.Run("Refuses"+c.name, func(t *testing.T) {
			dsn := srv.NewDatabase(t)
			if !c.fresh {
				open(t, dsn, Options{}).Close()
			}
			srv.Exec(t, dbName(dsn), c.setup...)
			before := dump(t, dsn)
			_, err := Open(ctx, dsn, Options{})
			if !errors.Is(err, hss.ErrBadDatabase) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open = %v\nwant ErrBadDatabase containing %q", err, c.want)
			}
			if after := dump(t, dsn); after != before {
				t.Fatalf("the refused database changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	t.Run("SynchronousCommit", func(t *testing.T) {
		dsn := srv.NewDatabase(t)
		srv.Exec(t, dbName(dsn), "ALTER DATABASE "+dbName(dsn)+" SET synchronous_commit = off")
		s := open(t, dsn, Options{})
		var sc string
		if err := s.pool.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil || sc != "on" {
			t.Fatalf("synchronous_commit %q, %v; want on whatever the database's default", sc, err)
		}
		if _, err := Open(ctx, withParam(dsn, "synchronous_commit=off"), Options{}); !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), "would let a crash lose SQNs") {
			t.Fatalf("synchronous_commit=off in the URL: %v", err)
		}
		s = open(t, withParam(dsn, "synchronous_commit=remote_apply"), Options{})
		if err := s.pool.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil || sc != "remote_apply" {
			t.Fatalf("synchronous_commit %q, %v; want the URL's remote_apply", sc, err)
		}
	})

	t.Run("PasswordNeverShown", func(t *testing.T) {
		dsn := srv.NewDatabase(t)
		db := dbName(dsn)
		srv.Exec(t, db, "CREATE ROLE secretive LOGIN PASSWORD 'Right-Pass-7788'", "GRANT CREATE ON DATABASE "+db+" TO secretive")
		good := strings.Replace(srv.DSN("secretive", db), "secretive@", "secretive:Right-Pass-7788@", 1)
		s := open(t, good, Options{})
		if strings.Contains(s.Name(), "Right-Pass") || !strings.Contains(s.Name(), "secretive@") {
			t.Errorf("Name() = %s", s.Name())
		}
		for _, dsn := range []string{
			strings.Replace(good, "Right-Pass-7788", "Wrong-Pass-3141", 1),
			strings.Replace(good, "Right-Pass-7788", "Wrong%2FPass%3F3141", 1),
			withParam(srv.DSN("secretive", db), "password=Wrong-Pass-3141"),
			strings.Replace(good, "Right-Pass-7788", "Wrong-Pass-3141", 1) + "&port=notaport",
			"postgres://secretive:Wrong-Pass-3141@/" + db + "?host=/nonexistent",
			"postgres://secretive:Wrong-Pass-3141@[::1/" + db,
			"postgresql://secretive:Wrong-Pass-3141@" + db + "?sslmode=bogus",
		} {
			_, err := Open(ctx, dsn, Options{})
			if err == nil {
				t.Errorf("Open(%s) succeeded", dsn)
				continue
			}
			if msg := err.Error(); strings.Contains(msg, "3141") {
				t.Errorf("the error shows the password: %s", msg)
			}
		}
		if _, err := Open(ctx, strings.Replace(good, "Right-Pass-7788", "Wrong-Pass-3141", 1), Options{}); err == nil ||
			!strings.Contains(err.Error(), "password authentication failed") {
			t.Errorf("wrong password: %v", err)
		}
	})

	t.Run("NotAURL", func(t *testing.T) {
		for _, dsn := range []string{"", "hss.db", "host=/tmp dbname=x password=Wrong-Pass-3141", "mysql://x"} {
			_, err := Open(ctx, dsn, Options{})
			if !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), "postgres:// or postgresql:// URL") || strings.Contains(err.Error(), "3141") {
				t.Errorf("Open(%q) = %v", dsn, err)
			}
		}
	})
}

// dump describes the schemas, tables and meta rows of a database.
func dump(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, `SELECT string_agg(n.nspname || '.' || c.relname || ':' || c.relkind::text, ' ' ORDER BY 1)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast');
		SELECT string_agg(attrelid::regclass || '.' || attname || ':' || format_type(atttypid, atttypmod), ' ' ORDER BY 1)
		FROM pg_attribute WHERE attrelid::regclass::text LIKE 'imsec.%' AND attnum > 0;
		SELECT coalesce((SELECT string_agg(conname, ' ' ORDER BY 1) FROM pg_constraint WHERE connamespace = 'imsec'::regnamespace), '')`).ReadAll()
	if err != nil && !strings.Contains(err.Error(), "does not exist") {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range res {
		for _, row := range r.Rows {
			for _, v := range row {
				b.Write(v)
				b.WriteString("; ")
			}
		}
	}
	return b.String()
}

// TestErrorsCarryNoRow: a row the server refuses comes back without the
// PostgreSQL error detail, which quotes the row, keys and all.
func TestErrorsCarryNoRow(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	s := open(t, dsn, Options{})
	ctx := context.Background()
	a := storetest.Alice()
	a.Resyncs = 1 << 63 // negative as bigint: the CHECK fails
	err := s.Add(ctx, a)
	var pe *pgconn.PgError
	if err == nil || !strings.Contains(err.Error(), "subscriber_resyncs_check") || errors.As(err, &pe) {
		t.Fatalf("Add with a resync count beyond bigint: %v (PgError reachable: %v)", err, pe != nil)
	}
	storetest.AssertNoKeys(t, "error", err.Error())

	// A row edited by hand: OPc no longer matches OP.
	if err := s.Add(ctx, storetest.Alice()); err != nil {
		t.Fatal(err)
	}
	srv.Exec(t, dsn[strings.LastIndex(dsn, "/")+1:strings.Index(dsn, "?")],
		`UPDATE imsec.subscriber SET opc = '\x00000000000000000000000000000000'`)
	for what, err := range map[string]error{
		"Get":  second(s.Get(ctx, a.IMPI)),
		"List": second(s.List(ctx)),
		"UpdateSQN": second(s.UpdateSQN(ctx, a.IMPI, func(hss.Subscriber) (hss.SQNUpdate, error) {
			t.Error("fn called on a corrupt row")
			return hss.SQNUpdate{}, nil
		})),
	} {
		if !errors.Is(err, hss.ErrCorrupt) || !strings.Contains(err.Error(), "OPc does not match OP") {
			t.Errorf("%s of a corrupt row: %v", what, err)
		} else {
			storetest.AssertNoKeys(t, what, err.Error())
		}
	}
}

func second[T any](_ T, err error) error { return err }

// TestUpdateSQNRunsFnAgain: a transaction that fails with a serialization
// failure after fn ran stores nothing, and the store runs it again with a
// new call of fn, which sees the SQN as it was. One that keeps failing
// gives up after maxAttempts with the server's error.
func TestUpdateSQNRunsFnAgain(t *testing.T) {
	srv := pgtest.Shared(t)
	s := open(t, srv.NewDatabase(t), Options{})
	ctx := context.Background()
	if err := s.Add(ctx, storetest.Bob()); err != nil {
		t.Fatal(err)
	}
	failures := 1
	s.testHookUpdated = func(ctx context.Context, tx pgx.Tx) error {
		if failures == 0 {
			return nil
		}
		failures--
		_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure'; END $$`)
		return dbErr(err, "injecting")
	}
	var seen []uint64
	next := func(cur hss.Subscriber) (hss.SQNUpdate, error) {
		seen = append(seen, cur.SQN.Uint64())
		return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(cur.SQN.Uint64() + 1), Resync: true, At: time.UnixMilli(1_800_000_000_000)}, nil
	}
	got, err := s.UpdateSQN(ctx, "bob@ims.example", next)
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[0] != 0x1e0 || seen[1] != 0x1e0 || got.SQN.Uint64() != 0x1e1 || got.Resyncs != 1 || s.Retries() != 1 {
		t.Fatalf("fn saw %x, returned SQN %x, %d resyncs, %d retries; want fn twice at 1e0, 1e1, 1, 1", seen, got.SQN, got.Resyncs, s.Retries())
	}
	if after, _ := s.Get(ctx, "bob@ims.example"); after.SQN.Uint64() != 0x1e1 || after.Resyncs != 1 {
		t.Fatalf("stored %v", after)
	}

	failures, seen = maxAttempts+1, nil
	_, err = s.UpdateSQN(ctx, "bob@ims.example", next)
	if err == nil || !strings.Contains(err.Error(), "injected (SQLSTATE 40001)") || len(seen) != maxAttempts {
		t.Fatalf("always failing: %v after %d calls of fn", err, len(seen))
	}
	if after, _ := s.Get(ctx, "bob@ims.example"); after.SQN.Uint64() != 0x1e1 || after.Resyncs != 1 {
		t.Fatalf("a failed UpdateSQN stored %v", after)
	}
}
