//go:build !amd64 || purego

package aescbc

// useAsm is false: this build has only the portable path.
const useAsm = false

func decryptCBC(c *Cipher, dst, src, iv []byte) { decryptGeneric(c, dst, src, iv) }

func encryptCBC(c *Cipher, dst, src, iv []byte) { encryptGeneric(c, dst, src, iv) }

func encryptCBCN(c *Cipher, jobs []Job) {
	for _, j := range jobs {
		encryptGeneric(c, j.Buf, j.Buf, j.IV)
	}
}
