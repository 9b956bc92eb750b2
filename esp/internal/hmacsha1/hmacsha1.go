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
// therefore hashes two independent messages at once, with the instructions of
// the two streams interleaved four rounds at a time: while one stream's
// SHA1RNDS4 is in flight, the other's issues. The two streams run together
// for the blocks both messages have; the longer one finishes alone.
//
// On other architectures, on amd64 without SHA-NI, and with the purego build
// tag, the same API runs on a portable Go block function.
package hmacsha1

import (
	"crypto/sha1"
	"encoding/binary"
)

// Size is the length in bytes of an HMAC-SHA1 output (FIPS 180-4 section 1:
// a 160-bit message digest).
const Size = 20

const (
	// blockSize is the SHA-1 block size in bytes (FIPS 180-4 section 1),
	// the B of RFC 2104 section 2.
	blockSize = 64

	// maxTail is the longest Tail the final blocks hold: after the full
	// blocks of Msg at most 63 bytes remain, and those, the tail, the 0x80
	// byte and the 8-byte length must fit in two blocks.
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
	n := len(msg) &^ (blockSize - 1)
	block(&h, msg[:n])
	var f [2 * blockSize]byte
	block(&h, f[:final(&f, msg[n:], tail, len(msg))])

	o := outerTemplate
	putDigest(o[:], &h)
	h = k.outer
	block(&h, o[:])
	putDigest(out[:], &h)
}

// SumN computes every job, two at a time where the CPU allows. Jobs may have
// different keys and lengths: the two streams run together for the blocks
// both have, then the longer one finishes alone. It panics if a Tail is longer
// than 56 bytes.
func SumN(jobs []Job) {
	for len(jobs) >= 2 {
		sum2(&jobs[0], &jobs[1])
		jobs = jobs[2:]
	}
	if len(jobs) == 1 {
		j := &jobs[0]
		j.Key.Sum(&j.Sum, j.Msg, j.Tail)
	}
}

// sum2 is Key.Sum for two jobs at once.
func sum2(a, b *Job) {
	ha, hb := a.Key.inner, b.Key.inner
	na, nb := len(a.Msg)&^(blockSize-1), len(b.Msg)&^(blockSize-1)
	pair(&ha, &hb, a.Msg[:na], b.Msg[:nb])
	var fa, fb [2 * blockSize]byte
	pair(&ha, &hb,
		fa[:final(&fa, a.Msg[na:], a.Tail, len(a.Msg))],
		fb[:final(&fb, b.Msg[nb:], b.Tail, len(b.Msg))])

	oa, ob := outerTemplate, outerTemplate
	putDigest(oa[:], &ha)
	putDigest(ob[:], &hb)
	ha, hb = a.Key.outer, b.Key.outer
	block2(&ha, &hb, oa[:], ob[:])
	putDigest(a.Sum[:], &ha)
	putDigest(b.Sum[:], &hb)
}

// pair runs ha over the whole blocks pa and hb over pb, both streams at once
// for the blocks both have, then the rest of the longer one alone.
func pair(ha, hb *[5]uint32, pa, pb []byte) {
	n := min(len(pa), len(pb))
	block2(ha, hb, pa[:n], pb[:n])
	block(ha, pa[n:])
	block(hb, pb[n:])
}

// final builds the last one or two blocks of an inner hash in f (FIPS 180-4
// section 5.1.1): rest (the bytes of the message after its whole blocks),
// tail, the 0x80 byte, zeros, and the length in bits of K⊕ipad, the message
// (msgLen bytes) and tail. f must be zero; final returns the bytes used.
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
