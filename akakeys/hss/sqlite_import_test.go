package hss

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// rangeSubs is subscribers 1..n of the default test range.
func rangeSubs(n int) []Subscriber {
	r := TestRange{Prefix: "ue", Domain: "ims.example", Start: 1, Count: n}
	subs := make([]Subscriber, n)
	for i := range subs {
		subs[i] = r.Subscriber(r.Start + i)
		if i%3 == 0 { // some with two IMPUs, so IMPU chunks do not line up with subscriber chunks
			subs[i].IMPUs = append(subs[i].IMPUs, fmt.Sprintf("tel:+1555%07d", i))
		}
	}
	return subs
}

func TestAddAll(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	subs := rangeSubs(2*importChunk + 37) // two full chunks and a rest
	var calls []int
	if err := s.AddAll(ctx, subs, func(done int) { calls = append(calls, done) }); err != nil {
		t.Fatal(err)
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(subs) {
		t.Fatalf("%d subscribers stored, want %d", len(list), len(subs))
	}
	for i, want := range subs { // List sorts by IMPI, as the range is
		if !equalSub(list[i], want) {
			t.Fatalf("subscriber %d: %v, want %v", i, list[i], want)
		}
	}
	if len(calls) != 1 || calls[0] != len(subs) {
		t.Errorf("progress calls %v, want [%d]", calls, len(subs))
	}
	h := newHSS(t, s, Config{})
	if impi, err := h.LookupIMPU(ctx, "tel:+15550000003"); err != nil || impi != subs[3].IMPI {
		t.Errorf("LookupIMPU of an imported IMPU: %q, %v", impi, err)
	}
}

// Any failure stores nothing and names the first subscriber at fault,
// wherever it is: in a full chunk, in the rest, against the database or
// within the batch.
func TestAddAllAllOrNothing(t *testing.T) {
	ctx := context.Background()
	n := 2*importChunk + 37
	cases := []struct {
		name  string
		edit  func(subs []Subscriber)
		index int
		is    error
	}{
		{"invalid in the rest", func(s []Subscriber) { s[2*importChunk+5].IMPUs = nil }, 2*importChunk + 5, ErrInvalidSubscriber},
		{"IMPI in the database, second chunk", func(s []Subscriber) { s[150].IMPI = bob().IMPI }, 150, ErrDuplicateIMPI},
		{"IMPU in the database, second chunk", func(s []Subscriber) { s[151].IMPUs = []string{"sip:x@y", bob().IMPUs[0]} }, 151, ErrIMPUTaken},
		// Row 120 is bad against the database and row 110 too: 110 is named.
		{"first of two in a chunk", func(s []Subscriber) {
			s[120].IMPI = bob().IMPI
			s[110].IMPUs = []string{bob().IMPUs[0]}
		}, 110, ErrIMPUTaken},
		{"IMPU in the database, last of the rest", func(s []Subscriber) { s[n-1].IMPUs = bob().IMPUs }, n - 1, ErrIMPUTaken},
		{"IMPI twice in the batch", func(s []Subscriber) { s[199].IMPI = s[3].IMPI }, 199, ErrDuplicateIMPI},
		{"IMPU twice in the batch", func(s []Subscriber) { s[7].IMPUs = append(s[7].IMPUs, s[6].IMPUs[0]) }, 7, ErrIMPUTaken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, _ := openTemp(t)
			if err := s.Add(ctx, bob()); err != nil {
				t.Fatal(err)
			}
			genBefore, _ := s.Generation(ctx)
			subs := rangeSubs(n)
			c.edit(subs)
			err := s.AddAll(ctx, subs, nil)
			var be *BatchError
			if !errors.As(err, &be) || be.Index != c.index || !errors.Is(err, c.is) {
				t.Fatalf("AddAll: %v; want a BatchError at index %d wrapping %v", err, c.index, c.is)
			}
			list, err := s.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].IMPI != bob().IMPI {
				t.Fatalf("%d subscribers stored after a failed AddAll, want bob alone", len(list))
			}
			if gen, _ := s.Generation(ctx); gen != genBefore {
				t.Fatalf("generation moved from %d to %d though nothing was stored", genBefore, gen)
			}
		})
	}
}
