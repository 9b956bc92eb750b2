//go:build amd64 && !purego

#include "textflag.h"

// SHA-1 compression (FIPS 180-4 section 6.1.2) with the SHA extensions,
// after blockSHANI in Go's crypto/sha1 (sha1block_amd64.s), with legacy-SSE
// encodings only.
//
// Register use of one stream: ABCD holds the working variables a, b, c, d
// (a in the top lane); E and ESAVE alternate every four rounds: E holds
// e + W_t..W_t+3 for the next SHA1RNDS4 while ESAVE receives a copy of ABCD,
// from which SHA1NEXTE derives the next e (rotl30 of the old a). At the start
// of a block E holds e in its top lane and zeros below. W0..W3 are the
// sixteen-word message schedule window: four words per register, W_t in the
// top lane, advanced with SHA1MSG1, PXOR and SHA1MSG2 (section 6.1.3).
//
// Message blocks and chaining values are loaded with MOVOU: legacy-SSE memory
// operands must be 16-byte aligned, and neither the caller's messages nor the
// frame are, so every memory operand goes through a register.

// LOAD(off, p, W, MASK): W = the four big-endian words at off(p), W_t in the
// top lane (the whole 16 bytes reversed by PSHUFB with MASK).
#define LOAD(off, p, W, MASK) \
	MOVOU  off(p), W; \
	PSHUFB MASK, W

// FIRST(ABCD, E, ESAVE, W): rounds 0-3, where E already holds e.
#define FIRST(ABCD, E, ESAVE, W) \
	PADDD     W, E; \
	MOVO      ABCD, ESAVE; \
	SHA1RNDS4 $0, E, ABCD

// RNDS(f, ABCD, E, ESAVE, W): four rounds with function/constant f (0..3);
// E held the copy of ABCD from four rounds earlier.
#define RNDS(f, ABCD, E, ESAVE, W) \
	SHA1NEXTE W, E; \
	MOVO      ABCD, ESAVE; \
	SHA1RNDS4 $f, E, ABCD

// SCHED(W0, W1, W2, W3): with W0 the words just used, finish the schedule
// words in W1 and advance W2 and W3.
#define SCHED(W0, W1, W2, W3) \
	SHA1MSG2 W0, W1; \
	SHA1MSG1 W0, W3; \
	PXOR     W0, W2

// func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func blockSHANI(h *[5]uint32, p *byte, nblocks int)
//
// nblocks >= 1. DI h, SI p, CX blocks left; X0 ABCD, X1/X2 E/ESAVE,
// X3..X6 W0..W3, X7 the byte-swap mask, X8/X9 e and ABCD at block start.
TEXT ·blockSHANI(SB), NOSPLIT, $0-24
	MOVQ h+0(FP), DI
	MOVQ p+8(FP), SI
	MOVQ nblocks+16(FP), CX
	MOVOU bswap<>(SB), X7
	MOVOU (DI), X0
	PSHUFD $0x1b, X0, X0
	PXOR X1, X1
	PINSRD $3, 16(DI), X1

loop:
	MOVO X1, X8
	MOVO X0, X9

	LOAD(0, SI, X3, X7)
	FIRST(X0, X1, X2, X3)
	LOAD(16, SI, X4, X7)
	RNDS(0, X0, X2, X1, X4)
	SHA1MSG1 X4, X3
	LOAD(32, SI, X5, X7)
	RNDS(0, X0, X1, X2, X5)
	SHA1MSG1 X5, X4
	PXOR X5, X3
	LOAD(48, SI, X6, X7)
	RNDS(0, X0, X2, X1, X6)
	SCHED(X6, X3, X4, X5)

	RNDS(0, X0, X1, X2, X3); SCHED(X3, X4, X5, X6) // rounds 16-19
	RNDS(1, X0, X2, X1, X4); SCHED(X4, X5, X6, X3)
	RNDS(1, X0, X1, X2, X5); SCHED(X5, X6, X3, X4)
	RNDS(1, X0, X2, X1, X6); SCHED(X6, X3, X4, X5)
	RNDS(1, X0, X1, X2, X3); SCHED(X3, X4, X5, X6)
	RNDS(1, X0, X2, X1, X4); SCHED(X4, X5, X6, X3) // rounds 36-39
	RNDS(2, X0, X1, X2, X5); SCHED(X5, X6, X3, X4)
	RNDS(2, X0, X2, X1, X6); SCHED(X6, X3, X4, X5)
	RNDS(2, X0, X1, X2, X3); SCHED(X3, X4, X5, X6)
	RNDS(2, X0, X2, X1, X4); SCHED(X4, X5, X6, X3)
	RNDS(2, X0, X1, X2, X5); SCHED(X5, X6, X3, X4) // rounds 56-59
	RNDS(3, X0, X2, X1, X6); SCHED(X6, X3, X4, X5)
	RNDS(3, X0, X1, X2, X3); SCHED(X3, X4, X5, X6)
	RNDS(3, X0, X2, X1, X4); SHA1MSG2 X4, X5; PXOR X4, X6
	RNDS(3, X0, X1, X2, X5); SHA1MSG2 X5, X6
	RNDS(3, X0, X2, X1, X6) // rounds 76-79

	// e += rotl30(a of round 76); a..d += their values at block start.
	SHA1NEXTE X8, X1
	PADDD X9, X0

	ADDQ $64, SI
	DECQ CX
	JNZ  loop

	PSHUFD $0x1b, X0, X0
	MOVOU X0, (DI)
	PEXTRD $3, X1, 16(DI)
	RET

// func block2SHANI(ha, hb *[5]uint32, pa, pb *byte, nblocks int)
//
// Two streams of nblocks >= 1 blocks each, their four-round groups
// interleaved. DI ha, DX hb, SI pa, R8 pb, CX blocks left.
// Stream a: X0 ABCD, X1/X2 E/ESAVE, X3..X6 W0..W3.
// Stream b: X7 ABCD, X8/X9 E/ESAVE, X10..X13 W0..W3.
// X14 the byte-swap mask. With every other register in use, e and ABCD at
// block start go to the frame: a's at 0(SP) and 16(SP), b's at 32(SP) and
// 48(SP).
TEXT ·block2SHANI(SB), NOSPLIT, $64-40
	MOVQ ha+0(FP), DI
	MOVQ hb+8(FP), DX
	MOVQ pa+16(FP), SI
	MOVQ pb+24(FP), R8
	MOVQ nblocks+32(FP), CX
	MOVOU bswap<>(SB), X14
	MOVOU (DI), X0
	PSHUFD $0x1b, X0, X0
	PXOR X1, X1
	PINSRD $3, 16(DI), X1
	MOVOU (DX), X7
	PSHUFD $0x1b, X7, X7
	PXOR X8, X8
	PINSRD $3, 16(DX), X8

loop:
	MOVOU X1, 0(SP)
	MOVOU X0, 16(SP)
	MOVOU X8, 32(SP)
	MOVOU X7, 48(SP)

	LOAD(0, SI, X3, X14); LOAD(0, R8, X10, X14)
	FIRST(X0, X1, X2, X3); FIRST(X7, X8, X9, X10)
	LOAD(16, SI, X4, X14); LOAD(16, R8, X11, X14)
	RNDS(0, X0, X2, X1, X4); RNDS(0, X7, X9, X8, X11)
	SHA1MSG1 X4, X3; SHA1MSG1 X11, X10
	LOAD(32, SI, X5, X14); LOAD(32, R8, X12, X14)
	RNDS(0, X0, X1, X2, X5); RNDS(0, X7, X8, X9, X12)
	SHA1MSG1 X5, X4; SHA1MSG1 X12, X11
	PXOR X5, X3; PXOR X12, X10
	LOAD(48, SI, X6, X14); LOAD(48, R8, X13, X14)
	RNDS(0, X0, X2, X1, X6); RNDS(0, X7, X9, X8, X13)
	SCHED(X6, X3, X4, X5); SCHED(X13, X10, X11, X12)

	RNDS(0, X0, X1, X2, X3); RNDS(0, X7, X8, X9, X10) // rounds 16-19
	SCHED(X3, X4, X5, X6); SCHED(X10, X11, X12, X13)
	RNDS(1, X0, X2, X1, X4); RNDS(1, X7, X9, X8, X11)
	SCHED(X4, X5, X6, X3); SCHED(X11, X12, X13, X10)
	RNDS(1, X0, X1, X2, X5); RNDS(1, X7, X8, X9, X12)
	SCHED(X5, X6, X3, X4); SCHED(X12, X13, X10, X11)
	RNDS(1, X0, X2, X1, X6); RNDS(1, X7, X9, X8, X13)
	SCHED(X6, X3, X4, X5); SCHED(X13, X10, X11, X12)
	RNDS(1, X0, X1, X2, X3); RNDS(1, X7, X8, X9, X10)
	SCHED(X3, X4, X5, X6); SCHED(X10, X11, X12, X13)
	RNDS(1, X0, X2, X1, X4); RNDS(1, X7, X9, X8, X11) // rounds 36-39
	SCHED(X4, X5, X6, X3); SCHED(X11, X12, X13, X10)
	RNDS(2, X0, X1, X2, X5); RNDS(2, X7, X8, X9, X12)
	SCHED(X5, X6, X3, X4); SCHED(X12, X13, X10, X11)
	RNDS(2, X0, X2, X1, X6); RNDS(2, X7, X9, X8, X13)
	SCHED(X6, X3, X4, X5); SCHED(X13, X10, X11, X12)
	RNDS(2, X0, X1, X2, X3); RNDS(2, X7, X8, X9, X10)
	SCHED(X3, X4, X5, X6); SCHED(X10, X11, X12, X13)
	RNDS(2, X0, X2, X1, X4); RNDS(2, X7, X9, X8, X11)
	SCHED(X4, X5, X6, X3); SCHED(X11, X12, X13, X10)
	RNDS(2, X0, X1, X2, X5); RNDS(2, X7, X8, X9, X12) // rounds 56-59
	SCHED(X5, X6, X3, X4); SCHED(X12, X13, X10, X11)
	RNDS(3, X0, X2, X1, X6); RNDS(3, X7, X9, X8, X13)
	SCHED(X6, X3, X4, X5); SCHED(X13, X10, X11, X12)
	RNDS(3, X0, X1, X2, X3); RNDS(3, X7, X8, X9, X10)
	SCHED(X3, X4, X5, X6); SCHED(X10, X11, X12, X13)
	RNDS(3, X0, X2, X1, X4); RNDS(3, X7, X9, X8, X11)
	SHA1MSG2 X4, X5; SHA1MSG2 X11, X12
	PXOR X4, X6; PXOR X11, X13
	RNDS(3, X0, X1, X2, X5); RNDS(3, X7, X8, X9, X12)
	SHA1MSG2 X5, X6; SHA1MSG2 X12, X13
	RNDS(3, X0, X2, X1, X6); RNDS(3, X7, X9, X8, X13) // rounds 76-79

	// e += rotl30(a of round 76); a..d += their values at block start.
	MOVOU 0(SP), X3
	SHA1NEXTE X3, X1
	MOVOU 16(SP), X4
	PADDD X4, X0
	MOVOU 32(SP), X10
	SHA1NEXTE X10, X8
	MOVOU 48(SP), X11
	PADDD X11, X7

	ADDQ $64, SI
	ADDQ $64, R8
	DECQ CX
	JNZ  loop

	PSHUFD $0x1b, X0, X0
	MOVOU X0, (DI)
	PEXTRD $3, X1, 16(DI)
	PSHUFD $0x1b, X7, X7
	MOVOU X7, (DX)
	PEXTRD $3, X8, 16(DX)
	RET

// block4SHANI hashes four streams with their message schedules computed
// apart from the rounds. Four independent SHA1RNDS4 chains issue one
// SHA1RNDS4 every two cycles (on Zen 5), but SHA1NEXTE, SHA1MSG1 and
// SHA1MSG2 share the SHA unit: with the schedule on it as well, a
// four-stream kernel measured 2.6 cycles per SHA1RNDS4. So the schedule
// (FIPS 180-4 section 6.1.3) runs on the AVX-512 integer units instead, for
// the four streams at once (about 2.1 cycles per SHA1RNDS4): a ZMM register
// holds the same four words W_t..W_t+3 of each stream, stream s in 128-bit
// lane s, W_t in the top dword of the lane, the layout SHA1NEXTE and
// SHA1RNDS4 take. The rounds read those words from the frame, so each stream
// needs only ABCD, E and ESAVE in X0-X15.
//
// Only Z16-Z31 are written with EVEX instructions: the upper halves of
// Y0-Y15 stay zero, so the legacy-SSE code after them (the rounds, and Go
// code) needs no VZEROUPPER.

// LOAD4(off, X, Z): Z = the message words at off of each stream, byte-swapped
// (X is the low lane of Z), stored to the frame slot of W_(off/4).
#define LOAD4(off, X, Z) \
	VMOVDQU32    off(SI), X; \
	VINSERTI32X4 $1, off(DI), Z, Z; \
	VINSERTI32X4 $2, off(R8), Z, Z; \
	VINSERTI32X4 $3, off(R9), Z, Z; \
	VPSHUFB      Z26, Z, Z; \
	VMOVDQA32    Z, 128+4*off(BX)

// SCHED1(slot, V16, V12, V8, V4, V): W_t..W_t+3 for 16 <= t < 32 into V and
// the frame slot, from V16 = W_t-16.., V12 = W_t-12.., V8 = W_t-8.. and
// V4 = W_t-4..: W_t = rotl1(x_t), x_t = W_t-3 ^ W_t-8 ^ W_t-14 ^ W_t-16.
// x_t+3 needs W_t of the same vector: it is first computed without (a zero
// shifted in for it), then rotl1(x ^ W_t) = rotl1(x) ^ rotl2(x_t) fixes
// W_t+3 up. Z24 and Z25 are scratch.
#define SCHED1(slot, V16, V12, V8, V4, V) \
	VPALIGNR   $8, V12, V16, Z24; \
	VPTERNLOGD $0x96, V16, V8, Z24; \
	VPSLLDQ    $4, V4, Z25; \
	VPXORD     Z25, Z24, Z24; \
	VPSRLDQ    $12, Z24, Z25; \
	VPROLD     $1, Z24, V; \
	VPROLD     $2, Z25, Z25; \
	VPXORD     Z25, V, V; \
	VMOVDQA32  V, slot(BX)

// SCHED2(slot, V32, V28, V16, V8, V4, V): W_t..W_t+3 for 32 <= t < 80, in
// the form W_t = rotl2(W_t-6 ^ W_t-16 ^ W_t-28 ^ W_t-32) (which follows from
// the recurrence for t >= 32 and needs no word of the same vector). V is
// the register of V32.
#define SCHED2(slot, V32, V28, V16, V8, V4, V) \
	VPALIGNR   $8, V4, V8, Z24; \
	VPTERNLOGD $0x96, V16, V28, Z24; \
	VPXORD     V32, Z24, Z24; \
	VPROLD     $2, Z24, V; \
	VMOVDQA32  V, slot(BX)

// QUAD(f, slot, E0, E1, E2, E3, S0, S1, S2, S3): RNDS for each stream,
// stream s with E and ESAVE in Es and Ss, its words at slot+16*s(BX).
#define QUAD(f, slot, E0, E1, E2, E3, S0, S1, S2, S3) \
	RNDS(f, X0, E0, S0, slot(BX)); \
	RNDS(f, X1, E1, S1, slot+16(BX)); \
	RNDS(f, X2, E2, S2, slot+32(BX)); \
	RNDS(f, X3, E3, S3, slot+48(BX))

// EVEN and ODD: QUAD for the even and the odd round groups; E and ESAVE of
// stream s alternate between X(4+s) and X(8+s).
#define EVEN(f, slot) QUAD(f, slot, X4, X5, X6, X7, X8, X9, X10, X11)
#define ODD(f, slot) QUAD(f, slot, X8, X9, X10, X11, X4, X5, X6, X7)

// func block4SHANI(h *[4]*[5]uint32, p *[4]*byte, nblocks int)
//
// Four streams of nblocks >= 1 blocks each. SI, DI, R8, R9 the message
// pointers of streams 0..3, CX blocks left, BX the start of the frame
// rounded up to 64 bytes. X0..X3 ABCD of streams 0..3, X4..X7 and X8..X11 their E/ESAVE.
// Z16..Z23 the last eight schedule vectors (W_4k.. in Z(16+k%8)), Z24, Z25
// scratch, Z26 the byte-swap mask in each lane.
//
// Frame at BX: ABCD and e of stream s at block start at 32*s and 32*s+16;
// from 128, the block's twenty schedule vectors, 64 bytes each (W_4k.. of
// stream s at 128+64*k+16*s). The frame is too large for NOSPLIT.
TEXT ·block4SHANI(SB), 0, $1472-24
	MOVQ p+8(FP), AX
	MOVQ 0(AX), SI
	MOVQ 8(AX), DI
	MOVQ 16(AX), R8
	MOVQ 24(AX), R9
	MOVQ nblocks+16(FP), CX
	LEAQ 63(SP), BX
	ANDQ $~63, BX
	VBROADCASTI32X4 bswap<>(SB), Z26

	MOVQ h+0(FP), AX
	MOVQ 0(AX), DX
	MOVOU (DX), X0
	PXOR X4, X4
	PINSRD $3, 16(DX), X4
	MOVQ 8(AX), DX
	MOVOU (DX), X1
	PXOR X5, X5
	PINSRD $3, 16(DX), X5
	MOVQ 16(AX), DX
	MOVOU (DX), X2
	PXOR X6, X6
	PINSRD $3, 16(DX), X6
	MOVQ 24(AX), DX
	MOVOU (DX), X3
	PXOR X7, X7
	PINSRD $3, 16(DX), X7
	PSHUFD $0x1b, X0, X0
	PSHUFD $0x1b, X1, X1
	PSHUFD $0x1b, X2, X2
	PSHUFD $0x1b, X3, X3

loop:
	MOVO X0, 0(BX)
	MOVO X4, 16(BX)
	MOVO X1, 32(BX)
	MOVO X5, 48(BX)
	MOVO X2, 64(BX)
	MOVO X6, 80(BX)
	MOVO X3, 96(BX)
	MOVO X7, 112(BX)

	// The whole schedule first: the out-of-order core runs it ahead of
	// and alongside the rounds, which wait only for their words.
	LOAD4(0, X16, Z16)
	LOAD4(16, X17, Z17)
	LOAD4(32, X18, Z18)
	LOAD4(48, X19, Z19)
	SCHED1(384, Z16, Z17, Z18, Z19, Z20) // W_16..W_31
	SCHED1(448, Z17, Z18, Z19, Z20, Z21)
	SCHED1(512, Z18, Z19, Z20, Z21, Z22)
	SCHED1(576, Z19, Z20, Z21, Z22, Z23)
	SCHED2(640, Z16, Z17, Z20, Z22, Z23, Z16) // W_32..W_79
	SCHED2(704, Z17, Z18, Z21, Z23, Z16, Z17)
	SCHED2(768, Z18, Z19, Z22, Z16, Z17, Z18)
	SCHED2(832, Z19, Z20, Z23, Z17, Z18, Z19)
	SCHED2(896, Z20, Z21, Z16, Z18, Z19, Z20)
	SCHED2(960, Z21, Z22, Z17, Z19, Z20, Z21)
	SCHED2(1024, Z22, Z23, Z18, Z20, Z21, Z22)
	SCHED2(1088, Z23, Z16, Z19, Z21, Z22, Z23)
	SCHED2(1152, Z16, Z17, Z20, Z22, Z23, Z16)
	SCHED2(1216, Z17, Z18, Z21, Z23, Z16, Z17)
	SCHED2(1280, Z18, Z19, Z22, Z16, Z17, Z18)
	SCHED2(1344, Z19, Z20, Z23, Z17, Z18, Z19)

	FIRST(X0, X4, X8, 128+0(BX)) // rounds 0-3: E holds e
	FIRST(X1, X5, X9, 128+16(BX))
	FIRST(X2, X6, X10, 128+32(BX))
	FIRST(X3, X7, X11, 128+48(BX))
	ODD(0, 192) // rounds 4-7
	EVEN(0, 256)
	ODD(0, 320)
	EVEN(0, 384)
	ODD(1, 448) // rounds 20-23
	EVEN(1, 512)
	ODD(1, 576)
	EVEN(1, 640)
	ODD(1, 704)
	EVEN(2, 768) // rounds 40-43
	ODD(2, 832)
	EVEN(2, 896)
	ODD(2, 960)
	EVEN(2, 1024)
	ODD(3, 1088) // rounds 60-63
	EVEN(3, 1152)
	ODD(3, 1216)
	EVEN(3, 1280)
	ODD(3, 1344) // rounds 76-79

	// e += rotl30(a of round 76); a..d += their values at block start.
	SHA1NEXTE 16(BX), X4
	PADDD 0(BX), X0
	SHA1NEXTE 48(BX), X5
	PADDD 32(BX), X1
	SHA1NEXTE 80(BX), X6
	PADDD 64(BX), X2
	SHA1NEXTE 112(BX), X7
	PADDD 96(BX), X3

	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, R8
	ADDQ $64, R9
	DECQ CX
	JNZ  loop

	MOVQ h+0(FP), AX
	MOVQ 0(AX), DX
	PSHUFD $0x1b, X0, X0
	MOVOU X0, (DX)
	PEXTRD $3, X4, 16(DX)
	MOVQ 8(AX), DX
	PSHUFD $0x1b, X1, X1
	MOVOU X1, (DX)
	PEXTRD $3, X5, 16(DX)
	MOVQ 16(AX), DX
	PSHUFD $0x1b, X2, X2
	MOVOU X2, (DX)
	PEXTRD $3, X6, 16(DX)
	MOVQ 24(AX), DX
	PSHUFD $0x1b, X3, X3
	MOVOU X3, (DX)
	PEXTRD $3, X7, 16(DX)
	RET

// bswap reverses the 16 bytes of a register: four big-endian message words
// become four 32-bit lanes, the first word in the top lane.
DATA bswap<>+0(SB)/8, $0x08090a0b0c0d0e0f
DATA bswap<>+8(SB)/8, $0x0001020304050607
GLOBL bswap<>(SB), RODATA|NOPTR, $16
