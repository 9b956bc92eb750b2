package tun

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync/atomic"

	"github.com/imsec/imsec/esp"
)

// table is a hash map read per packet without a lock and written under
// its owner's lock (Pump.wmu): copy-on-write (STYLE 14) per bucket instead
// of per table. It is a power-of-two array of buckets, each an atomic
// pointer to an immutable chain of nodes. Putting a new key stores a new
// node in front of its bucket's chain; replacing or removing one copies
// the nodes before it in the chain (about one). So an install or a removal
// costs the same at 100k entries as at 10, and a lookup hashes the key,
// loads one bucket and follows its chain: two dependent memory accesses
// when the table is out of the caches, no lock, no allocation.
//
// The array doubles when the entries outnumber the buckets and shrinks to
// a quarter when they fall below an eighth of them (so removals give the
// memory back). A resize is incremental, so that no single write pays
// for the whole table (100k entries took 12 to 25 ms to move at once on
// the two-core machine, all of it under the registrar's lock): the new
// array is published empty, with the old one beside it, and each later
// write moves the next migrateStep groups of buckets across, in order
// (see tableArray.old). The bucket a key belongs to is the top bits of
// its hash under the table's one seed, so the entries of old bucket i go
// to new buckets 2i and 2i+1, or those of old buckets 4i to 4i+3 to new
// bucket i: a group.
//
// The hash is keyed with a random seed per table. The keys are ours (SPIs
// drawn at random, addresses handed out in order), and a packet can only
// look a key up, not add one; but a seed costs nothing and leaves no
// pattern of keys that fills one bucket.
//
// A table must be set up with init before use.
type table[K comparable, V any] struct {
	arr  atomic.Pointer[tableArray[K, V]]
	hash func(seed uint64, k K) uint64 // set once
	n    int                           // entries; guarded by the owner's lock
}

type tableArray[K comparable, V any] struct {
	seed  uint64 // set once; the table's, kept by every resize
	shift uint8  // set once; 64 - log2(len(b)): a hash's top bits pick its bucket
	b     []atomic.Pointer[tableNode[K, V]]

	// While a resize is under way, old is the array it replaces, and the
	// groups below done have been moved here: a key of such a group is in
	// b, a key of a later group still in old (whose buckets are written
	// until their group moves and never after). Once every group has
	// moved, old is nil. Only the owner writes them, under its lock; done
	// is stored before old is cleared.
	old  atomic.Pointer[tableArray[K, V]]
	done atomic.Uint64
}

// tableNode is an entry and the rest of its chain; it is never modified
// once stored in a bucket.
type tableNode[K comparable, V any] struct {
	k    K
	v    V
	next *tableNode[K, V]
}

const (
	// minBuckets is the smallest array (a Pump with one peer keeps three
	// tables of it).
	minBuckets = 8
	// migrateStep is how many groups of buckets each write moves while a
	// resize is under way. 16 finishes a resize before the next one can
	// be due (a doubling to 2s buckets moves s groups and the next one
	// comes s puts later; a shrink to s/4 moves s/4 groups, and the next
	// resize comes at least 3s/32 writes later); if one is due anyway,
	// the rest moves at once.
	migrateStep = 16
)

// init empties t and sets its hash (of k under a seed).
func (t *table[K, V]) init(hash func(seed uint64, k K) uint64) {
	t.hash, t.n = hash, 0
	t.arr.Store(newTableArray[K, V](minBuckets, rand.Uint64()))
}

// len is the number of entries. The owner's lock must be held.
func (t *table[K, V]) len() int { return t.n }

func newTableArray[K comparable, V any](size int, seed uint64) *tableArray[K, V] {
	return &tableArray[K, V]{seed: seed, shift: uint8(64 - bits.TrailingZeros(uint(size))),
		b: make([]atomic.Pointer[tableNode[K, V]], size)}
}

// groupShift is the shift that turns a hash into its group while a is
// being filled from o: the coarser array's bucket.
func groupShift[K comparable, V any](a, o *tableArray[K, V]) uint8 { return max(a.shift, o.shift) }

// bucket is the bucket that holds hash h now.
func (a *tableArray[K, V]) bucket(h uint64) *atomic.Pointer[tableNode[K, V]] {
	if o := a.old.Load(); o != nil && h>>groupShift(a, o) >= a.done.Load() {
		return &o.b[h>>o.shift]
	}
	return &a.b[h>>a.shift]
}

// get returns k's value. It takes no lock and does not allocate.
func (t *table[K, V]) get(k K) (V, bool) {
	a := t.arr.Load()
	for n := a.bucket(t.hash(a.seed, k)).Load(); n != nil; n = n.next {
		if n.k == k {
			return n.v, true
		}
	}
	var zero V
	return zero, false
}

// put sets k to v and returns the value it replaced. The owner's lock must
// be held.
func (t *table[K, V]) put(k K, v V) (old V, replaced bool) {
	a := t.arr.Load()
	bp := a.bucket(t.hash(a.seed, k))
	head := bp.Load()
	for n := head; n != nil; n = n.next {
		if n.k == k {
			old = n.v
			bp.Store(rechain(head, n, &tableNode[K, V]{k: k, v: v, next: n.next}))
			t.migrate(a, migrateStep)
			return old, true
		}
	}
	bp.Store(&tableNode[K, V]{k: k, v: v, next: head})
	t.n++
	if t.n > len(a.b) {
		t.resize(a, 2*len(a.b))
	} else {
		t.migrate(a, migrateStep)
	}
	return old, false
}

// remove deletes k and returns its value. The owner's lock must be held.
func (t *table[K, V]) remove(k K) (old V, ok bool) {
	a := t.arr.Load()
	bp := a.bucket(t.hash(a.seed, k))
	head := bp.Load()
	for n := head; n != nil; n = n.next {
		if n.k != k {
			continue
		}
		bp.Store(rechain(head, n, n.next))
		t.n--
		if len(a.b) > minBuckets && t.n < len(a.b)/8 {
			t.resize(a, len(a.b)/4)
		} else {
			t.migrate(a, migrateStep)
		}
		return n.v, true
	}
	t.migrate(a, migrateStep)
	return old, false
}

// rechain returns a copy of the chain from head in which node n (one of
// it) is replaced by the chain rest: the nodes before n are copied, the
// ones after are shared.
func rechain[K comparable, V any](head, n, rest *tableNode[K, V]) *tableNode[K, V] {
	if head == n {
		return rest
	}
	first := &tableNode[K, V]{k: head.k, v: head.v}
	last := first
	for m := head.next; m != n; m = m.next {
		c := &tableNode[K, V]{k: m.k, v: m.v}
		last.next, last = c, c
	}
	last.next = rest
	return first
}

// resize starts moving the entries of a, the current array, to a new one
// of size buckets (a power of two, at least minBuckets), finishing first
// any resize still under way. The owner's lock must be held.
func (t *table[K, V]) resize(a *tableArray[K, V], size int) {
	t.migrate(a, len(a.b))
	na := newTableArray[K, V](max(size, minBuckets), a.seed)
	na.old.Store(a)
	t.arr.Store(na)
	t.migrate(na, migrateStep)
}

// migrate moves up to groups groups of buckets into a from the array it
// replaces, if a resize is under way. The owner's lock must be held.
func (t *table[K, V]) migrate(a *tableArray[K, V], groups int) {
	o := a.old.Load()
	if o == nil {
		return
	}
	gs := groupShift(a, o)
	total := uint64(1) << (64 - gs)
	g := a.done.Load()
	for end := min(g+uint64(groups), total); g < end; g++ {
		// The group's buckets in o and in a.
		olo, ohi := g<<(gs-o.shift), (g+1)<<(gs-o.shift)
		alo, ahi := g<<(gs-a.shift), (g+1)<<(gs-a.shift)
		count := 0
		for i := olo; i < ohi; i++ {
			for n := o.b[i].Load(); n != nil; n = n.next {
				count++
			}
		}
		if count > 0 {
			nodes := make([]tableNode[K, V], count)
			var heads [2]*tableNode[K, V] // a group is one bucket of a, or two after a doubling
			for i := olo; i < ohi; i++ {
				for n := o.b[i].Load(); n != nil; n = n.next {
					j := t.hash(a.seed, n.k)>>a.shift - alo
					count--
					nodes[count] = tableNode[K, V]{k: n.k, v: n.v, next: heads[j]}
					heads[j] = &nodes[count]
				}
			}
			for j := range ahi - alo {
				a.b[alo+j].Store(heads[j])
			}
		}
		a.done.Store(g + 1)
	}
	if g == total {
		a.old.Store(nil)
	}
}

// entries yields a's nodes, each bucket as it was when it was loaded (and
// during a resize, each group from whichever array held it then). It
// takes no lock.
func (a *tableArray[K, V]) entries() iter.Seq[*tableNode[K, V]] {
	return func(yield func(*tableNode[K, V]) bool) {
		o := a.old.Load()
		if o == nil {
			for i := range a.b {
				for n := a.b[i].Load(); n != nil; n = n.next {
					if !yield(n) {
						return
					}
				}
			}
			return
		}
		gs := groupShift(a, o)
		done := a.done.Load()
		for g := range uint64(1) << (64 - gs) {
			from, shift := a, a.shift
			if g >= done {
				from, shift = o, o.shift
			}
			for i := g << (gs - shift); i < (g+1)<<(gs-shift); i++ {
				for n := from.b[i].Load(); n != nil; n = n.next {
					if !yield(n) {
						return
					}
				}
			}
		}
	}
}

// values yields every value (see entries). It takes no lock; a value put
// or removed meanwhile may or may not be seen.
func (t *table[K, V]) values() iter.Seq[V] {
	return func(yield func(V) bool) {
		for n := range t.arr.Load().entries() {
			if !yield(n.v) {
				return
			}
		}
	}
}

// mix is the finaliser of MurmurHash3 (fmix64): a bijection in which every
// input bit flips each output bit with probability about one half.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func hashSPI(seed uint64, spi esp.SPI) uint64 { return mix(seed ^ uint64(spi)) }

// hashAddr folds the address's two halves into one word first: one mix
// instead of two (this is a third of the lookup when the table is in the
// cache). Addresses that fold alike only share a bucket.
func hashAddr(seed uint64, a netip.Addr) uint64 {
	b := a.As16()
	return mix(seed ^ bits.RotateLeft64(binary.BigEndian.Uint64(b[:8]), 32) ^ binary.BigEndian.Uint64(b[8:]))
}

func hashID(seed uint64, id uint64) uint64 { return mix(seed ^ id) }
