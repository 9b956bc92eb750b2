package hss

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
)

// Answers come from memory while the generation holds: one store call per
// identity, and none for the IMPUs an IMPUs answer named.
func TestIdentitiesCached(t *testing.T) {
	ctx := context.Background()
	s := &countingStore{MemStore: NewMemStore()}
	if err := s.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	h := newHSS(t, s, Config{})
	for range 3 {
		impus, err := h.IMPUs(ctx, alice().IMPI)
		if err != nil || !slices.Equal(impus, alice().IMPUs) {
			t.Fatalf("IMPUs = %q, %v", impus, err)
		}
		impus[0] = "sip:mallory@x" // the caller's copy
		for _, u := range alice().IMPUs {
			if impi, err := h.LookupIMPU(ctx, u); err != nil || impi != alice().IMPI {
				t.Fatalf("LookupIMPU(%s) = %q, %v", u, impi, err)
			}
		}
	}
	if g, l := s.gets.Load(), s.lookups.Load(); g != 1 || l != 0 {
		t.Fatalf("%d Gets and %d LookupIMPUs reached the store, want 1 and 0", g, l)
	}
	// Unknown identities are asked every time and not kept.
	for range 2 {
		if _, err := h.LookupIMPU(ctx, "sip:nobody@x"); !errors.Is(err, ErrUnknownIMPU) {
			t.Fatalf("unknown IMPU: %v", err)
		}
		if _, err := h.IMPUs(ctx, "nobody@x"); !errors.Is(err, ErrUnknownSubscriber) {
			t.Fatalf("unknown IMPI: %v", err)
		}
	}
	if g, l := s.gets.Load(), s.lookups.Load(); g != 3 || l != 2 {
		t.Fatalf("%d Gets and %d LookupIMPUs after unknown identities, want 3 and 2", g, l)
	}
	if n := h.ids.len(); n != 3 {
		t.Fatalf("cache holds %d entries, want 3 (alice's IMPI and two IMPUs)", n)
	}
}

// A change made through another handle of the file (what `imsec sub`
// in another process is to the SQLite store), or by hand with SQL, is seen
// by the next lookup.
func TestIdentitiesSeeOtherWriters(t *testing.T) {
	forEachSharedStore(t, func(t *testing.T, mine, other Store) {
		ctx := context.Background()
		if err := other.Add(ctx, alice()); err != nil {
			t.Fatal(err)
		}
		h := newHSS(t, mine, Config{})
		warm := func() {
			t.Helper()
			if _, err := h.IMPUs(ctx, alice().IMPI); err != nil {
				t.Fatal(err)
			}
			if _, err := h.LookupIMPU(ctx, "tel:+15550100"); err != nil {
				t.Fatal(err)
			}
		}
		warm()
		if err := other.Delete(ctx, alice().IMPI); err != nil {
			t.Fatal(err)
		}
		if _, err := h.LookupIMPU(ctx, "tel:+15550100"); !errors.Is(err, ErrUnknownIMPU) {
			t.Fatalf("LookupIMPU after delete: %v", err)
		}
		if _, err := h.IMPUs(ctx, alice().IMPI); !errors.Is(err, ErrUnknownSubscriber) {
			t.Fatalf("IMPUs after delete: %v", err)
		}

		// Back with other IMPUs: the old one is gone, the new ones there.
		a := alice()
		a.IMPUs = []string{"sip:alice@new.example"}
		if err := other.Add(ctx, a); err != nil {
			t.Fatal(err)
		}
		if impus, err := h.IMPUs(ctx, a.IMPI); err != nil || !slices.Equal(impus, a.IMPUs) {
			t.Fatalf("IMPUs after re-provisioning = %q, %v", impus, err)
		}
		if _, err := h.LookupIMPU(ctx, "tel:+15550100"); !errors.Is(err, ErrUnknownIMPU) {
			t.Fatalf("old IMPU after re-provisioning: %v", err)
		}
		if impi, err := h.LookupIMPU(ctx, "sip:alice@new.example"); err != nil || impi != a.IMPI {
			t.Fatalf("new IMPU = %q, %v", impi, err)
		}

		// A hand edit moves the generation too (triggers, not our code).
		sq, ok := other.(*SQLiteStore)
		if !ok {
			return
		}
		if err := other.Add(ctx, bob()); err != nil {
			t.Fatal(err)
		}
		if impi, _ := h.LookupIMPU(ctx, "sip:alice@new.example"); impi != a.IMPI {
			t.Fatalf("before the edit: %q", impi)
		}
		if _, err := sq.db.ExecContext(ctx, "UPDATE impu SET impi = ? WHERE impu = ?", bob().IMPI, "sip:alice@new.example"); err != nil {
			t.Fatal(err)
		}
		if impi, err := h.LookupIMPU(ctx, "sip:alice@new.example"); err != nil || impi != bob().IMPI {
			t.Fatalf("after moving the IMPU by hand: %q, %v; want %q", impi, err, bob().IMPI)
		}
	})
}

// An entry read after the generation moved is not kept under the older
// generation it was asked with.
func TestIdentitiesKeepNothingUnderAStaleGeneration(t *testing.T) {
	var c identities
	if _, ok := c.ownerOf(1, "sip:a@x"); ok {
		t.Fatal("empty cache answered")
	}
	c.ownerOf(2, "sip:b@x") // another lookup saw generation 2
	c.putOwner(1, "sip:a@x", "a@x")
	c.putIMPUs(1, "a@x", []string{"sip:a@x"})
	if _, ok := c.ownerOf(2, "sip:a@x"); ok {
		t.Fatal("answer read under generation 1 served at generation 2")
	}
	if _, ok := c.impusOf(2, "a@x"); ok {
		t.Fatal("IMPUs read under generation 1 served at generation 2")
	}
	c.putOwner(2, "sip:b@x", "b@x")
	if impi, ok := c.ownerOf(2, "sip:b@x"); !ok || impi != "b@x" {
		t.Fatalf("current entry: %q, %v", impi, ok)
	}
	if _, ok := c.ownerOf(3, "sip:b@x"); ok {
		t.Fatal("entry survived a generation change")
	}
}

// len is how many entries the cache holds, in all shards.
func (c *identities) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.owner) + len(s.impus)
		s.mu.RUnlock()
	}
	return n
}

// An answer of a newer generation moves its shard on (the older entries
// go), and one older than its shard is not kept: with one lock per shard,
// no shard serves an entry read under a generation older than one a
// lookup or an answer has already seen there.
func TestIdentitiesShardGenerations(t *testing.T) {
	var c identities
	c.putIMPUs(1, "a@x", []string{"sip:a@x", "tel:+1"})
	if impus, ok := c.impusOf(1, "a@x"); !ok || !slices.Equal(impus, []string{"sip:a@x", "tel:+1"}) {
		t.Fatalf("impusOf after put: %q, %v", impus, ok)
	}
	for _, u := range []string{"sip:a@x", "tel:+1"} {
		if impi, ok := c.ownerOf(1, u); !ok || impi != "a@x" {
			t.Fatalf("ownerOf(%s) = %q, %v", u, impi, ok)
		}
	}
	c.putOwner(2, "sip:a@x", "b@x") // a newer answer: its shard moves to 2
	if impi, ok := c.ownerOf(2, "sip:a@x"); !ok || impi != "b@x" {
		t.Fatalf("ownerOf at 2 = %q, %v", impi, ok)
	}
	c.putOwner(1, "sip:a@x", "a@x") // older than the shard: dropped
	if impi, _ := c.ownerOf(2, "sip:a@x"); impi != "b@x" {
		t.Fatalf("an answer of generation 1 replaced one of 2: %q", impi)
	}
	// Many identities spread over the shards, every one found.
	for i := range 1000 {
		c.putIMPUs(3, fmt.Sprintf("u%d@x", i), []string{fmt.Sprintf("sip:u%d@x", i)})
	}
	used := 0
	for i := range c.shards {
		if len(c.shards[i].impus) > 0 {
			used++
		}
	}
	if used < identityShards*3/4 {
		t.Fatalf("1000 IMPIs in %d of %d shards", used, identityShards)
	}
	for i := range 1000 {
		if impi, ok := c.ownerOf(3, fmt.Sprintf("sip:u%d@x", i)); !ok || impi != fmt.Sprintf("u%d@x", i) {
			t.Fatalf("ownerOf(sip:u%d@x) = %q, %v", i, impi, ok)
		}
	}
}

// BenchmarkIdentitiesParallel is a registration burst's use of the cache:
// 128 goroutines (the P-CSCF's REGISTER handlers) looking up the IMPUs of
// 100,000 subscribers, one in 64 of them caching a subscriber's answer.
func BenchmarkIdentitiesParallel(b *testing.B) {
	const n = 100_000
	var c identities
	impis := make([]string, n)
	for i := range impis {
		impis[i] = fmt.Sprintf("ue%06d@bench.example", i)
		c.putIMPUs(0, impis[i], nil) // no generation yet: not cached
	}
	c.impusOf(1, impis[0])
	for i, impi := range impis {
		c.putIMPUs(1, impi, []string{"sip:" + impi, fmt.Sprintf("tel:+1555%06d", i)})
	}
	var next atomic.Uint64
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			impi := impis[i%n]
			if i%64 == 0 {
				c.putIMPUs(1, impi, []string{"sip:" + impi})
				continue
			}
			if _, ok := c.impusOf(1, impi); !ok {
				b.Fatal("miss")
			}
		}
	})
}
