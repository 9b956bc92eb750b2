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
