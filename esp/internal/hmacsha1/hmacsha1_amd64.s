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

// bswap reverses the 16 bytes of a register: four big-endian message words
// become four 32-bit lanes, the first word in the top lane.
DATA bswap<>+0(SB)/8, $0x08090a0b0c0d0e0f
DATA bswap<>+8(SB)/8, $0x0001020304050607
GLOBL bswap<>(SB), RODATA|NOPTR, $16
