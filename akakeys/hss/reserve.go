package hss

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"

	"github.com/imsec/imsec/akakeys"
)

// SQN reservations (TS 33.102 Annex C, SQN = SEQ || IND). Writing the SQN
// to the store durably for every vector costs a commit with an fsync each
// (over 1 ms on a server disk, most of a registration's cost). So the HSS
// stores, in one UpdateSQN, an SQN Reserve steps ahead (SEQ + Reserve, IND +
// Reserve) and hands out the steps up to it from memory. The store's SQN
// is then the top of the range: every SQN issued so far is at or below it,
// and the next range starts above it, whichever process takes it. A crash
// loses the unissued rest of the range, never an issued SQN: the next
// process starts above the stored top.
//
// What skipping costs: at most Reserve-1 SEQ values per subscriber per
// crash or restart (or per range another process takes in between). The
// USIM accepts any jump up to Δ = 2^28 (Annex C.2.1, akakeys.DefaultDelta);
// DefaultReserve = 64 stays four million times below it, and the 2^43 SEQ
// values of a 5-bit IND last 2^37 restarts.

// DefaultReserve is Config.Reserve when it is zero: one store write per 64
// vectors for a subscriber; a crash skips at most 63 SEQ values of each
// subscriber it interrupts.
const DefaultReserve = 64

// MaxReserve bounds Config.Reserve, far below the USIM's Δ = 2^28.
const MaxReserve = 1 << 16

// reservation is one subscriber's range of SQNs (last, mark]: durable in
// the store (mark is the SQN stored), not issued yet by this HSS.
type reservation struct {
	// lock is a one-token semaphore held while issuing from the range or
	// renewing it (a channel, so that waiting for it honours ctx). Holding
	// it over the store write makes the vectors of one subscriber queue
	// behind one renewal instead of each writing.
	lock chan struct{}

	// Guarded by lock:
	dead  bool        // removed from the table: take the one there now
	valid bool        // sub, last, mark and gen describe a range
	sub   Subscriber  // keys and AMF read with the range; IMPUs nil
	last  akakeys.SQN // the SQN issued last (the one before the range at first)
	mark  akakeys.SQN // the SQN in the store: the top of the range
	gen   uint64      // store generation at which sub was last known current
}

// reservations is the table of ranges by IMPI. Entries stay until their
// subscriber is found missing (it is bounded by the subscribers that drew a
// vector), so an unknown IMPI leaves nothing behind.
type reservations struct {
	mu sync.Mutex
	m  map[string]*reservation // guarded by mu
}

// acquire returns the reservation of impi, created empty if need be, with
// its lock held.
func (t *reservations) acquire(ctx context.Context, impi string) (*reservation, error) {
	for {
		t.mu.Lock()
		if t.m == nil {
			t.m = map[string]*reservation{}
		}
		r := t.m[impi]
		if r == nil {
			r = &reservation{lock: make(chan struct{}, 1)}
			t.m[impi] = r
		}
		t.mu.Unlock()
		select {
		case r.lock <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if !r.dead {
			return r, nil
		}
		<-r.lock // forgotten while we waited: look again
	}
}

func (r *reservation) release() { <-r.lock }

// forget removes r, held by the caller, from the table.
func (t *reservations) forget(impi string, r *reservation) {
	r.dead, r.valid = true, false
	t.mu.Lock()
	if t.m[impi] == r {
		delete(t.m, impi)
	}
	t.mu.Unlock()
}

// set makes r the range (first-1 step, mark] of sub, current at gen; first
// is issued by the caller.
func (r *reservation) set(sub Subscriber, first, mark akakeys.SQN, gen uint64) {
	sub.IMPUs = nil
	r.valid, r.sub, r.last, r.mark, r.gen = true, sub, first, mark, gen
}

// sameSecrets reports whether a and b compute the same vectors for an SQN.
func sameSecrets(a, b Subscriber) bool {
	return subtle.ConstantTimeCompare(a.K[:], b.K[:])&subtle.ConstantTimeCompare(a.OPc[:], b.OPc[:]) == 1 &&
		a.AMF == b.AMF
}

// issue returns impi's subscriber with the SQN of its next vector: the next
// step of r's range while the range is good, else the first of a new range.
// The caller holds r.
//
// The range is good while the store's generation is the one it was last
// checked at, or, once the generation moved (someone added or deleted a
// subscriber, anyone), while the subscriber's row still has the same keys
// and the SQN this HSS stored: a re-provisioned subscriber (new keys, or an
// SQN reset by the operator) or a range taken by another process since
// makes this one void. The generation is read with r held, so a change
// committed before this call is seen.
func (h *HSS) issue(ctx context.Context, impi string, r *reservation) (Subscriber, error) {
	gen, err := h.generation(ctx)
	if err != nil {
		return Subscriber{}, err
	}
	if r.valid && h.seq(r.last) < h.seq(r.mark) {
		if h.gen == nil || r.gen != gen {
			if err := h.recheck(ctx, impi, r, gen); err != nil {
				return Subscriber{}, err
			}
		}
		if r.valid {
			r.last = h.scheme.Next(r.last)
			sub := r.sub
			sub.SQN = r.last
			return sub, nil
		}
	}
	return h.renew(ctx, impi, r, gen)
}

// recheck reads impi's row and voids r unless it still holds r's keys and
// r's mark as its SQN.
func (h *HSS) recheck(ctx context.Context, impi string, r *reservation, gen uint64) error {
	cur, err := h.store.Get(ctx, impi)
	switch {
	case errors.Is(err, ErrUnknownSubscriber):
		h.res.forget(impi, r)
		return err
	case err != nil:
		return err
	case !sameSecrets(cur, r.sub) || cur.SQN != r.mark:
		r.valid = false
	default:
		r.gen = gen
	}
	return nil
}

// renew takes a new range for impi in one UpdateSQN: from the SQN after
// the stored one to Reserve-1 steps beyond (fewer at the end of the SEQ
// space), stores its top and returns its first SQN. The caller holds r.
func (h *HSS) renew(ctx context.Context, impi string, r *reservation, gen uint64) (Subscriber, error) {
	r.valid = false
	var first, mark akakeys.SQN
	sub, err := h.store.UpdateSQN(ctx, impi, func(s Subscriber) (SQNUpdate, error) {
		f, err := h.next(s.SQN, h.scheme.Next)
		if err != nil {
			return SQNUpdate{}, err
		}
		first, mark = f, h.ahead(f, h.reserve-1)
		return SQNUpdate{SQN: mark}, nil
	})
	if errors.Is(err, ErrUnknownSubscriber) {
		h.res.forget(impi, r)
	}
	if err != nil {
		return Subscriber{}, err
	}
	if err := h.stored(sub, mark); err != nil {
		return Subscriber{}, err
	}
	r.set(sub, first, mark, gen)
	sub.SQN = first
	return sub, nil
}

// stored insists that the store kept the SQN of fn's last call (first and
// mark come from that call): a store that retried fn and kept an earlier
// answer would make the HSS issue SQNs it does not own.
func (h *HSS) stored(sub Subscriber, mark akakeys.SQN) error {
	if sub.SQN != mark {
		return fmt.Errorf("hss: store kept SQN %x for %q, not the %x its UpdateSQN callback asked for", sub.SQN[:], sub.IMPI, mark[:])
	}
	return nil
}

// ahead returns the SQN n steps of Next after from, or fewer if SEQ would
// pass its maximum: the top of a range that starts at from.
func (h *HSS) ahead(from akakeys.SQN, n uint64) akakeys.SQN {
	seq, ind := h.scheme.Split(from)
	n = min(n, h.maxSEQ-seq)
	return h.scheme.Join(seq+n, ind+n)
}

func (h *HSS) seq(sqn akakeys.SQN) uint64 {
	seq, _ := h.scheme.Split(sqn)
	return seq
}

// generation reads the store's identity generation, or 0 if it has none.
func (h *HSS) generation(ctx context.Context) (uint64, error) {
	if h.gen == nil {
		return 0, nil
	}
	return h.gen.Generation(ctx)
}
