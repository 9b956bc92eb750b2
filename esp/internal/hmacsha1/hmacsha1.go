// Package hmacsha1 implements HMAC (RFC 2104) over SHA-1 (FIPS 180-4,
// section 6.1) for the ESP codec's HMAC-SHA1-96 (RFC 2404), tuned for many
// short messages.
//
// New runs the compression function over K⊕ipad and K⊕opad once per key and
// keeps the two intermediate states (RFC 2104 section 4, FIPS 198-1 section
// 6), so an HMAC costs only the message blocks, the final padded block or two
// (FIPS 180-4 section 5.1.1) and one outer block. Sum and SumN work on the raw
// chaining values, with no hash.Hash, no state marshaling and no allocation.
//
// On amd64 with the SHA extensions (SHA-NI), the blocks run in assembly with
// SHA1RNDS4, SHA1NEXTE, SHA1MSG1 and SHA1MSG2. Each SHA1RNDS4 (four rounds)
// needs the result of the one before, so a single message is bound by the
// latency of that chain while the SHA unit could accept more work. SumN
// therefore hashes several independent messages at once, the instructions of
// the streams interleaved four rounds at a time: while one stream's SHA1RNDS4
// is in flight, the others' issue. With AVX-512 it runs four streams, their
// message schedules computed on the vector units so that the SHA unit is left
// to the rounds; otherwise two. The streams run together for the blocks they
// all have; the longer ones go on with fewer streams.
//
// On other architectures, on amd64 without SHA-NI, and with the purego build
// tag, the same API runs on a portable Go block function.
package hmacsha1

import (
	"crypto/sha1"
	"encoding/binary"
	"math"
)

// Size is the length in bytes of an HMAC-SHA1 output (FIPS 180-4 section 1:
// a 160-bit message digest).
const Size = 20

const (
	// blockSize is the SHA-1 block size in bytes (FIPS 180-4 section 1),
	// the B of RFC 2104 section 2.
	blockSize = 64

	// maxTail is the longest Tail the final blocks hold: after the blocks
	// of Msg hashed in place at most 63 bytes remain (inPlace leaves more
	// only if they fit), and those, the tail, the 0x80 byte and the 8-byte
	// length must fit in two blocks.
	maxTail = 2*blockSize - (blockSize - 1) - 1 - 8

	ipad = 0x36 // RFC 2104 section 2
	opad = 0x5c
)

// initState is H(0) of FIPS 180-4 section 5.3.1.
var initState = [5]uint32{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0}

// outerTemplate is the padded outer message block after the pad state: 20
// digest bytes (written per call), the 0x80 byte, zeros, and the length in
// bits of K⊕opad followed by the digest.
var outerTemplate = func() (b [blockSize]byte) {
	b[Size] = 0x80
	binary.BigEndian.PutUint64(b[blockSize-8:], (blockSize+Size)*8)
	return b
}()

// Key is an HMAC-SHA1 key with its inner and outer pad states precomputed.
// It is read-only after New and safe for concurrent use.
type Key struct {
	inner [5]uint32 // SHA-1 chaining value after the block K⊕ipad
	outer [5]uint32 // and after K⊕opad
}

// New precomputes key, which may have any length; a key longer than the block
// size is hashed first (RFC 2104 section 2).
func New(key []byte) *Key {
	if len(key) > blockSize {
		h := sha1.Sum(key)
		key = h[:]
	}
	var pad [blockSize]byte
	copy(pad[:], key)
	for i := range pad {
		pad[i] ^= ipad
	}
	k := &Key{inner: initState, outer: initState}
	block(&k.inner, pad[:])
	for i := range pad {
		pad[i] ^= ipad ^ opad
	}
	block(&k.outer, pad[:])
	return k
}

// Job is one HMAC to compute: HMAC(Key, Msg || Tail). Tail is short (0..8
// bytes; ESP uses it for the high 32 bits of an extended sequence number,
// RFC 4303 section 3.3.3), at most 56 bytes, and may be nil. Sum is written by
// SumN.
type Job struct {
	Key  *Key
	Msg  []byte
	Tail []byte
	Sum  [Size]byte
}

// Sum computes HMAC(k, msg || tail) into out. It panics if tail is longer than
// 56 bytes.
func (k *Key) Sum(out *[Size]byte, msg, tail []byte) {
	h := k.inner
	n := inPlace(msg, tail)
	block(&h, msg[:n])
	var f [2 * blockSize]byte
	block(&h, f[:final(&f, msg[n:], tail, len(msg))])

	o := outerTemplate
	putDigest(o[:], &h)
	h = k.outer
	block(&h, o[:])
	putDigest(out[:], &h)
}

// SumN computes every job, in groups of up to four run together where the CPU
// allows. Jobs may have different keys and lengths: the streams of a group
// run together for the blocks they all have, then the longer ones go on
// without the others. It panics if a Tail is longer than 56 bytes.
func SumN(jobs []Job) {
	for len(jobs) >= 2 {
		n := min(len(jobs), 4)
		sumGroup(jobs[:n])
		jobs = jobs[n:]
	}
	if len(jobs) == 1 {
		j := &jobs[0]
		j.Key.Sum(&j.Sum, j.Msg, j.Tail)
	}
}

// sumGroup is Key.Sum for two to four jobs at once: the inner hashes over the
// message blocks hashed in place, then over the final blocks, then the outer
// hashes, one block each.
func sumGroup(jobs []Job) {
	k := len(jobs)
	var h [4][5]uint32
	var hp [4]*[5]uint32
	var p [4][]byte
	var f [4][2 * blockSize]byte
	for i := range jobs {
		j := &jobs[i]
		h[i] = j.Key.inner
		hp[i] = &h[i]
		p[i] = j.Msg[:inPlace(j.Msg, j.Tail)]
	}
	run(&hp, &p, k)

	for i := range jobs {
		j := &jobs[i]
		n := len(p[i])
		p[i] = f[i][:final(&f[i], j.Msg[n:], j.Tail, len(j.Msg))]
	}
	run(&hp, &p, k)

	// The outer blocks reuse f.
	for i := range jobs {
		o := (*[blockSize]byte)(f[i][:blockSize])
		*o = outerTemplate
		putDigest(o[:], &h[i])
		h[i] = jobs[i].Key.outer
		p[i] = o[:]
	}
	blocks(&hp, &p, k, 1)
	for i := range jobs {
		putDigest(jobs[i].Sum[:], &h[i])
	}
}

// run runs *h[i] over the whole blocks p[i] for i < k: the streams with
// blocks left go to blocks together for as many blocks as they all have,
// until none has any. (The arrays are passed by pointer and not modified:
// copying them right after their elements are written would stall on store
// forwarding.)
func run(h *[4]*[5]uint32, p *[4][]byte, k int) {
	var done [4]int
	for {
		var hs [4]*[5]uint32
		var ps [4][]byte
		n, m := 0, math.MaxInt
		for i := range k {
			if len(p[i]) > done[i] {
				hs[n], ps[n] = h[i], p[i][done[i]:]
				m = min(m, len(ps[n]))
				n++
			}
		}
		if n == 0 {
			return
		}
		blocks(&hs, &ps, n, m/blockSize)
		for i := range k {
			if len(p[i]) > done[i] {
				done[i] += m
			}
		}
	}
}

// inPlace returns how many bytes of msg the inner hash runs over in place,
// before final copies the rest: the whole blocks, less the last one if it
// fits in the two final blocks with the rest and tail. A message of one
// block and a little then takes one call of the kernels, not two (each waits
// for the one before, and a call of one block costs little less than two).
func inPlace(msg, tail []byte) int {
	n := len(msg) &^ (blockSize - 1)
	if n > 0 && len(msg)-n+blockSize+len(tail)+1+8 <= 2*blockSize {
		n -= blockSize
	}
	return n
}

// final builds the last one or two blocks of an inner hash in f (FIPS 180-4
// section 5.1.1): rest (the bytes of the message after those hashed in
// place), tail, the 0x80 byte, zeros, and the length in bits of K⊕ipad, the
// message (msgLen bytes) and tail. f must be zero; final returns the bytes
// used.
func final(f *[2 * blockSize]byte, rest, tail []byte, msgLen int) int {
	if len(tail) > maxTail {
		panic("hmacsha1: tail longer than 56 bytes")
	}
	n := copy(f[:], rest)
	n += copy(f[n:], tail)
	f[n] = 0x80
	end := blockSize
	if n+1+8 > blockSize {
		end = 2 * blockSize
	}
	binary.BigEndian.PutUint64(f[end-8:], uint64(blockSize+msgLen+len(tail))*8)
	return end
}

// putDigest writes the chaining value h big-endian into b[:Size]
// (FIPS 180-4 section 6.1.2, step 4).
func putDigest(b []byte, h *[5]uint32) {
	for i, v := range h {
		binary.BigEndian.PutUint32(b[4*i:], v)
	}
}
