package hss

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

// countingStore counts the calls an HSS makes to a MemStore, keeping its
// Generational ability.
type countingStore struct {
	*MemStore
	updates, gets, lookups atomic.Int64
}

func (c *countingStore) UpdateSQN(ctx context.Context, impi string, fn func(Subscriber) (SQNUpdate, error)) (Subscriber, error) {
	c.updates.Add(1)
	return c.MemStore.UpdateSQN(ctx, impi, fn)
}

func (c *countingStore) Get(ctx context.Context, impi string) (Subscriber, error) {
	c.gets.Add(1)
	return c.MemStore.Get(ctx, impi)
}

func (c *countingStore) LookupIMPU(ctx context.Context, impu string) (string, error) {
	c.lookups.Add(1)
	return c.MemStore.LookupIMPU(ctx, impu)
}

// plainStore hides every ability but Store's methods (a store without
// Generation, as a networked one may be).
type plainStore struct{ Store }

func TestNewRejectsBadReserve(t *testing.T) {
	for _, r := range []int{-1, MaxReserve + 1} {
		if _, err := New(NewMemStore(), Config{Reserve: r}); err == nil {
			t.Errorf("Reserve %d accepted", r)
		}
	}
}

// One store write per Reserve vectors, the store holding the top of the
// range; Reserve 1 writes for every vector and stores the SQN issued.
func TestReserveWritesOncePerRange(t *testing.T) {
	for _, reserve := range []int{1, 8, DefaultReserve} {
		ctx := context.Background()
		s := &countingStore{MemStore: NewMemStore()}
		if err := s.Add(ctx, alice()); err != nil {
			t.Fatal(err)
		}
		h := newHSS(t, s, Config{Reserve: reserve})
		prev := akakeys.SQN{}
		const n = 20
		for i := range n {
			v, err := h.Vector(ctx, alice().IMPI)
			if err != nil {
				t.Fatal(err)
			}
			if want := h.Scheme().Next(prev); v.SQN != want {
				t.Fatalf("Reserve %d, vector %d: SQN %x, want %x", reserve, i, v.SQN, want)
			}
			prev = v.SQN
		}
		ranges := (n + reserve - 1) / reserve
		if got := s.updates.Load(); got != int64(ranges) {
			t.Errorf("Reserve %d: %d store writes for %d vectors, want %d", reserve, got, n, ranges)
		}
		if got := s.gets.Load(); got != 0 {
			t.Errorf("Reserve %d: %d Gets with an unchanged generation", reserve, got)
		}
		top := uint64(ranges * reserve)
		got, _ := s.Get(ctx, alice().IMPI)
		if want := h.Scheme().Join(top, top); got.SQN != want {
			t.Errorf("Reserve %d: stored SQN %x, want the top of range %d, %x", reserve, got.SQN, ranges, want)
		}
	}
}

// A new HSS on the same store (a restart, a crash) continues above the
// stored top: the unissued rest of the range, less than Reserve SEQ values,
// is skipped; nothing issued is issued again.
func TestReserveRestartContinuesAboveRange(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	if err := s.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	m := akakeys.NewMilenage(k1, opc1)
	before, err := drawVectors(t, newHSS(t, s, Config{}), alice().IMPI, m, 5)
	if err != nil {
		t.Fatal(err)
	}
	// The first HSS and its store handle are dropped without a word, as a
	// killed process would leave them.
	s2, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	after, err := drawVectors(t, newHSS(t, s2, Config{}), alice().IMPI, m, 5)
	if err != nil {
		t.Fatal(err)
	}
	last := before[len(before)-1] >> akakeys.DefaultIndBits
	first := after[0] >> akakeys.DefaultIndBits
	if first != DefaultReserve+1 {
		t.Errorf("first SEQ after restart %d, want %d (above the stored top %d)", first, DefaultReserve+1, DefaultReserve)
	}
	if skip := first - last - 1; skip >= DefaultReserve {
		t.Errorf("restart skipped %d SEQ values, want fewer than %d", skip, DefaultReserve)
	}
	checkSQNs(t, append(before, after...), 0)
}

// forEachSharedStore runs f with two stores over the same subscribers: one
// the HSS uses and one "another process" changes. For SQLite they are two
// handles of one file, which meet only in the file, as two processes do.
func forEachSharedStore(t *testing.T, f func(t *testing.T, mine, other Store)) {
	t.Run("mem", func(t *testing.T) {
		s := NewMemStore()
		f(t, s, s)
	})
	t.Run("sqlite", func(t *testing.T) {
		s1, path := openTemp(t)
		s2, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s2.Close() })
		f(t, s1, s2)
	})
	t.Run("without generation", func(t *testing.T) {
		s := NewMemStore()
		f(t, plainStore{s}, s)
	})
}

// A subscriber re-provisioned while the HSS holds a range for it (deleted
// and added again with other keys and an SQN set by the operator) gets
// vectors with the new keys and from the new SQN at once; a deleted one
// gets none.
func TestReserveSeesReprovisioning(t *testing.T) {
	forEachSharedStore(t, func(t *testing.T, mine, other Store) {
		ctx := context.Background()
		if err := other.Add(ctx, alice()); err != nil {
			t.Fatal(err)
		}
		h := newHSS(t, mine, Config{})
		if _, err := drawVectors(t, h, alice().IMPI, akakeys.NewMilenage(k1, opc1), 3); err != nil {
			t.Fatal(err)
		}
		if err := other.Delete(ctx, alice().IMPI); err != nil {
			t.Fatal(err)
		}
		a := alice()
		a.K, a.OP, a.OPc = k2, nil, opc2
		a.SQN = h.Scheme().Join(1000, 0)
		if err := other.Add(ctx, a); err != nil {
			t.Fatal(err)
		}
		v, err := h.Vector(ctx, a.IMPI)
		if err != nil {
			t.Fatal(err)
		}
		if want := akakeys.NewMilenage(k2, opc2).Vector(v.RAND, v.SQN, v.AMF); v != want {
			t.Fatal("vector after re-provisioning not computed with the new keys")
		}
		if want := h.Scheme().Next(a.SQN); v.SQN != want {
			t.Fatalf("SQN %x after re-provisioning with %x, want %x", v.SQN, a.SQN, want)
		}

		if err := other.Delete(ctx, a.IMPI); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Vector(ctx, a.IMPI); !errors.Is(err, ErrUnknownSubscriber) {
			t.Fatalf("vector for a deleted subscriber: %v", err)
		}
		h.res.mu.Lock()
		left := len(h.res.m)
		h.res.mu.Unlock()
		if left != 0 {
			t.Fatalf("%d reservations left after the subscriber was deleted", left)
		}
	})
}

// Two HSSs on one store issue from ranges of their own. Once the
// generation moves, the one whose range another took a range above
// renews above that one.
func TestReserveTwoHSSs(t *testing.T) {
	forEachSharedStore(t, func(t *testing.T, mine, other Store) {
		ctx := context.Background()
		if err := mine.Add(ctx, alice()); err != nil {
			t.Fatal(err)
		}
		h1, h2 := newHSS(t, mine, Config{Reserve: 8}), newHSS(t, other, Config{Reserve: 8})
		seq := func(h *HSS) uint64 {
			t.Helper()
			v, err := h.Vector(ctx, alice().IMPI)
			if err != nil {
				t.Fatal(err)
			}
			return h.seq(v.SQN)
		}
		if got := seq(h1); got != 1 { // h1: 1..8
			t.Fatalf("h1 SEQ %d, want 1", got)
		}
		if got := seq(h2); got != 9 { // h2: 9..16
			t.Fatalf("h2 SEQ %d, want 9", got)
		}
		// h1 goes on in its own range, unless it reads its row for every
		// vector (a store without Generation): then it sees that h2 took a
		// range above and renews above it.
		_, plain := mine.(plainStore)
		third, fourth := uint64(2), uint64(17)
		if plain {
			third, fourth = 17, 18
		}
		if got := seq(h1); got != third {
			t.Fatalf("h1 SEQ %d, want %d", got, third)
		}
		// An identity change anywhere makes h1 check its row: with a
		// Generational store, its range is no longer the store's top, so
		// it takes one above h2's.
		if err := other.Add(ctx, bob()); err != nil {
			t.Fatal(err)
		}
		if got := seq(h1); got != fourth {
			t.Fatalf("h1 SEQ %d after the generation moved, want %d", got, fourth)
		}
	})
}

func TestResyncMovesReservation(t *testing.T) {
	ctx := context.Background()
	s := &countingStore{MemStore: NewMemStore()}
	if err := s.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	h := newHSS(t, s, Config{Reserve: 8})
	v, err := h.Vector(ctx, alice().IMPI)
	if err != nil {
		t.Fatal(err)
	}
	m := akakeys.NewMilenage(k1, opc1)
	// A forged AUTS changes nothing: the range goes on.
	forged := m.AUTS(v.RAND, h.Scheme().Join(500, 2))
	forged[0] ^= 1
	if _, err := h.Resync(ctx, alice().IMPI, v.RAND, forged); !errors.Is(err, akakeys.ErrAUTSMAC) {
		t.Fatalf("forged AUTS: %v", err)
	}
	if v2, err := h.Vector(ctx, alice().IMPI); err != nil || v2.SQN != h.Scheme().Next(v.SQN) {
		t.Fatalf("after a forged AUTS: SQN %x, %v; want %x", v2.SQN, err, h.Scheme().Next(v.SQN))
	}
	// A genuine one replaces the range with one from AfterResync(SQN_MS).
	sqnMS := h.Scheme().Join(500, 2)
	nv, err := h.Resync(ctx, alice().IMPI, v.RAND, m.AUTS(v.RAND, sqnMS))
	if err != nil {
		t.Fatal(err)
	}
	if nv.SQN != h.Scheme().AfterResync(sqnMS) {
		t.Fatalf("resync vector SQN %x, want %x", nv.SQN, h.Scheme().AfterResync(sqnMS))
	}
	writes := s.updates.Load()
	prev := nv.SQN
	for range 7 { // the rest of the new range, from memory
		v, err := h.Vector(ctx, alice().IMPI)
		if err != nil || v.SQN != h.Scheme().Next(prev) {
			t.Fatalf("after resync: SQN %x, %v; want %x", v.SQN, err, h.Scheme().Next(prev))
		}
		prev = v.SQN
	}
	if got := s.updates.Load(); got != writes {
		t.Fatalf("%d store writes for the rest of the resync's range", got-writes)
	}
	if got, _ := s.Get(ctx, alice().IMPI); got.SQN != prev {
		t.Fatalf("stored SQN %x, want the top of the resync's range %x", got.SQN, prev)
	}
}

// At the end of the SEQ space a range is what is left, and then
// ErrSQNExhausted.
func TestReserveEndOfSEQSpace(t *testing.T) {
	ctx := context.Background()
	s := NewMemStore()
	a := alice()
	h := newHSS(t, s, Config{})
	a.SQN = h.Scheme().Join(h.maxSEQ-3, 0)
	if err := s.Add(ctx, a); err != nil {
		t.Fatal(err)
	}
	for i := uint64(2); i <= 4; i++ {
		v, err := h.Vector(ctx, a.IMPI)
		if err != nil {
			t.Fatal(err)
		}
		if h.seq(v.SQN) != h.maxSEQ-4+i {
			t.Fatalf("SEQ %d, want %d", h.seq(v.SQN), h.maxSEQ-4+i)
		}
	}
	if _, err := h.Vector(ctx, a.IMPI); !errors.Is(err, ErrSQNExhausted) {
		t.Fatalf("past the last SEQ: %v", err)
	}
}

func TestVectorWaitHonoursContext(t *testing.T) {
	s := NewMemStore()
	if err := s.Add(context.Background(), alice()); err != nil {
		t.Fatal(err)
	}
	h := newHSS(t, s, Config{})
	r, err := h.res.acquire(context.Background(), alice().IMPI)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Vector(ctx, alice().IMPI); !errors.Is(err, context.Canceled) {
		t.Fatalf("Vector waiting for a held range with a cancelled ctx: %v", err)
	}
	r.release()
	if _, err := h.Vector(context.Background(), alice().IMPI); err != nil {
		t.Fatal(err)
	}
}

// retryingStore calls fn twice and keeps the first answer, as a store that
// retried a transaction and stored the wrong attempt would.
type retryingStore struct{ *MemStore }

func (r retryingStore) UpdateSQN(ctx context.Context, impi string, fn func(Subscriber) (SQNUpdate, error)) (Subscriber, error) {
	first, _ := r.Get(ctx, impi)
	u1, err := fn(first)
	if err != nil {
		return Subscriber{}, err
	}
	second := first
	second.SQN = akakeys.SQNFromUint64(first.SQN.Uint64() + 1<<20)
	if _, err := fn(second); err != nil {
		return Subscriber{}, err
	}
	return r.MemStore.UpdateSQN(ctx, impi, func(Subscriber) (SQNUpdate, error) { return u1, nil })
}

// The HSS issues only from a range the store says it stored.
func TestReserveRefusesStoreThatKeptAnotherAnswer(t *testing.T) {
	s := retryingStore{NewMemStore()}
	if err := s.Add(context.Background(), alice()); err != nil {
		t.Fatal(err)
	}
	h := newHSS(t, s, Config{})
	if v, err := h.Vector(context.Background(), alice().IMPI); err == nil {
		t.Fatalf("vector with SQN %x from a range the store did not keep", v.SQN)
	}
}
