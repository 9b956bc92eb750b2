//go:build amd64 && !purego

package hmacsha1

import "golang.org/x/sys/cpu"

// useSHANI: the assembly uses the SHA extensions (SHA1RNDS4, SHA1NEXTE,
// SHA1MSG1, SHA1MSG2), SSSE3 (PSHUFB) and SSE4.1 (PINSRD, PEXTRD), the same
// features crypto/sha1 checks for its SHA-NI path (which also wants AVX for
// its VEX-encoded moves; this assembly has only legacy-SSE encodings).
// golang.org/x/sys/cpu does not report SHA, so it is read with CPUID.
var useSHANI = hasSHA() && cpu.X86.HasSSSE3 && cpu.X86.HasSSE41

// use4: block4SHANI computes the message schedule with AVX-512 (F; BW for
// VPSHUFB, VPALIGNR and the byte shifts on ZMM; VL for the EVEX load into
// X16-X19). golang.org/x/sys/cpu reports these only if the OS saves the
// AVX-512 state.
var use4 = useSHANI && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL

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

// block4SHANI runs *h[i] over nblocks blocks at p[i] for each of the four
// streams i, with the message schedule on AVX-512 (see use4).
//
//go:noescape
func block4SHANI(h *[4]*[5]uint32, p *[4]*byte, nblocks int)

// block runs the compression function over the whole blocks of p.
func block(h *[5]uint32, p []byte) {
	if !useSHANI {
		blockGeneric(h, p)
	} else if len(p) >= blockSize {
		blockSHANI(h, &p[0], len(p)/blockSize)
	}
}

// blocks runs h[i] over the first n blocks of p[i] for i < k, 1 <= k <= 4.
// Three or four streams go to block4SHANI, the third with a spare state and
// stream 0's message as a fourth (four streams take less time than a pair
// and a single); otherwise pairs go to block2SHANI and a single to
// blockSHANI.
func blocks(h *[4]*[5]uint32, p *[4][]byte, k, n int) {
	switch {
	case !useSHANI:
		for i := range k {
			blockGeneric(h[i], p[i][:n*blockSize])
		}
	case n == 0:
	case use4 && k >= 3:
		var spare [5]uint32
		hs := [4]*[5]uint32{h[0], h[1], h[2], &spare}
		ps := [4]*byte{&p[0][0], &p[1][0], &p[2][0], &p[0][0]}
		if k == 4 {
			hs[3], ps[3] = h[3], &p[3][0]
		}
		block4SHANI(&hs, &ps, n)
	default:
		i := 0
		for ; i+2 <= k; i += 2 {
			block2SHANI(h[i], h[i+1], &p[i][0], &p[i+1][0], n)
		}
		if i < k {
			blockSHANI(h[i], &p[i][0], n)
		}
	}
}

// Accelerated reports whether this CPU runs the SHA-NI kernels. Without
// them the portable block function is several times slower than
// crypto/sha1 (which has AVX2 code), so callers should keep crypto/hmac.
func Accelerated() bool { return useSHANI }
