package esp

import (
	"math"
	"math/rand/v2"
	"testing"
)

// model is the slow obvious anti-replay window: a set of every sequence
// number accepted and the highest one.
type model struct {
	seen    map[uint64]bool
	highest uint64
	size    uint64
}

func (m *model) accept(seq uint64) bool {
	if seq == 0 || m.seen[seq] || (seq <= m.highest && m.highest-seq >= m.size) {
		return false
	}
	m.seen[seq] = true
	m.highest = max(m.highest, seq)
	return true
}

// TestWindowModel drives the RFC 6479 ring and the model with the same
// random sequence numbers — mostly near the top, some jumps, some
// duplicates, some far behind — and requires the same decisions.
func TestWindowModel(t *testing.T) {
	for _, size := range []int{64, 100, 1024, 4096} {
		for seed := range uint64(20) {
			r := rand.New(rand.NewPCG(seed, uint64(size)))
			var w window
			w.init(size, false)
			m := &model{seen: map[uint64]bool{}, size: uint64(w.size)}
			var recent []uint64
			for i := range 20000 {
				var seq uint64
				switch k := r.IntN(100); {
				case k < 50: // just around the top
					seq = m.highest + 1 + uint64(r.IntN(8))
					if r.IntN(3) == 0 && m.highest > 10 {
						seq = m.highest - uint64(r.IntN(10))
					}
				case k < 70: // inside or just outside the window
					seq = m.highest - uint64(r.IntN(int(w.size)+70)) + 35
				case k < 80: // a duplicate of something recent
					if len(recent) > 0 {
						seq = recent[r.IntN(len(recent))]
					}
				case k < 85: // a jump ahead, across several words or the whole ring
					seq = m.highest + uint64(r.IntN(3*int(w.size)))
				case k < 90:
					seq = uint64(r.IntN(3))
				default:
					seq = m.highest + uint64(r.IntN(130))
				}
				if seq > math.MaxUint32 {
					seq = math.MaxUint32
				}
				_, fresh := w.check(uint32(seq))
				want := m.accept(seq)
				if fresh != want {
					t.Fatalf("size %d seed %d step %d: check(%d) = %v, model %v (top %d)", size, seed, i, seq, fresh, want, m.highest)
				}
				if fresh && !w.update(seq) {
					t.Fatalf("size %d seed %d step %d: update(%d) refused a fresh number", size, seed, i, seq)
				}
				if !fresh && seq != 0 && w.update(seq) {
					t.Fatalf("size %d seed %d step %d: update(%d) took a stale number", size, seed, i, seq)
				}
				if w.top.Load() != m.highest {
					t.Fatalf("top %d, model %d", w.top.Load(), m.highest)
				}
				recent = append(recent, seq)
				if len(recent) > 50 {
					recent = recent[1:]
				}
			}
		}
	}
}

// TestESNInference checks RFC 4303 Appendix A2.2 inference: any sequence
// number in the window or ahead of it by less than 2^32 - W is recovered
// from its low 32 bits, across subspace boundaries.
func TestESNInference(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var w window
	w.init(1024, true)
	W := int64(w.size)
	tops := []uint64{0, 1, 1023, 1024, 1025, math.MaxUint32 - 1, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint32 + 500,
		5<<32 + 3, 5<<32 + 1022, 5<<32 + 1023, math.MaxUint64 - 10}
	for range 200 {
		tops = append(tops, r.Uint64()>>1, uint64(r.Uint32())<<32+uint64(r.IntN(2000)))
	}
	for _, top := range tops {
		w.top.Store(top)
		for _, d := range []int64{-W + 1, -W + 2, -1, 0, 1, 2, 1000, 1 << 20, 1<<32 - W - 1, 1<<32 - W} {
			for range 3 {
				seq := uint64(int64(top) + d)
				if d < 0 && uint64(-d) > top || d > 0 && seq < top {
					continue // before 0 or past 2^64
				}
				if seq == 0 {
					continue
				}
				got, ok := w.infer(w.top.Load(), uint32(seq))
				if !ok || got != seq {
					t.Fatalf("top %#x, seq %#x (d=%d): inferred %#x, %v", top, seq, d, got, ok)
				}
				d = min(max(d+int64(r.IntN(3))-1, -W+1), 1<<32-W)
			}
		}
		// Left of the window: inference lands in a position the window
		// rejects (it is taken as ahead by almost 2^32, so the ICV fails,
		// or as old and refused).
		if top > uint64(W)+10 {
			seq := top - uint64(W) - 5
			if got, ok := w.infer(w.top.Load(), uint32(seq)); ok && got == seq {
				t.Fatalf("top %#x: old seq %#x inferred exactly", top, seq)
			}
		}
	}
	// Non-ESN: the low bits are the sequence number; 0 is never valid.
	w.init(64, false)
	if s, ok := w.infer(w.top.Load(), 7); !ok || s != 7 {
		t.Fatal(s, ok)
	}
	if _, ok := w.infer(w.top.Load(), 0); ok {
		t.Fatal("seq 0 accepted")
	}
	// ESN at the start: the window does not reach into a negative subspace.
	w.init(64, true)
	if _, ok := w.infer(w.top.Load(), math.MaxUint32); ok {
		t.Fatal("seq 2^32-1 at top 0 inferred into subspace -1")
	}
}
