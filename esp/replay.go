package esp

import (
	"sync"
	"sync/atomic"
)

// window is the RFC 4303 §3.4.3 anti-replay window, kept as in RFC 6479: a
// ring of 64-bit words, one bit per sequence number, where moving the right
// edge clears whole words instead of shifting the bitmap. With ESN the high
// 32 bits of a received sequence number are inferred as in RFC 4303
// Appendix A2.2.
//
// check (before the crypto) takes no lock: it reads the top and one word
// atomically. update (after the crypto) is serialised by a small mutex and
// is the authority: a packet that passed a stale check is refused there.
//
// The ring is made by the first update, not by init: most SAs of a
// P-CSCF with many UEs never receive a packet (a registration's port-c
// SA, the media SAs of a UE in no call, a stranger's temporary set), and
// a 1,024-packet window is 256 bytes each. check only reads the ring once
// top is not 0, i.e. after the update that made it (its store of top
// publishes the ring).
type window struct {
	mu   sync.Mutex      // serialises update
	top  atomic.Uint64   // highest authenticated sequence number, 0 before any
	size uint32          // W: a sequence number s is in the window iff top-W < s ≤ top
	mask uint32          // len(bits)-1
	bits []atomic.Uint64 // ring, nil until the first update; bit s%64 of word (s/64)&mask stands for s
	esn  bool
}

func (w *window) init(size int, esn bool) {
	if size < 64 {
		size = 64
	}
	size = (size + 63) &^ 63
	words := 1
	for words < size/64+1 { // one spare word: the top word is partly in the future
		words <<= 1
	}
	w.top.Store(0)
	w.size = uint32(size)
	w.mask = uint32(words - 1)
	w.bits = nil
	w.esn = esn
}

// infer returns the full sequence number of a received low half (RFC 4303
// Appendix A2.2) relative to the given top, or false if it can only be
// left of the window.
func (w *window) infer(top uint64, seql uint32) (uint64, bool) {
	if !w.esn {
		return uint64(seql), seql != 0
	}
	W := w.size
	th, tl := uint32(top>>32), uint32(top)
	var seqh uint32
	if tl >= W-1 { // Case A: the window is inside one 2^32 subspace
		if seql >= tl-W+1 {
			seqh = th
		} else {
			if th == ^uint32(0) {
				return 0, false // would pass 2^64
			}
			seqh = th + 1
		}
	} else { // Case B: the window spans two subspaces
		if seql >= tl-W+1 { // tl-W+1 wraps: seql is in the previous subspace
			if th == 0 {
				return 0, false
			}
			seqh = th - 1
		} else {
			seqh = th
		}
	}
	seq := uint64(seqh)<<32 | uint64(seql)
	return seq, seq != 0
}

// check is the cheap pre-crypto test: infer the full sequence number and
// report whether it could be new (right of the window, or in it and
// unseen). It takes no lock and changes nothing.
func (w *window) check(seql uint32) (uint64, bool) {
	top := w.top.Load()
	seq, ok := w.infer(top, seql)
	if !ok || seq > top {
		return seq, ok
	}
	if top-seq >= uint64(w.size) {
		return seq, false
	}
	return seq, w.bits[(seq>>6)&uint64(w.mask)].Load()&(1<<(seq&63)) == 0
}

// update marks an authenticated seq as seen, moving the right edge if it is
// new. It reports false if seq was seen meanwhile (a concurrent duplicate)
// or fell out of the window.
func (w *window) update(seq uint64) bool {
	if seq == 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.bits == nil {
		w.bits = make([]atomic.Uint64, w.mask+1)
	}
	top := w.top.Load()
	if seq > top {
		cur, next := top>>6, seq>>6
		if d := next - cur; d > 0 {
			mask := uint64(w.mask)
			if d > mask+1 {
				d = mask + 1
			}
			for i := uint64(1); i <= d; i++ {
				w.bits[(cur+i)&mask].Store(0)
			}
		}
		w.top.Store(seq)
	} else if top-seq >= uint64(w.size) {
		return false
	}
	word, bit := &w.bits[(seq>>6)&uint64(w.mask)], uint64(1)<<(seq&63)
	old := word.Load()
	if old&bit != 0 {
		return false
	}
	word.Store(old | bit)
	return true
}
