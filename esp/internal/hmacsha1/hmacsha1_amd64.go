//go:build amd64 && !purego

package hmacsha1

import "golang.org/x/sys/cpu"

// useSHANI: the assembly uses the SHA extensions (SHA1RNDS4, SHA1NEXTE,
// SHA1MSG1, SHA1MSG2), SSSE3 (PSHUFB) and SSE4.1 (PINSRD, PEXTRD), the same
// features crypto/sha1 checks for its SHA-NI path (which also wants AVX for
// its VEX-encoded moves; this assembly has only legacy-SSE encodings).
// golang.org/x/sys/cpu does not report SHA, so it is read with CPUID.
var useSHANI = hasSHA() && cpu.X86.HasSSSE3 && cpu.X86.HasSSE41

// hasSHA reports CPUID.(EAX=7,ECX=0):EBX.SHA[bit 29] (Intel SDM vol. 2A,
// CPUID), after checking that leaf 7 exists.
func hasSHA() bool {
	if maxLeaf, _, _, _ := cpuid(0, 0); maxLeaf < 7 {
		return false
	}
	_, ebx, _, _ := cpuid(7, 0)
	return ebx&(1<<29) != 0
}

// cpuid executes CPUID with EAX=leaf and ECX=sub.
func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

// blockSHANI runs the compression function over nblocks 64-byte blocks at p,
// updating h.
//
//go:noescape
func blockSHANI(h *[5]uint32, p *byte, nblocks int)

// block2SHANI runs ha over nblocks blocks at pa and hb over nblocks blocks at
// pb, the two streams interleaved.
//
//go:noescape
func block2SHANI(ha, hb *[5]uint32, pa, pb *byte, nblocks int)

// block runs the compression function over the whole blocks of p.
func block(h *[5]uint32, p []byte) {
	if !useSHANI {
		blockGeneric(h, p)
	} else if len(p) >= blockSize {
		blockSHANI(h, &p[0], len(p)/blockSize)
	}
}

// block2 is block(ha, pa) and block(hb, pb); pa and pb have the same length.
func block2(ha, hb *[5]uint32, pa, pb []byte) {
	if !useSHANI {
		blockGeneric(ha, pa)
		blockGeneric(hb, pb)
	} else if len(pa) >= blockSize {
		block2SHANI(ha, hb, &pa[0], &pb[0], len(pa)/blockSize)
	}
}

// Accelerated reports whether this CPU runs the SHA-NI kernels. Without
// them the portable block function is several times slower than
// crypto/sha1 (which has AVX2 code), so callers should keep crypto/hmac.
func Accelerated() bool { return useSHANI }
