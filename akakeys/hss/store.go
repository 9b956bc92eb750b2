package hss

import (
	"context"
	"errors"
	"time"

	"github.com/imsec/imsec/akakeys"
)

// Errors of the HSS and its stores. They are wrapped with the identity
// concerned (quoted), never with a key; test them with errors.Is.
var (
	ErrUnknownSubscriber = errors.New("hss: unknown subscriber")
	ErrUnknownIMPU       = errors.New("hss: unknown IMPU")
	ErrDuplicateIMPI     = errors.New("hss: subscriber already exists")
	ErrIMPUTaken         = errors.New("hss: IMPU already belongs to another subscriber")
	ErrInvalidSubscriber = errors.New("hss: invalid subscriber")
	// ErrSQNExhausted: the next SEQ would not fit in 48-bit SQN with the
	// configured IND length; the subscriber needs a new USIM (or a reset of
	// its SQN on both sides).
	ErrSQNExhausted = errors.New("hss: SQN space exhausted")
	// ErrCorrupt: a stored record does not decode (a key of the wrong
	// length, an SQN out of range, OPc inconsistent with OP...).
	ErrCorrupt = errors.New("hss: corrupt subscriber record")
	// ErrBadDatabase: an existing database file cannot be used, and was
	// left as it was: it is empty, not SQLite, another application's, of a
	// schema version this imsec does not know (or with tables missing or
	// changed), or damaged (PRAGMA integrity_check or foreign_key_check
	// fails). The message names the file, the problem and what to do.
	ErrBadDatabase = errors.New("hss: unusable subscriber database")
	// ErrNotDatabase is the former name of ErrBadDatabase.
	//
	// Deprecated: use ErrBadDatabase.
	ErrNotDatabase = ErrBadDatabase
)

// SQNUpdate is what an UpdateSQN callback decides: the SQN to store as the
// subscriber's new SQN state, and whether to count a re-synchronisation.
type SQNUpdate struct {
	SQN    akakeys.SQN
	Resync bool      // count one verified re-synchronisation, at At
	At     time.Time // time of the resync; used only if Resync
}

// Store keeps subscribers for an HSS. Implementations must be safe for
// concurrent use by several goroutines, and a store that can be shared by
// several processes (a database file, a database server) must keep
// UpdateSQN atomic across them too.
//
// Identities are matched exactly. Methods return errors that wrap the
// sentinels above (ErrUnknownSubscriber, ErrDuplicateIMPI, ErrIMPUTaken,
// ErrInvalidSubscriber, ErrCorrupt) where they apply, and never put key
// material in an error. Returned Subscribers are copies the caller owns.
type Store interface {
	// Add stores a new subscriber after s.Validate(). It fails with
	// ErrDuplicateIMPI if the IMPI exists, ErrIMPUTaken if one of the IMPUs
	// belongs to another IMPI; then nothing is stored.
	Add(ctx context.Context, s Subscriber) error

	// Get returns the subscriber with its IMPUs in the order they were added,
	// or ErrUnknownSubscriber.
	Get(ctx context.Context, impi string) (Subscriber, error)

	// List returns all subscribers sorted by IMPI.
	List(ctx context.Context) ([]Subscriber, error)

	// Delete removes the subscriber and its IMPUs, or fails with
	// ErrUnknownSubscriber.
	Delete(ctx context.Context, impi string) error

	// LookupIMPU returns the IMPI an IMPU belongs to, or ErrUnknownIMPU.
	LookupIMPU(ctx context.Context, impu string) (impi string, err error)

	// UpdateSQN is the one atomic read-modify-write of the SQN state. Under
	// the store's write lock it reads the subscriber, calls fn with it, and
	// if fn returns no error stores the SQNUpdate and makes it durable before
	// UpdateSQN returns: after a nil error a crash cannot lose the update,
	// and no other UpdateSQN for that subscriber, in this process or any
	// other sharing the store, can have seen the state fn saw.
	//
	// fn must be a pure function of its argument (no I/O, no side effects a
	// retry would repeat): the store may call it more than once if it
	// retries a transaction, and holds its write lock while it runs. If fn
	// fails, nothing is stored and its error is returned unchanged.
	//
	// The Subscriber passed to fn and the one returned carry keys and SQN
	// state; their IMPUs may be nil (reading them is not needed to issue a
	// vector). The one returned has the new SQN and resync count.
	UpdateSQN(ctx context.Context, impi string, fn func(Subscriber) (SQNUpdate, error)) (Subscriber, error)
}

// Generational is an optional ability of a Store, found by type assertion:
// a counter of identity changes that lets the HSS keep identities, keys and
// SQN reservations in memory and still see every change made by any process
// sharing the store.
//
// Generation returns a number that changes (it need not grow by one)
// whenever a subscriber is added or deleted, or an IMPU or key (K, OP, OPc,
// AMF) of one changes, in this process or any other sharing the store, and
// does not change for UpdateSQN. A value read before a change is never
// returned after it. It should cost no more than one small read.
//
// Without it, the HSS caches no identities and checks its SQN reservation
// with one Get per vector instead (see HSS.Vector).
type Generational interface {
	Generation(ctx context.Context) (uint64, error)
}
