package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

// Options configures Open. The zero value is the default.
type Options struct {
	// Schema is the PostgreSQL schema that holds the tables; empty means
	// "imsec". Several subscriber sets can share a database in schemas of
	// their own.
	Schema string
	// MustExist makes Open fail instead of creating the schema when the
	// database has none (for commands that only read or serve, where a
	// mistyped URL should not silently make an empty HSS).
	MustExist bool
	// MaxConns bounds the connections of the pool; zero means pgxpool's
	// default (the larger of 4 and the number of CPUs), unless the URL sets
	// pool_max_conns.
	MaxConns int32
}

// DefaultSchema is the PostgreSQL schema of the tables unless
// Options.Schema names another.
const DefaultSchema = "imsec"

// Store is an hss.Store in a PostgreSQL database, safe for concurrent use
// by goroutines and by any number of processes sharing the database.
type Store struct {
	pool    *pgxpool.Pool
	tg      target
	schema  string
	q       queries
	retries atomic.Uint64
	// testHookUpdated, if set, runs in UpdateSQN's transaction after the
	// UPDATE; an error from it fails the attempt.
	testHookUpdated func(context.Context, pgx.Tx) error
}

var _ hss.Store = (*Store)(nil)

// defaultConnectTimeout bounds a connection attempt unless the URL sets
// connect_timeout.
const defaultConnectTimeout = 10 * time.Second

// maxAttempts bounds how often a transaction that failed with a
// serialization failure or deadlock is run.
const maxAttempts = 30

// Open connects to the database at dsn, a postgres:// or postgresql:// URL
// (pgx's parameters: host, port, sslmode, pool_max_conns, connect_timeout,
// which is 10 s unless given, ...; the password also from PGPASSWORD or
// ~/.pgpass), and creates, checks or upgrades the schema (see the package
// doc). A URL Open cannot use fails with ErrBadURL. Errors never show the
// password.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	tg, err := describe(dsn)
	if err != nil {
		return nil, err
	}
	schema := opts.Schema
	if schema == "" {
		schema = DefaultSchema
	}
	if len(schema) > 63 || !utf8.ValidString(schema) || strings.ContainsRune(schema, 0) {
		return nil, fmt.Errorf("pgstore: schema name %q: want 1 to 63 bytes of UTF-8 without NUL", schema)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password, but only on a best-effort basis.
		return nil, fmt.Errorf("%w: %s: %s", ErrBadURL, tg.name, tg.scrub(err.Error()))
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// A server that does not answer fails a request rather than
		// holding it; the URL's connect_timeout (seconds) wins.
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	rp := cfg.ConnConfig.RuntimeParams
	// Client settings outrank the server's, the database's and the role's
	// defaults: the commit of an SQN waits for the WAL flush.
	switch sc := rp["synchronous_commit"]; strings.ToLower(sc) {
	case "":
		rp["synchronous_commit"] = "on"
	case "off", "false", "no", "0":
		return nil, fmt.Errorf("%w: %s: synchronous_commit=%s would let a crash lose SQNs already in vectors; remove it from the URL", ErrBadURL, tg.name, sc)
	}
	if rp["application_name"] == "" {
		rp["application_name"] = "imsec-hss"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, tg.public(dbErr(err, "connecting"))
	}
	s := &Store{pool: pool, tg: tg, schema: schema, q: newQueries(schema)}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, tg.public(dbErr(err, "connecting"))
	}
	if err := s.prepare(ctx, opts.MustExist); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Name returns the database URL without its password, as errors show it.
func (s *Store) Name() string { return s.tg.name }

// Schema returns the PostgreSQL schema that holds the tables.
func (s *Store) Schema() string { return s.schema }

// Retries returns how many transactions were run again after a
// serialization failure or a deadlock since Open.
func (s *Store) Retries() uint64 { return s.retries.Load() }

// Close closes the pool, waiting for connections in use to be returned.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// errConflictGone: an Add met an IMPU that was taken when it inserted and
// free again when it asked by whom (its owner was deleted in between). Run
// the transaction again.
var errConflictGone = errors.New("pgstore: conflicting IMPU vanished")

// tx runs fn in one transaction of the server's default isolation level and
// commits it, running it again (fn included) after a serialization failure
// or a deadlock. fn's own errors end it as they are.
func (s *Store) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.once(ctx, fn)
		if err == nil || !retryable(err) || attempt == maxAttempts {
			if errors.Is(err, errConflictGone) {
				err = dbErr(err, "adding")
			}
			return s.tg.public(err)
		}
		s.retries.Add(1)
		// Jittered exponential backoff, 1 ms up to 64 ms, so that the
		// losers of a race do not meet again at once.
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(attempt, 6)))
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Store) once(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return dbErr(err, "starting a transaction")
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) // no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	return dbErr(tx.Commit(ctx), "commit")
}

// plausibleID reports whether id could be a stored identity: PostgreSQL
// text refuses invalid UTF-8 and NUL, which Validate never lets in.
func plausibleID(id string) bool {
	return utf8.ValidString(id) && !strings.ContainsRune(id, 0)
}

// Add implements hss.Store.
func (s *Store) Add(ctx context.Context, sub hss.Subscriber) error {
	if err := sub.Validate(); err != nil {
		return err
	}
	return s.tx(ctx, func(tx pgx.Tx) error { return s.addTx(ctx, tx, sub) })
}

// AddAll adds subs in one transaction, all or nothing (imsec sub import):
// the first subscriber that cannot be added fails the batch with an
// *hss.BatchError naming its index. progress, if set, is called now and
// then with the number added so far.
func (s *Store) AddAll(ctx context.Context, subs []hss.Subscriber, progress func(done int)) error {
	for i, sub := range subs {
		if err := sub.Validate(); err != nil {
			return &hss.BatchError{Index: i, Err: err}
		}
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		for i, sub := range subs {
			if err := s.addTx(ctx, tx, sub); err != nil {
				return &hss.BatchError{Index: i, Err: err}
			}
			if progress != nil && (i+1)%10000 == 0 {
				progress(i + 1)
			}
		}
		return nil
	})
}

// addTx inserts one validated subscriber and its IMPUs in tx.
func (s *Store) addTx(ctx context.Context, tx pgx.Tx, sub hss.Subscriber) error {
	var op []byte // NULL unless OP was given
	if sub.OP != nil {
		op = sub.OP[:]
	}
	var last any // NULL if never
	if !sub.LastResync.IsZero() {
		last = sub.LastResync
	}
	tag, err := tx.Exec(ctx, s.q.insertSubscriber,
		sub.IMPI, sub.K[:], sub.OPc[:], op, sub.AMF[:], int64(sub.SQN.Uint64()), int64(sub.Resyncs), last)
	if err != nil {
		return dbErr(err, "adding %q", sub.IMPI)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %q", hss.ErrDuplicateIMPI, sub.IMPI)
	}
	rows, err := tx.Query(ctx, s.q.insertIMPUs, sub.IMPI, sub.IMPUs)
	if err != nil {
		return dbErr(err, "adding the IMPUs of %q", sub.IMPI)
	}
	added, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return dbErr(err, "adding the IMPUs of %q", sub.IMPI)
	}
	if len(added) == len(sub.IMPUs) {
		return nil
	}
	for _, u := range sub.IMPUs {
		if !slices.Contains(added, u) {
			var owner string
			err := tx.QueryRow(ctx, s.q.lookupIMPU, u).Scan(&owner)
			if errors.Is(err, pgx.ErrNoRows) {
				return errConflictGone
			}
			if err != nil {
				return dbErr(err, "looking up %q", u)
			}
			return fmt.Errorf("%w: %q belongs to %q", hss.ErrIMPUTaken, u, owner)
		}
	}
	return nil
}

// Get implements hss.Store.
func (s *Store) Get(ctx context.Context, impi string) (hss.Subscriber, error) {
	if !plausibleID(impi) {
		return hss.Subscriber{}, fmt.Errorf("%w: %q", hss.ErrUnknownSubscriber, impi)
	}
	var r record
	err := s.pool.QueryRow(ctx, s.q.getSubscriber, impi).Scan(r.fields(true)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return hss.Subscriber{}, fmt.Errorf("%w: %q", hss.ErrUnknownSubscriber, impi)
	}
	if err != nil {
		return hss.Subscriber{}, s.tg.public(dbErr(err, "reading %q", impi))
	}
	return r.subscriber()
}

// List implements hss.Store.
func (s *Store) List(ctx context.Context) ([]hss.Subscriber, error) {
	rows, err := s.pool.Query(ctx, s.q.listSubscribers)
	if err != nil {
		return nil, s.tg.public(dbErr(err, "listing"))
	}
	defer rows.Close()
	var out []hss.Subscriber
	for rows.Next() {
		var r record
		if err := rows.Scan(r.fields(true)...); err != nil {
			return nil, s.tg.public(dbErr(err, "listing"))
		}
		sub, err := r.subscriber()
		if err != nil {
			return nil, err
		}
		out = append(out, sub)
	}
	if err := rows.Err(); err != nil {
		return nil, s.tg.public(dbErr(err, "listing"))
	}
	return out, nil
}

// Delete implements hss.Store.
func (s *Store) Delete(ctx context.Context, impi string) error {
	if !plausibleID(impi) {
		return fmt.Errorf("%w: %q", hss.ErrUnknownSubscriber, impi)
	}
	// One statement: its IMPUs go with it (ON DELETE CASCADE).
	tag, err := s.pool.Exec(ctx, s.q.deleteSubscriber, impi)
	if err != nil {
		return s.tg.public(dbErr(err, "deleting %q", impi))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %q", hss.ErrUnknownSubscriber, impi)
	}
	return nil
}

// LookupIMPU implements hss.Store.
func (s *Store) LookupIMPU(ctx context.Context, impu string) (string, error) {
	if !plausibleID(impu) {
		return "", fmt.Errorf("%w: %q", hss.ErrUnknownIMPU, impu)
	}
	var impi string
	err := s.pool.QueryRow(ctx, s.q.lookupIMPU, impu).Scan(&impi)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("%w: %q", hss.ErrUnknownIMPU, impu)
	}
	if err != nil {
		return "", s.tg.public(dbErr(err, "looking up %q", impu))
	}
	return impi, nil
}

// UpdateSQN implements hss.Store: SELECT ... FOR UPDATE, fn, UPDATE and
// COMMIT in one transaction, run again from the start (fn included) after a
// serialization failure or deadlock. The commit is durable
// (synchronous_commit on) before UpdateSQN returns.
func (s *Store) UpdateSQN(ctx context.Context, impi string, fn func(hss.Subscriber) (hss.SQNUpdate, error)) (hss.Subscriber, error) {
	if !plausibleID(impi) {
		return hss.Subscriber{}, fmt.Errorf("%w: %q", hss.ErrUnknownSubscriber, impi)
	}
	var out hss.Subscriber
	err := s.tx(ctx, func(tx pgx.Tx) error {
		var r record
		err := tx.QueryRow(ctx, s.q.lockSubscriber, impi).Scan(r.fields(false)...)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %q", hss.ErrUnknownSubscriber, impi)
		}
		if err != nil {
			return dbErr(err, "reading %q", impi)
		}
		cur, err := r.subscriber()
		if err != nil {
			return err
		}
		u, err := fn(cur)
		if err != nil {
			return err
		}
		var resyncs int64
		var last any // NULL: keep the last resync time
		if u.Resync {
			resyncs = 1
			// As the column keeps it: microseconds.
			at := time.UnixMicro(u.At.UnixMicro())
			last = at
			cur.Resyncs++
			cur.LastResync = at
		}
		tag, err := tx.Exec(ctx, s.q.updateSQN, impi, int64(u.SQN.Uint64()), resyncs, last)
		if err != nil {
			return dbErr(err, "storing the SQN of %q", impi)
		}
		if tag.RowsAffected() != 1 {
			return dbErr(fmt.Errorf("%d rows updated", tag.RowsAffected()), "storing the SQN of %q", impi)
		}
		if s.testHookUpdated != nil {
			if err := s.testHookUpdated(ctx, tx); err != nil {
				return err
			}
		}
		cur.SQN = u.SQN
		out = cur
		return nil
	})
	if err != nil {
		return hss.Subscriber{}, err
	}
	return out, nil
}

// record is a subscriber row as scanned, checked by subscriber.
type record struct {
	impi            string
	k, opc, op, amf []byte
	sqn, resyncs    int64
	lastResync      *time.Time
	impus           []string
}

// fields are the scan targets in subscriberColumns order, then the IMPUs.
func (r *record) fields(impus bool) []any {
	f := []any{&r.impi, &r.k, &r.opc, &r.op, &r.amf, &r.sqn, &r.resyncs, &r.lastResync}
	if impus {
		f = append(f, &r.impus)
	}
	return f
}

// subscriber decodes the row, checking every field, so that a damaged or
// hand-edited row gives ErrCorrupt instead of wrong keys. Errors name the
// IMPI and the field, never a value of a key column.
func (r *record) subscriber() (hss.Subscriber, error) {
	s := hss.Subscriber{IMPI: r.impi, IMPUs: r.impus}
	bad := func(format string, a ...any) (hss.Subscriber, error) {
		return hss.Subscriber{}, fmt.Errorf("%w %q: "+format, append([]any{hss.ErrCorrupt, r.impi}, a...)...)
	}
	if len(r.k) != len(s.K) {
		return bad("K is %d bytes, want %d", len(r.k), len(s.K))
	}
	if len(r.opc) != len(s.OPc) {
		return bad("OPc is %d bytes, want %d", len(r.opc), len(s.OPc))
	}
	if r.op != nil && len(r.op) != len(akakeys.OP{}) {
		return bad("OP is %d bytes, want %d", len(r.op), len(akakeys.OP{}))
	}
	if len(r.amf) != len(s.AMF) {
		return bad("AMF is %d bytes, want %d", len(r.amf), len(s.AMF))
	}
	if r.sqn < 0 || r.sqn >= 1<<48 {
		return bad("SQN %d is not a 48-bit number", r.sqn)
	}
	if r.resyncs < 0 {
		return bad("resync count %d is negative", r.resyncs)
	}
	copy(s.K[:], r.k)
	copy(s.OPc[:], r.opc)
	copy(s.AMF[:], r.amf)
	if r.op != nil {
		s.OP = new(akakeys.OP)
		copy(s.OP[:], r.op)
		if akakeys.ComputeOPc(s.K, *s.OP) != s.OPc {
			return bad("OPc does not match OP and K")
		}
	}
	s.SQN = akakeys.SQNFromUint64(uint64(r.sqn))
	s.Resyncs = uint64(r.resyncs)
	if r.lastResync != nil {
		s.LastResync = *r.lastResync
	}
	return s, nil
}
