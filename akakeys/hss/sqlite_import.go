package hss

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Bulk provisioning: many subscribers in one transaction (imsec sub
// import). One transaction makes it all or nothing, and pays one commit
// instead of one per subscriber (8.6 ms each as separate `imsec sub add`
// processes: 14 minutes for 100,000).
//
// Add checks each identity with a SELECT before its INSERT; for a bulk
// import that doubled the statements, and each statement costs some
// microseconds of database/sql and driver overhead whatever it does. So
// AddAll inserts chunks of rows with multi-row INSERTs inside a savepoint,
// and finds out which row was at fault only when a chunk fails: it rolls
// the chunk back and adds its rows one by one as Add does, which stops at
// the first bad row with Add's error.

// BatchError is the error of AddAll: the subscriber at Index of the slice
// could not be added, and nothing was. Err wraps ErrInvalidSubscriber,
// ErrDuplicateIMPI or ErrIMPUTaken where they apply.
type BatchError struct {
	Index int
	Err   error
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("subscriber %d of the batch: %v", e.Index+1, e.Err)
}

func (e *BatchError) Unwrap() error { return e.Err }

const (
	// progressEvery is how many subscribers AddAll adds between progress
	// calls.
	progressEvery = 10000
	// importChunk is the rows per multi-row INSERT (800 parameters for
	// subscriber rows, far below SQLite's limit of 32766).
	importChunk = 100
)

// AddAll adds subs in one write transaction: all of them, or none and a
// *BatchError naming the first that failed (Validate, an IMPI or IMPU
// already stored or repeated within subs). If progress is not nil it is
// called with the number added so far every 10,000 subscribers and at the
// end, before the commit, on the calling goroutine.
//
// The transaction holds the database's write lock throughout (some seconds
// for 100,000 subscribers, see BenchmarkAddAll): vectors drawn by other
// processes meanwhile wait, up to their BusyTimeout.
func (s *SQLiteStore) AddAll(ctx context.Context, subs []Subscriber, progress func(done int)) error {
	if err := checkBatch(subs); err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		b, err := newBulkInserter(ctx, tx, s.stmt)
		if err != nil {
			return fmt.Errorf("hss: %s: %w", s.path, err)
		}
		defer b.close()
		for start := 0; start < len(subs); start += importChunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			chunk := subs[start:min(start+importChunk, len(subs))]
			if err := b.chunk(ctx, chunk); err != nil {
				return s.culprit(ctx, tx, start, chunk, err)
			}
			done := start + len(chunk)
			if progress != nil && (done%progressEvery == 0 || done == len(subs)) {
				progress(done)
			}
		}
		return nil
	})
}

// checkBatch validates every subscriber and finds identities repeated
// within the batch, before the database is touched.
func checkBatch(subs []Subscriber) error {
	impis := make(map[string]int, len(subs))
	impus := make(map[string]int, len(subs))
	for i := range subs {
		sub := &subs[i]
		if err := sub.Validate(); err != nil {
			return &BatchError{Index: i, Err: err}
		}
		if j, ok := impis[sub.IMPI]; ok {
			return &BatchError{Index: i, Err: fmt.Errorf("%w: %q is subscriber %d of the batch too", ErrDuplicateIMPI, sub.IMPI, j+1)}
		}
		impis[sub.IMPI] = i
		for _, u := range sub.IMPUs {
			if j, ok := impus[u]; ok {
				return &BatchError{Index: i, Err: fmt.Errorf("%w: %q is an IMPU of subscriber %d of the batch too", ErrIMPUTaken, u, j+1)}
			}
			impus[u] = i
		}
	}
	return nil
}

// culprit runs after chunk (starting at index start) failed with err and
// was rolled back: it adds the chunk's subscribers one at a time as Add
// does and returns the BatchError of the first that fails, or err if none
// does (the failure was not one subscriber's).
func (s *SQLiteStore) culprit(ctx context.Context, tx *sql.Tx, start int, chunk []Subscriber, err error) error {
	in := newInserter(ctx, tx, s.stmt)
	for i, sub := range chunk {
		if e := s.insert(ctx, in, sub); e != nil {
			return &BatchError{Index: start + i, Err: e}
		}
	}
	return fmt.Errorf("hss: %s: adding subscribers %d to %d: %w", s.path, start+1, start+len(chunk), err)
}

// bulkInserter holds the statements of one AddAll transaction.
type bulkInserter struct {
	subs, impus   *sql.Stmt // importChunk rows each
	sub, impu     *sql.Stmt // one row each, for the remainders
	args          []any
	rows          []impuRow
	savepoint     *sql.Stmt
	release, undo *sql.Stmt
}

type impuRow struct {
	impu, impi string
	pos        int
}

func newBulkInserter(ctx context.Context, tx *sql.Tx, st *sqliteStmts) (*bulkInserter, error) {
	b := &bulkInserter{
		sub:  tx.StmtContext(ctx, st.insertSub),
		impu: tx.StmtContext(ctx, st.insertIMPU),
		args: make([]any, 0, 8*importChunk),
	}
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&b.subs, "INSERT INTO subscriber (" + subscriberColumns + ") VALUES " + valuesList(8, importChunk)},
		{&b.impus, "INSERT INTO impu (impu, impi, pos) VALUES " + valuesList(3, importChunk)},
		{&b.savepoint, "SAVEPOINT import_chunk"},
		{&b.release, "RELEASE import_chunk"},
		{&b.undo, "ROLLBACK TO import_chunk"},
	} {
		stmt, err := tx.PrepareContext(ctx, p.sql)
		if err != nil {
			b.close()
			return nil, err
		}
		*p.dst = stmt
	}
	return b, nil
}

// valuesList is "(?, ..., ?), ..." for rows rows of cols columns.
func valuesList(cols, rows int) string {
	row := "(" + strings.Repeat("?, ", cols-1) + "?)"
	return strings.Repeat(row+", ", rows-1) + row
}

func (b *bulkInserter) close() {
	for _, s := range []*sql.Stmt{b.subs, b.impus, b.savepoint, b.release, b.undo} {
		if s != nil {
			s.Close()
		}
	}
}

// chunk inserts subs and their IMPUs inside a savepoint; on failure the
// chunk is rolled back and the error returned.
func (b *bulkInserter) chunk(ctx context.Context, subs []Subscriber) error {
	if _, err := b.savepoint.ExecContext(ctx); err != nil {
		return err
	}
	err := b.insert(ctx, subs)
	if err != nil {
		if _, uerr := b.undo.ExecContext(ctx); uerr != nil {
			return uerr
		}
	}
	if _, rerr := b.release.ExecContext(ctx); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

func (b *bulkInserter) insert(ctx context.Context, subs []Subscriber) error {
	b.args, b.rows = b.args[:0], b.rows[:0]
	for _, sub := range subs {
		var op []byte // NULL unless OP was given
		if sub.OP != nil {
			op = sub.OP[:]
		}
		var last sql.NullInt64
		if !sub.LastResync.IsZero() {
			last = sql.NullInt64{Int64: sub.LastResync.UnixMilli(), Valid: true}
		}
		row := []any{sub.IMPI, sub.K[:], sub.OPc[:], op, sub.AMF[:], int64(sub.SQN.Uint64()), int64(sub.Resyncs), last}
		if len(subs) < importChunk {
			if _, err := b.sub.ExecContext(ctx, row...); err != nil {
				return err
			}
		} else {
			b.args = append(b.args, row...)
		}
		for pos, u := range sub.IMPUs {
			b.rows = append(b.rows, impuRow{u, sub.IMPI, pos})
		}
	}
	if len(b.args) > 0 {
		if _, err := b.subs.ExecContext(ctx, b.args...); err != nil {
			return err
		}
	}
	rows := b.rows
	for len(rows) >= importChunk {
		b.args = b.args[:0]
		for _, r := range rows[:importChunk] {
			b.args = append(b.args, r.impu, r.impi, r.pos)
		}
		if _, err := b.impus.ExecContext(ctx, b.args...); err != nil {
			return err
		}
		rows = rows[importChunk:]
	}
	for _, r := range rows {
		if _, err := b.impu.ExecContext(ctx, r.impu, r.impi, r.pos); err != nil {
			return err
		}
	}
	return nil
}
