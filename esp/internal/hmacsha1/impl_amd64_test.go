//go:build amd64 && !purego

package hmacsha1

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// forEachPath runs f with the portable block function and, if this CPU has
// SHA-NI, with the assembly: pairs only, and with AVX-512 also four streams.
func forEachPath(t *testing.T, f func(t *testing.T)) {
	defer func(sha, four bool) { useSHANI, use4 = sha, four }(useSHANI, use4)
	sha, four := useSHANI, use4
	t.Run("portable", func(t *testing.T) {
		useSHANI, use4 = false, false
		f(t)
	})
	if !sha {
		t.Log("no SHA-NI: assembly not tested")
		return
	}
	t.Run("sha-ni", func(t *testing.T) {
		useSHANI, use4 = true, false
		f(t)
	})
	if !four {
		t.Log("no AVX-512: four-stream kernel not tested")
		return
	}
	t.Run("sha-ni-avx512", func(t *testing.T) {
		useSHANI, use4 = true, true
		f(t)
	})
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

// TestBlock4SHANI compares the four-stream kernel with blockGeneric on each
// stream, with different states, messages and alignments per stream, and
// also with streams sharing one message (as blocks does for three).
func TestBlock4SHANI(t *testing.T) {
	if !use4 {
		t.Skip("no SHA-NI and AVX-512")
	}
	r := rand.New(rand.NewPCG(17, 18))
	for iter := range 500 {
		n := 1 + r.IntN(9)
		var h, g [4][5]uint32
		var hp [4]*[5]uint32
		var pp [4]*byte
		var ps [4][]byte
		for i := range 4 {
			off := r.IntN(64)
			ps[i] = randBytes(r, off+n*blockSize)[off:]
			if iter%4 == 0 && i == 3 {
				ps[i] = ps[0]
			}
			pp[i] = &ps[i][0]
			h[i] = randState(r)
			hp[i] = &h[i]
		}
		g = h
		block4SHANI(&hp, &pp, n)
		for i := range 4 {
			blockGeneric(&g[i], ps[i])
		}
		if h != g {
			t.Fatalf("%d blocks: block4SHANI %x, blockGeneric %x", n, h, g)
		}
	}
}

// TestBlocks checks blocks for one to four streams of zero to three blocks
// against blockGeneric on each path.
func TestBlocks(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	forEachPath(t, func(t *testing.T) {
		for k := 1; k <= 4; k++ {
			for n := range 4 {
				var h, g [4][5]uint32
				var hp [4]*[5]uint32
				var ps [4][]byte
				for i := range k {
					ps[i] = randBytes(r, n*blockSize)
					h[i] = randState(r)
					hp[i] = &h[i]
				}
				g = h
				blocks(&hp, &ps, k, n)
				for i := range k {
					blockGeneric(&g[i], ps[i])
				}
				if h != g {
					t.Fatalf("%d streams of %d blocks: blocks %x, blockGeneric %x", k, n, h, g)
				}
			}
		}
	})
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
	defer func(sha, four bool) { useSHANI, use4 = sha, four }(useSHANI, use4)
	useSHANI, use4 = false, false
	portable := sums()
	for i := range asm {
		if !bytes.Equal(asm[i][:], portable[i][:]) {
			t.Errorf("job %d: SHA-NI %x, portable %x", i/2, asm[i], portable[i])
		}
	}
}
