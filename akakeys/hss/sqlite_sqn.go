package hss

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Group commit of SQN updates. The durable part of an UpdateSQN is the
// fsync of its commit (over a millisecond on a server disk), and the HSS
// needs one for the first vector of every subscriber after a start (see
// reserve.go): when a restarted P-CSCF sees thousands of UEs register at
// once, they would queue for one fsync each. So UpdateSQN calls of one
// store that wait at the same time share one transaction and one fsync: the
// call at the head of the queue (the leader) takes the calls behind it, up
// to maxSQNBatch, runs each one's read, fn and update in order in one BEGIN
// IMMEDIATE transaction, commits, and hands the head to the next waiting
// call. Calls in one batch are serialised as if one after the other: each
// reads what the earlier ones wrote, so two calls for one subscriber in a
// batch behave as two transactions would. This is the writer queue of
// LevelDB's DBImpl::Write.

// maxSQNBatch bounds the calls one transaction carries, and so how long the
// file's write lock is held at a time.
const maxSQNBatch = 128

// sqnQueue holds the UpdateSQN calls of a store in arrival order. reqs[0]
// is the leader: its lead channel is closed as it becomes reqs[0].
type sqnQueue struct {
	mu      sync.Mutex
	reqs    []*sqnReq     // guarded by mu
	batches atomic.Uint64 // transactions run by leaders, for tests
}

// sqnReq is one UpdateSQN call.
type sqnReq struct {
	ctx  context.Context
	impi string
	fn   func(Subscriber) (SQNUpdate, error)
	lead chan struct{} // closed when the call becomes the leader
	done chan struct{} // closed once sub and err are set

	taken bool // in a batch; guarded by the queue's mu

	sub Subscriber // set before done is closed
	err error
}

// UpdateSQN implements Store: read, fn, write and commit in one BEGIN
// IMMEDIATE transaction, so the write lock is held from the read on; calls
// waiting at the same time share the transaction (see above). A call whose
// ctx ends while it waits to be taken into a batch returns ctx.Err() and
// changes nothing; once taken, it waits for its batch's commit.
func (s *SQLiteStore) UpdateSQN(ctx context.Context, impi string, fn func(Subscriber) (SQNUpdate, error)) (Subscriber, error) {
	if err := ctx.Err(); err != nil {
		return Subscriber{}, err
	}
	r := &sqnReq{ctx: ctx, impi: impi, fn: fn, lead: make(chan struct{}), done: make(chan struct{})}
	q := &s.sqnq
	q.mu.Lock()
	q.reqs = append(q.reqs, r)
	if len(q.reqs) == 1 {
		close(r.lead)
	}
	q.mu.Unlock()

	select {
	case <-r.lead:
	case <-r.done:
		return r.sub, r.err
	case <-ctx.Done():
		q.mu.Lock()
		if !r.taken && q.reqs[0] != r {
			q.reqs = slices.DeleteFunc(q.reqs, func(x *sqnReq) bool { return x == r })
			q.mu.Unlock()
			return Subscriber{}, ctx.Err()
		}
		q.mu.Unlock()
		// In a batch already, or just made the leader: see it through.
		select {
		case <-r.lead:
		case <-r.done:
			return r.sub, r.err
		}
	}

	// The leader: take a batch from the head, commit it, pass the head on.
	q.mu.Lock()
	batch := slices.Clone(q.reqs[:min(len(q.reqs), maxSQNBatch)])
	for _, b := range batch {
		b.taken = true
	}
	q.mu.Unlock()
	s.commitSQNs(batch)
	q.mu.Lock()
	// Taken calls never leave the queue early, so the batch is still its head.
	clear(q.reqs[:len(batch)])
	q.reqs = q.reqs[len(batch):]
	if len(q.reqs) > 0 {
		close(q.reqs[0].lead)
	}
	q.mu.Unlock()
	<-r.done
	return r.sub, r.err
}

// commitSQNs runs batch in one write transaction and sets every call's
// result. A call's own failure (unknown subscriber, a corrupt row, fn's
// error, its ctx ended) stores nothing for it and leaves the others be; a
// database failure fails every call not failed already, and nothing is
// stored. The transaction runs without the leader's cancellation: it
// carries other calls too.
func (s *SQLiteStore) commitSQNs(batch []*sqnReq) {
	s.sqnq.batches.Add(1)
	ctx := context.WithoutCancel(batch[0].ctx)
	err := s.write(ctx, func(tx *sql.Tx) error {
		load := tx.StmtContext(ctx, s.stmt.subscriber)
		update := tx.StmtContext(ctx, s.stmt.updateSQN)
		for _, r := range batch {
			r.sub, r.err = Subscriber{}, nil
			if err := r.ctx.Err(); err != nil {
				r.err = err
				continue
			}
			sub, err := s.updateOne(ctx, load, update, r)
			switch {
			case err == nil:
				r.sub = sub
			case r.err != nil: // the call's own failure
			default:
				return err
			}
		}
		return nil
	})
	for _, r := range batch {
		if err != nil && r.err == nil {
			r.sub, r.err = Subscriber{}, err
		}
		close(r.done)
	}
}

// updateOne is one call's read, fn and update inside the batch's
// transaction. It sets r.err for a failure of the call alone and returns
// the error; a database failure it only returns.
func (s *SQLiteStore) updateOne(ctx context.Context, load, update *sql.Stmt, r *sqnReq) (Subscriber, error) {
	cur, err := scanSubscriber(load.QueryRowContext(ctx, r.impi))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		r.err = fmt.Errorf("%w: %q", ErrUnknownSubscriber, r.impi)
		return Subscriber{}, r.err
	case errors.Is(err, ErrCorrupt):
		r.err = err
		return Subscriber{}, err
	case err != nil:
		return Subscriber{}, fmt.Errorf("hss: %s: reading %q: %w", s.path, r.impi, err)
	}
	u, err := r.fn(cur.clone())
	if err != nil {
		r.err = err
		return Subscriber{}, err
	}
	var last sql.NullInt64
	resyncs := int64(0)
	if u.Resync {
		resyncs = 1
		last = sql.NullInt64{Int64: u.At.UnixMilli(), Valid: true}
	}
	res, err := update.ExecContext(ctx, int64(u.SQN.Uint64()), resyncs, last, r.impi)
	if err != nil {
		return Subscriber{}, fmt.Errorf("hss: %s: storing SQN of %q: %w", s.path, r.impi, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return Subscriber{}, fmt.Errorf("hss: %s: storing SQN of %q: %d rows updated (%v)", s.path, r.impi, n, err)
	}
	cur.SQN = u.SQN
	if u.Resync {
		cur.Resyncs++
		cur.LastResync = time.UnixMilli(last.Int64)
	}
	return cur, nil
}
