//go:build !amd64 || purego

package hmacsha1

// block runs the compression function over the whole blocks of p.
func block(h *[5]uint32, p []byte) { blockGeneric(h, p) }

// block2 is block(ha, pa) and block(hb, pb): this build has no two-stream
// kernel.
func block2(ha, hb *[5]uint32, pa, pb []byte) {
	blockGeneric(ha, pa)
	blockGeneric(hb, pb)
}

// Accelerated reports whether this build runs assembly kernels: never here.
// crypto/sha1 has faster code than the portable block function on most
// architectures (arm64's SHA1 instructions among them), so callers should
// keep crypto/hmac.
func Accelerated() bool { return false }
