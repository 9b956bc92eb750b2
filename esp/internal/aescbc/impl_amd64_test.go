//go:build amd64 && !purego

package aescbc

// asmImpl is the AES-NI path, when this CPU has AES-NI.
func asmImpl() *impl {
	if !useAsm {
		return nil
	}
	return &impl{
		name: "asm",
		dec: func(c *Cipher, dst, src, iv []byte) {
			decryptCBCAsm(c.rounds, &c.dec[0][0], &dst[0], &src[0], len(src)/BlockSize, &iv[0])
		},
		enc: func(c *Cipher, dst, src, iv []byte) {
			encryptCBCAsm(c.rounds, &c.enc[0][0], &dst[0], &src[0], len(src)/BlockSize, &iv[0])
		},
	}
}
