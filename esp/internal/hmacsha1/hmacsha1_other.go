//go:build !amd64 || purego

package hmacsha1

// block runs the compression function over the whole blocks of p.
func block(h *[5]uint32, p []byte) { blockGeneric(h, p) }

// blocks runs h[i] over the first n blocks of p[i] for i < k: this build has
// no multi-stream kernel.
func blocks(h *[4]*[5]uint32, p *[4][]byte, k, n int) {
	for i := range k {
		blockGeneric(h[i], p[i][:n*blockSize])
	}
}

// Accelerated reports whether this build runs assembly kernels: never here.
// crypto/sha1 has faster code than the portable block function on most
// architectures (arm64's SHA1 instructions among them), so callers should
// keep crypto/hmac.
func Accelerated() bool { return false }
