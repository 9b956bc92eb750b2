//go:build amd64 && !purego

#include "textflag.h"

// AES-CBC with AES-NI (AESENC/AESENCLAST/AESDEC/AESDECLAST) and SSE2.
//
// Round keys are 16-byte blocks in the order the instructions consume them
// (Cipher.enc, Cipher.dec). They are loaded with MOVUPS: the schedule need
// not be 16-byte aligned, and the legacy-SSE memory forms of PXOR and AESDEC
// fault on unaligned operands, so every memory operand goes through a
// register first.
//
// Key sizes: after round key 0, a 256-bit key runs two extra rounds, then
// advances the key cursor R9 by 32 and falls into the 192-bit code, which does
// the same into the 128-bit code: nine AESDEC/AESENC rounds at 16(R9)..144(R9)
// and the last round at 160(R9).

// Apply round key K to eight, four or one state registers with instruction OP.
#define OP8(OP, K) \
	OP K, X0; OP K, X1; OP K, X2; OP K, X3; \
	OP K, X4; OP K, X5; OP K, X6; OP K, X7
#define OP4(OP, K) \
	OP K, X0; OP K, X1; OP K, X2; OP K, X3
#define OP1(OP, K) \
	OP K, X0

// ROUND(W, OP, off): load the round key at off(R9) into X8 and apply it.
#define ROUND8(OP, off) MOVUPS off(R9), X8; OP8(OP, X8)
#define ROUND4(OP, off) MOVUPS off(R9), X8; OP4(OP, X8)
#define ROUND1(OP, off) MOVUPS off(R9), X8; OP1(OP, X8)

// The nine middle rounds and the last round of the 128-bit tail.
#define TAIL8(OP, LAST) \
	ROUND8(OP, 16); ROUND8(OP, 32); ROUND8(OP, 48); ROUND8(OP, 64); \
	ROUND8(OP, 80); ROUND8(OP, 96); ROUND8(OP, 112); ROUND8(OP, 128); \
	ROUND8(OP, 144); ROUND8(LAST, 160)
#define TAIL4(OP, LAST) \
	ROUND4(OP, 16); ROUND4(OP, 32); ROUND4(OP, 48); ROUND4(OP, 64); \
	ROUND4(OP, 80); ROUND4(OP, 96); ROUND4(OP, 112); ROUND4(OP, 128); \
	ROUND4(OP, 144); ROUND4(LAST, 160)
#define TAIL1(OP, LAST) \
	ROUND1(OP, 16); ROUND1(OP, 32); ROUND1(OP, 48); ROUND1(OP, 64); \
	ROUND1(OP, 80); ROUND1(OP, 96); ROUND1(OP, 112); ROUND1(OP, 128); \
	ROUND1(OP, 144); ROUND1(LAST, 160)

// func decryptCBCAsm(nr int, xk *byte, dst, src *byte, n int, iv *byte)
//
// CX nr, R8 schedule, R9 round-key cursor, DI dst, SI src, BX blocks left,
// X0..X7 states, X8..X14 round key then previous ciphertext blocks,
// X15 the chaining value (ciphertext block before the current group).
// Every group loads all its ciphertext before storing any plaintext, so
// dst == src (in place) is safe.
TEXT ·decryptCBCAsm(SB), NOSPLIT, $0-48
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), R8
	MOVQ dst+16(FP), DI
	MOVQ src+24(FP), SI
	MOVQ n+32(FP), BX
	MOVQ iv+40(FP), DX
	MOVUPS (DX), X15

loop8:
	CMPQ BX, $8
	JB   loop4
	MOVUPS 0(SI), X0
	MOVUPS 16(SI), X1
	MOVUPS 32(SI), X2
	MOVUPS 48(SI), X3
	MOVUPS 64(SI), X4
	MOVUPS 80(SI), X5
	MOVUPS 96(SI), X6
	MOVUPS 112(SI), X7
	MOVQ R8, R9
	ROUND8(PXOR, 0)
	CMPQ CX, $12
	JB   dec8_128
	JEQ  dec8_192
	ROUND8(AESDEC, 16)
	ROUND8(AESDEC, 32)
	ADDQ $32, R9

dec8_192:
	ROUND8(AESDEC, 16)
	ROUND8(AESDEC, 32)
	ADDQ $32, R9

dec8_128:
	TAIL8(AESDEC, AESDECLAST)
	MOVUPS 0(SI), X8
	MOVUPS 16(SI), X9
	MOVUPS 32(SI), X10
	MOVUPS 48(SI), X11
	MOVUPS 64(SI), X12
	MOVUPS 80(SI), X13
	MOVUPS 96(SI), X14
	PXOR   X15, X0
	PXOR   X8, X1
	PXOR   X9, X2
	PXOR   X10, X3
	PXOR   X11, X4
	PXOR   X12, X5
	PXOR   X13, X6
	PXOR   X14, X7
	MOVUPS 112(SI), X15
	MOVUPS X0, 0(DI)
	MOVUPS X1, 16(DI)
	MOVUPS X2, 32(DI)
	MOVUPS X3, 48(DI)
	MOVUPS X4, 64(DI)
	MOVUPS X5, 80(DI)
	MOVUPS X6, 96(DI)
	MOVUPS X7, 112(DI)
	ADDQ   $128, SI
	ADDQ   $128, DI
	SUBQ   $8, BX
	JMP    loop8

loop4:
	CMPQ BX, $4
	JB   loop1
	MOVUPS 0(SI), X0
	MOVUPS 16(SI), X1
	MOVUPS 32(SI), X2
	MOVUPS 48(SI), X3
	MOVQ R8, R9
	ROUND4(PXOR, 0)
	CMPQ CX, $12
	JB   dec4_128
	JEQ  dec4_192
	ROUND4(AESDEC, 16)
	ROUND4(AESDEC, 32)
	ADDQ $32, R9

dec4_192:
	ROUND4(AESDEC, 16)
	ROUND4(AESDEC, 32)
	ADDQ $32, R9

dec4_128:
	TAIL4(AESDEC, AESDECLAST)
	MOVUPS 0(SI), X8
	MOVUPS 16(SI), X9
	MOVUPS 32(SI), X10
	PXOR   X15, X0
	PXOR   X8, X1
	PXOR   X9, X2
	PXOR   X10, X3
	MOVUPS 48(SI), X15
	MOVUPS X0, 0(DI)
	MOVUPS X1, 16(DI)
	MOVUPS X2, 32(DI)
	MOVUPS X3, 48(DI)
	ADDQ   $64, SI
	ADDQ   $64, DI
	SUBQ   $4, BX
	JMP    loop4

loop1:
	TESTQ BX, BX
	JZ    done
	MOVUPS 0(SI), X0
	MOVAPS X0, X9
	MOVQ R8, R9
	ROUND1(PXOR, 0)
	CMPQ CX, $12
	JB   dec1_128
	JEQ  dec1_192
	ROUND1(AESDEC, 16)
	ROUND1(AESDEC, 32)
	ADDQ $32, R9

dec1_192:
	ROUND1(AESDEC, 16)
	ROUND1(AESDEC, 32)
	ADDQ $32, R9

dec1_128:
	TAIL1(AESDEC, AESDECLAST)
	PXOR   X15, X0
	MOVAPS X9, X15
	MOVUPS X0, 0(DI)
	ADDQ   $16, SI
	ADDQ   $16, DI
	DECQ   BX
	JMP    loop1

done:
	RET

// func encryptCBCAsm(nr int, xk *byte, dst, src *byte, n int, iv *byte)
//
// CX nr, R8 schedule, R9 round-key cursor, DI dst, SI src, BX blocks left,
// X0 the chaining value / state, X1 the plaintext block, X8 the round key.
TEXT ·encryptCBCAsm(SB), NOSPLIT, $0-48
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), R8
	MOVQ dst+16(FP), DI
	MOVQ src+24(FP), SI
	MOVQ n+32(FP), BX
	MOVQ iv+40(FP), DX
	MOVUPS (DX), X0

eloop:
	TESTQ BX, BX
	JZ    edone
	MOVUPS 0(SI), X1
	PXOR   X1, X0
	MOVQ R8, R9
	ROUND1(PXOR, 0)
	CMPQ CX, $12
	JB   enc_128
	JEQ  enc_192
	ROUND1(AESENC, 16)
	ROUND1(AESENC, 32)
	ADDQ $32, R9

enc_192:
	ROUND1(AESENC, 16)
	ROUND1(AESENC, 32)
	ADDQ $32, R9

enc_128:
	TAIL1(AESENC, AESENCLAST)
	MOVUPS X0, 0(DI)
	ADDQ   $16, SI
	ADDQ   $16, DI
	DECQ   BX
	JMP    eloop

edone:
	RET

// Multi-lane CBC encryption: each lane is a separate CBC chain (its own
// buffer and chaining value, one key for all), so the lanes' AESENC rounds
// are independent and interleave the way the blocks of a CBC decryption do.
//
// func encryptCBC8Asm(nr int, xk *byte, bufs *[8]*byte, ivs *[8][16]byte, n int)
//
// Encrypts n blocks in place from each of bufs[0..7], chaining from ivs[i],
// and leaves each lane's last ciphertext block in ivs[i]. CX nr, R8
// schedule, R9 round-key cursor, DX bufs, SI ivs, BX blocks left, R11 the
// byte offset of the current block in every lane, AX a lane's buffer,
// X0..X7 the lanes' states, X8 the round key, X9 a plaintext block.

// XORIN(i, X): X ^= the current plaintext block of lane i.
#define XORIN(i, X) MOVQ (i*8)(DX), AX; MOVUPS (AX)(R11*1), X9; PXOR X9, X
// STOUT(i, X): store X as lane i's current ciphertext block.
#define STOUT(i, X) MOVQ (i*8)(DX), AX; MOVUPS X, (AX)(R11*1)

TEXT ·encryptCBC8Asm(SB), NOSPLIT, $0-40
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), R8
	MOVQ bufs+16(FP), DX
	MOVQ ivs+24(FP), SI
	MOVQ n+32(FP), BX
	MOVUPS 0(SI), X0
	MOVUPS 16(SI), X1
	MOVUPS 32(SI), X2
	MOVUPS 48(SI), X3
	MOVUPS 64(SI), X4
	MOVUPS 80(SI), X5
	MOVUPS 96(SI), X6
	MOVUPS 112(SI), X7
	XORQ R11, R11

m8loop:
	TESTQ BX, BX
	JZ    m8done
	XORIN(0, X0)
	XORIN(1, X1)
	XORIN(2, X2)
	XORIN(3, X3)
	XORIN(4, X4)
	XORIN(5, X5)
	XORIN(6, X6)
	XORIN(7, X7)
	MOVQ R8, R9
	ROUND8(PXOR, 0)
	CMPQ CX, $12
	JB   m8_128
	JEQ  m8_192
	ROUND8(AESENC, 16)
	ROUND8(AESENC, 32)
	ADDQ $32, R9

m8_192:
	ROUND8(AESENC, 16)
	ROUND8(AESENC, 32)
	ADDQ $32, R9

m8_128:
	TAIL8(AESENC, AESENCLAST)
	STOUT(0, X0)
	STOUT(1, X1)
	STOUT(2, X2)
	STOUT(3, X3)
	STOUT(4, X4)
	STOUT(5, X5)
	STOUT(6, X6)
	STOUT(7, X7)
	ADDQ $16, R11
	DECQ BX
	JMP  m8loop

m8done:
	MOVUPS X0, 0(SI)
	MOVUPS X1, 16(SI)
	MOVUPS X2, 32(SI)
	MOVUPS X3, 48(SI)
	MOVUPS X4, 64(SI)
	MOVUPS X5, 80(SI)
	MOVUPS X6, 96(SI)
	MOVUPS X7, 112(SI)
	RET

// func encryptCBC4Asm(nr int, xk *byte, bufs *[8]*byte, ivs *[8][16]byte, n int)
//
// encryptCBC8Asm for lanes 0..3 only.
TEXT ·encryptCBC4Asm(SB), NOSPLIT, $0-40
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), R8
	MOVQ bufs+16(FP), DX
	MOVQ ivs+24(FP), SI
	MOVQ n+32(FP), BX
	MOVUPS 0(SI), X0
	MOVUPS 16(SI), X1
	MOVUPS 32(SI), X2
	MOVUPS 48(SI), X3
	XORQ R11, R11

m4loop:
	TESTQ BX, BX
	JZ    m4done
	XORIN(0, X0)
	XORIN(1, X1)
	XORIN(2, X2)
	XORIN(3, X3)
	MOVQ R8, R9
	ROUND4(PXOR, 0)
	CMPQ CX, $12
	JB   m4_128
	JEQ  m4_192
	ROUND4(AESENC, 16)
	ROUND4(AESENC, 32)
	ADDQ $32, R9

m4_192:
	ROUND4(AESENC, 16)
	ROUND4(AESENC, 32)
	ADDQ $32, R9

m4_128:
	TAIL4(AESENC, AESENCLAST)
	STOUT(0, X0)
	STOUT(1, X1)
	STOUT(2, X2)
	STOUT(3, X3)
	ADDQ $16, R11
	DECQ BX
	JMP  m4loop

m4done:
	MOVUPS X0, 0(SI)
	MOVUPS X1, 16(SI)
	MOVUPS X2, 32(SI)
	MOVUPS X3, 48(SI)
	RET

#define OP2(OP, K) OP K, X0; OP K, X1
#define ROUND2(OP, off) MOVUPS off(R9), X8; OP2(OP, X8)
#define TAIL2(OP, LAST) \
	ROUND2(OP, 16); ROUND2(OP, 32); ROUND2(OP, 48); ROUND2(OP, 64); \
	ROUND2(OP, 80); ROUND2(OP, 96); ROUND2(OP, 112); ROUND2(OP, 128); \
	ROUND2(OP, 144); ROUND2(LAST, 160)

// func encryptCBC2Asm(nr int, xk *byte, bufs *[8]*byte, ivs *[8][16]byte, n int)
//
// encryptCBC8Asm for lanes 0 and 1 only.
TEXT ·encryptCBC2Asm(SB), NOSPLIT, $0-40
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), R8
	MOVQ bufs+16(FP), DX
	MOVQ ivs+24(FP), SI
	MOVQ n+32(FP), BX
	MOVUPS 0(SI), X0
	MOVUPS 16(SI), X1
	XORQ R11, R11

m2loop:
	TESTQ BX, BX
	JZ    m2done
	XORIN(0, X0)
	XORIN(1, X1)
	MOVQ R8, R9
	ROUND2(PXOR, 0)
	CMPQ CX, $12
	JB   m2_128
	JEQ  m2_192
	ROUND2(AESENC, 16)
	ROUND2(AESENC, 32)
	ADDQ $32, R9

m2_192:
	ROUND2(AESENC, 16)
	ROUND2(AESENC, 32)
	ADDQ $32, R9

m2_128:
	TAIL2(AESENC, AESENCLAST)
	STOUT(0, X0)
	STOUT(1, X1)
	ADDQ $16, R11
	DECQ BX
	JMP  m2loop

m2done:
	MOVUPS X0, 0(SI)
	MOVUPS X1, 16(SI)
	RET
