package hss

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

// plusOne is an UpdateSQN callback that counts calls in the SQN.
func plusOne(s Subscriber) (SQNUpdate, error) {
	return SQNUpdate{SQN: akakeys.SQNFromUint64(s.SQN.Uint64() + 1)}, nil
}

// Concurrent UpdateSQN calls, many for each subscriber, lose no update:
// every call counts once, as if run one after the other.
func TestUpdateSQNConcurrentCallsAllCount(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	const subs, per, workers = 4, 8, 16 // per: calls of each worker
	for i := range subs {
		sub := bob()
		sub.IMPI, sub.IMPUs, sub.SQN = fmt.Sprintf("u%d@x", i), []string{fmt.Sprintf("sip:u%d@x", i)}, akakeys.SQN{}
		if err := s.Add(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				if _, err := s.UpdateSQN(ctx, fmt.Sprintf("u%d@x", (w+i)%subs), plusOne); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := uint64(0)
	for i := range subs {
		got, err := s.Get(ctx, fmt.Sprintf("u%d@x", i))
		if err != nil {
			t.Fatal(err)
		}
		total += got.SQN.Uint64()
	}
	if want := uint64(workers * per); total != want {
		t.Fatalf("SQNs add up to %d, want %d calls", total, want)
	}
	t.Logf("%d calls in %d transactions", workers*per, s.sqnq.batches.Load())
}

// holdWriteLock takes the store's write semaphore, so that UpdateSQN calls
// queue behind a leader that cannot start; release lets them through.
func holdWriteLock(s *SQLiteStore) (release func()) {
	s.wsem <- struct{}{}
	return func() { <-s.wsem }
}

// queued waits until n calls are in the queue. It yields rather than
// sleeps: the calls get there without any clock.
func queued(s *SQLiteStore, n int) {
	for {
		s.sqnq.mu.Lock()
		got := len(s.sqnq.reqs)
		s.sqnq.mu.Unlock()
		if got >= n {
			return
		}
		runtime.Gosched()
	}
}

// Calls that wait together go in one transaction; a call's own failure
// (fn's error, an unknown subscriber) is its own, stores nothing for it,
// and does not stop the others.
func TestUpdateSQNBatchKeepsFailuresApart(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	if err := s.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(ctx, bob()); err != nil {
		t.Fatal(err)
	}
	release := holdWriteLock(s)
	before := s.sqnq.batches.Load()
	refuse := errors.New("refused by fn")
	calls := []struct {
		impi string
		fn   func(Subscriber) (SQNUpdate, error)
		want error
	}{
		{alice().IMPI, plusOne, nil}, // the leader, blocked on the lock
		{bob().IMPI, func(Subscriber) (SQNUpdate, error) { return SQNUpdate{}, refuse }, refuse},
		{"nobody@x", plusOne, ErrUnknownSubscriber},
		{alice().IMPI, plusOne, nil},
		{bob().IMPI, plusOne, nil},
	}
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Go(func() { _, errs[i] = s.UpdateSQN(ctx, c.impi, c.fn) })
		queued(s, i+1) // in this order
	}
	release()
	wg.Wait()
	for i, c := range calls {
		if !errors.Is(errs[i], c.want) || (c.want == nil) != (errs[i] == nil) {
			t.Errorf("call %d (%s): %v, want %v", i, c.impi, errs[i], c.want)
		}
	}
	if n := s.sqnq.batches.Load() - before; n != 2 {
		t.Errorf("%d transactions, want 2: the leader alone, then the four that queued behind it", n)
	}
	a, _ := s.Get(ctx, alice().IMPI)
	b, _ := s.Get(ctx, bob().IMPI)
	if a.SQN.Uint64() != 2 || b.SQN.Uint64() != bob().SQN.Uint64()+1 {
		t.Fatalf("alice SQN %d (want 2), bob SQN %d (want %d)", a.SQN.Uint64(), b.SQN.Uint64(), bob().SQN.Uint64()+1)
	}
}

// A call whose ctx ends while it waits in the queue returns at once and
// stores nothing.
func TestUpdateSQNCancelledWhileQueued(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	if err := s.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	release := holdWriteLock(s)
	leader := make(chan error, 1)
	go func() { _, err := s.UpdateSQN(ctx, alice().IMPI, plusOne); leader <- err }()
	queued(s, 1)
	cctx, cancel := context.WithCancel(ctx)
	waiter := make(chan error, 1)
	go func() { _, err := s.UpdateSQN(cctx, alice().IMPI, plusOne); waiter <- err }()
	queued(s, 2)
	cancel()
	if err := <-waiter; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	release()
	if err := <-leader; err != nil {
		t.Fatal(err)
	}
	if a, _ := s.Get(ctx, alice().IMPI); a.SQN.Uint64() != 1 {
		t.Fatalf("SQN %d, want 1: the cancelled call stored something", a.SQN.Uint64())
	}
}
