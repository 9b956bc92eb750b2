//go:build amd64 && !purego

package hmacsha1

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// forEachPath runs f with the portable block function and, if this CPU has
// SHA-NI, with the assembly.
func forEachPath(t *testing.T, f func(t *testing.T)) {
	t.Run("portable", func(t *testing.T) {
		defer func(old bool) { useSHANI = old }(useSHANI)
		useSHANI = false
		f(t)
	})
	if useSHANI {
		t.Run("sha-ni", f)
	} else {
		t.Log("no SHA-NI: assembly not tested")
	}
}

func requireSHANI(t *testing.T) {
	if !useSHANI {
		t.Skip("no SHA-NI")
	}
}

func randState(r *rand.Rand) (h [5]uint32) {
	for i := range h {
		h[i] = r.Uint32()
	}
	return h
}

// TestBlockSHANI compares the one-stream kernel with blockGeneric from random
// chaining values over 1..9 blocks at every alignment.
func TestBlockSHANI(t *testing.T) {
	requireSHANI(t)
	r := rand.New(rand.NewPCG(11, 12))
	for range 500 {
		off, n := r.IntN(16), 1+r.IntN(9)
		p := randBytes(r, off+n*blockSize)[off:]
		h := randState(r)
		g := h
		blockSHANI(&h, &p[0], n)
		blockGeneric(&g, p)
		if h != g {
			t.Fatalf("%d blocks at offset %d: blockSHANI %x, blockGeneric %x", n, off, h, g)
		}
	}
}

// TestBlock2SHANI compares the two-stream kernel with blockGeneric on each
// stream, with different states, messages and alignments per stream.
func TestBlock2SHANI(t *testing.T) {
	requireSHANI(t)
	r := rand.New(rand.NewPCG(13, 14))
	for range 500 {
		offa, offb, n := r.IntN(16), r.IntN(16), 1+r.IntN(9)
		pa := randBytes(r, offa+n*blockSize)[offa:]
		pb := randBytes(r, offb+n*blockSize)[offb:]
		ha, hb := randState(r), randState(r)
		ga, gb := ha, hb
		block2SHANI(&ha, &hb, &pa[0], &pb[0], n)
		blockGeneric(&ga, pa)
		blockGeneric(&gb, pb)
		if ha != ga || hb != gb {
			t.Fatalf("%d blocks: block2SHANI %x %x, blockGeneric %x %x", n, ha, hb, ga, gb)
		}
	}
}

// TestPathsAgree checks that the assembly and the portable path give the same
// HMACs, through Sum and SumN.
func TestPathsAgree(t *testing.T) {
	requireSHANI(t)
	r := rand.New(rand.NewPCG(15, 16))
	jobs := make([]Job, 9)
	for i := range jobs {
		jobs[i] = Job{Key: New(randBytes(r, r.IntN(100))), Msg: randBytes(r, r.IntN(3000)), Tail: randBytes(r, r.IntN(9))}
	}
	sums := func() (s [][Size]byte) {
		SumN(jobs)
		for _, j := range jobs {
			var out [Size]byte
			j.Key.Sum(&out, j.Msg, j.Tail)
			s = append(s, j.Sum, out)
		}
		return s
	}
	asm := sums()
	useSHANI = false
	defer func() { useSHANI = true }()
	portable := sums()
	for i := range asm {
		if !bytes.Equal(asm[i][:], portable[i][:]) {
			t.Errorf("job %d: SHA-NI %x, portable %x", i/2, asm[i], portable[i])
		}
	}
}
