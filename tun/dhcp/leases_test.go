package dhcp

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestExpiryHeapOrder: deadlines pushed in any order come out earliest
// first.
func TestExpiryHeapOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h expiryHeap
	var want []int64
	for range 1000 {
		at := r.Int64N(500) // duplicates too
		h.push(deadline{at: at})
		want = append(want, at)
	}
	slices.Sort(want)
	for i, w := range want {
		if got := h.pop().at; got != w {
			t.Fatalf("pop %d: %d, want %d", i, got, w)
		}
	}
	if len(h) != 0 {
		t.Fatalf("%d left", len(h))
	}
}

// TestLeaseExpiry: a lease goes when its latest deadline passes, not an
// earlier one it was given; a deadline of a lease released since does not
// remove the lease its binding holds now; and with many leases exactly those
// past their deadline go.
func TestLeaseExpiry(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	b := newLeases()
	add := func(binding string, a netip.Addr, at time.Time) *Lease {
		l := &Lease{Addr: a, Binding: binding}
		b.byBinding[binding], b.byAddr[a] = l, l
		b.setExpiry(l, at)
		return l
	}
	a1, a2 := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.3")

	renewed := add("renewed", a1, t0.Add(time.Second))
	b.setExpiry(renewed, t0.Add(time.Hour))
	old := add("again", a2, t0.Add(time.Second))
	b.releaseLocked(old.Binding)
	again := add("again", a2, t0.Add(time.Hour))
	b.expireLocked(t0.Add(time.Minute))
	if b.byBinding["renewed"] != renewed || b.byBinding["again"] != again || b.byAddr[a2] != again {
		t.Fatalf("a superseded deadline removed a lease: %v", b.byBinding)
	}
	b.expireLocked(t0.Add(2 * time.Hour))
	if len(b.byBinding) != 0 || len(b.byAddr) != 0 {
		t.Fatalf("leases past their deadline kept: %v", b.byBinding)
	}

	r := rand.New(rand.NewPCG(3, 4))
	at := map[string]time.Time{}
	base := netip.MustParseAddr("100.64.0.0")
	for i := range 2000 {
		binding := strconv.Itoa(i)
		at[binding] = t0.Add(time.Duration(r.IntN(1000)) * time.Second)
		base = base.Next()
		add(binding, base, at[binding])
	}
	for _, step := range []time.Duration{0, 250 * time.Second, 500 * time.Second, 999 * time.Second, 1000 * time.Second} {
		now := t0.Add(step)
		b.expireLocked(now)
		for binding, when := range at {
			_, kept := b.byBinding[binding]
			if kept != !now.After(when) {
				t.Fatalf("at +%v: lease %s with deadline +%v kept=%v", step, binding, when.Sub(t0), kept)
			}
		}
	}
	if len(b.byBinding) != 0 || len(b.expiry) != 0 {
		t.Fatalf("%d leases and %d deadlines left", len(b.byBinding), len(b.expiry))
	}
}

// BenchmarkExpire: one Handle's look for expired leases, with 100,000
// leases of which none is due (the usual case: the old code walked all).
func BenchmarkExpire(b *testing.B) {
	t0 := time.Unix(1e9, 0)
	ls := newLeases()
	a := netip.MustParseAddr("100.64.0.0")
	for i := range 100000 {
		a = a.Next()
		l := &Lease{Addr: a, Binding: strconv.Itoa(i)}
		ls.byBinding[l.Binding], ls.byAddr[a] = l, l
		ls.setExpiry(l, t0.Add(time.Hour))
	}
	for b.Loop() {
		ls.expireLocked(t0)
	}
}
