package hmacsha1

import (
	"encoding/binary"
	"math/bits"
)

// SHA-1 constants K_t (FIPS 180-4 section 4.2.1), one per 20 rounds.
const (
	k0 = 0x5a827999
	k1 = 0x6ed9eba1
	k2 = 0x8f1bbcdc
	k3 = 0xca62c1d6
)

// blockGeneric runs the SHA-1 compression function (FIPS 180-4 section
// 6.1.2) over the whole 64-byte blocks of p, updating h. The message schedule
// W_t is kept as a ring of 16 words (FIPS 180-4 section 6.1.3).
func blockGeneric(h *[5]uint32, p []byte) {
	var w [16]uint32
	for ; len(p) >= blockSize; p = p[blockSize:] {
		for i := range w {
			w[i] = binary.BigEndian.Uint32(p[4*i:])
		}
		a, b, c, d, e := h[0], h[1], h[2], h[3], h[4]
		for t := range 20 {
			f := b&c | ^b&d // Ch
			a, b, c, d, e = bits.RotateLeft32(a, 5)+f+e+k0+schedule(&w, t), a, bits.RotateLeft32(b, 30), c, d
		}
		for t := 20; t < 40; t++ {
			f := b ^ c ^ d // Parity
			a, b, c, d, e = bits.RotateLeft32(a, 5)+f+e+k1+schedule(&w, t), a, bits.RotateLeft32(b, 30), c, d
		}
		for t := 40; t < 60; t++ {
			f := b&c | b&d | c&d // Maj
			a, b, c, d, e = bits.RotateLeft32(a, 5)+f+e+k2+schedule(&w, t), a, bits.RotateLeft32(b, 30), c, d
		}
		for t := 60; t < 80; t++ {
			f := b ^ c ^ d // Parity
			a, b, c, d, e = bits.RotateLeft32(a, 5)+f+e+k3+schedule(&w, t), a, bits.RotateLeft32(b, 30), c, d
		}
		h[0] += a
		h[1] += b
		h[2] += c
		h[3] += d
		h[4] += e
	}
}

// schedule returns W_t, computing it in place in the ring w for t >= 16.
func schedule(w *[16]uint32, t int) uint32 {
	if t >= 16 {
		w[t&15] = bits.RotateLeft32(w[(t-3)&15]^w[(t-8)&15]^w[(t-14)&15]^w[t&15], 1)
	}
	return w[t&15]
}
