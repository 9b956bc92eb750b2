//go:build amd64 && !purego

package aescbc

import "golang.org/x/sys/cpu"

// useAsm: the assembly uses AES-NI (AESENC, AESENCLAST, AESDEC, AESDECLAST)
// and SSE2 (MOVUPS, PXOR), which every amd64 CPU has.
var useAsm = cpu.X86.HasAES

// decryptCBCAsm decrypts n blocks from src to dst with the decryption
// schedule xk (Nr+1 round keys of 16 bytes), chaining from *iv.
//
//go:noescape
func decryptCBCAsm(nr int, xk *byte, dst, src *byte, n int, iv *byte)

// encryptCBCAsm encrypts n blocks from src to dst with the encryption
// schedule xk, chaining from *iv.
//
//go:noescape
func encryptCBCAsm(nr int, xk *byte, dst, src *byte, n int, iv *byte)

func decryptCBC(c *Cipher, dst, src, iv []byte) {
	if !useAsm {
		decryptGeneric(c, dst, src, iv)
		return
	}
	decryptCBCAsm(c.rounds, &c.dec[0][0], &dst[0], &src[0], len(src)/BlockSize, &iv[0])
}

func encryptCBC(c *Cipher, dst, src, iv []byte) {
	if !useAsm {
		encryptGeneric(c, dst, src, iv)
		return
	}
	encryptCBCAsm(c.rounds, &c.enc[0][0], &dst[0], &src[0], len(src)/BlockSize, &iv[0])
}
