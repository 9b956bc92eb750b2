package aescbc

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestEncryptCBCNAgainstStdlib checks EncryptCBCN against crypto/cipher on
// random batches: 0..20 jobs, equal and unequal lengths (0..100 blocks), every
// key size, each IV just before its buffer as in an ESP packet. Every
// combination of lane kernels (8, 4, 2, 1) and refills is reached.
func TestEncryptCBCNAgainstStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	fill := func(b []byte) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	for round := range 600 {
		keyLen := []int{16, 24, 32}[round%3]
		key := make([]byte, keyLen)
		fill(key)
		c := mustNew(t, key)
		blk, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		nJobs := rng.IntN(21)
		same := rng.IntN(3) == 0 // a TCP stream: every packet the same size
		sameLen := rng.IntN(101)
		jobs := make([]Job, nJobs)
		want := make([][]byte, nJobs)
		for i := range jobs {
			n := sameLen
			if !same {
				n = rng.IntN(101)
			}
			pkt := make([]byte, BlockSize+n*BlockSize)
			fill(pkt)
			jobs[i] = Job{IV: pkt[:BlockSize], Buf: pkt[BlockSize:]}
			want[i] = make([]byte, n*BlockSize)
			cipher.NewCBCEncrypter(blk, pkt[:BlockSize]).CryptBlocks(want[i], pkt[BlockSize:])
		}
		ivs := make([][]byte, nJobs)
		for i := range jobs {
			ivs[i] = bytes.Clone(jobs[i].IV)
		}
		c.EncryptCBCN(jobs)
		for i := range jobs {
			if !bytes.Equal(jobs[i].Buf, want[i]) {
				t.Fatalf("round %d: AES-%d, job %d of %d (%d blocks): differs from crypto/cipher", round, 8*keyLen, i, nJobs, len(want[i])/BlockSize)
			}
			if !bytes.Equal(jobs[i].IV, ivs[i]) {
				t.Fatalf("round %d: job %d: IV modified", round, i)
			}
		}
	}
}

// TestEncryptCBCNBitFlip: a flipped plaintext bit in one job changes that
// job's ciphertext from that block on, and no other job's.
func TestEncryptCBCNBitFlip(t *testing.T) {
	c := mustNew(t, unhex("2b7e151628aed2a6abf7158809cf4f3c"))
	mk := func() []Job {
		jobs := make([]Job, 9)
		for i := range jobs {
			jobs[i] = Job{IV: make([]byte, BlockSize), Buf: make([]byte, 4*BlockSize)}
			jobs[i].IV[0] = byte(i)
		}
		return jobs
	}
	base := mk()
	c.EncryptCBCN(base)
	for j := range 9 {
		jobs := mk()
		jobs[j].Buf[2*BlockSize+3] ^= 0x10
		c.EncryptCBCN(jobs)
		for i := range jobs {
			for blk := range 4 {
				got := jobs[i].Buf[blk*BlockSize : (blk+1)*BlockSize]
				same := bytes.Equal(got, base[i].Buf[blk*BlockSize:(blk+1)*BlockSize])
				if wantSame := i != j || blk < 2; same != wantSame {
					t.Fatalf("flip in job %d: job %d block %d unchanged=%v, want %v", j, i, blk, same, wantSame)
				}
			}
		}
	}
}

func TestEncryptCBCNMisuse(t *testing.T) {
	c := mustNew(t, make([]byte, 16))
	for name, j := range map[string]Job{
		"short IV":   {IV: make([]byte, 8), Buf: make([]byte, 16)},
		"part block": {IV: make([]byte, 16), Buf: make([]byte, 17)},
		"missing IV": {Buf: make([]byte, 16)},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			c.EncryptCBCN([]Job{j})
		}()
	}
}

func TestEncryptCBCNNoAllocations(t *testing.T) {
	c := mustNew(t, make([]byte, 16))
	jobs := make([]Job, 13)
	for i := range jobs {
		jobs[i] = Job{IV: make([]byte, 16), Buf: make([]byte, 16*(80+i))}
	}
	if n := testing.AllocsPerRun(100, func() { c.EncryptCBCN(jobs) }); n != 0 {
		t.Errorf("%v allocations per call, want 0", n)
	}
}

// BenchmarkEncryptCBCN: a batch of packets of one size through EncryptCBCN
// against the same packets one EncryptCBC at a time.
func BenchmarkEncryptCBCN(b *testing.B) {
	c := mustNew(b, benchKey())
	for _, size := range benchSizes[:3] {
		for _, batch := range []int{2, 8, 32} {
			jobs := make([]Job, batch)
			for i := range jobs {
				jobs[i] = Job{IV: make([]byte, 16), Buf: make([]byte, roundDown16(size))}
			}
			name := strconv.Itoa(size) + "x" + strconv.Itoa(batch)
			b.Run("multi/"+name, func(b *testing.B) {
				b.SetBytes(int64(batch * roundDown16(size)))
				b.ReportAllocs()
				for b.Loop() {
					c.EncryptCBCN(jobs)
				}
			})
			b.Run("serial/"+name, func(b *testing.B) {
				b.SetBytes(int64(batch * roundDown16(size)))
				for b.Loop() {
					for _, j := range jobs {
						c.EncryptCBC(j.Buf, j.Buf, j.IV)
					}
				}
			})
		}
	}
}
