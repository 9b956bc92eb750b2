package aescbc

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"strconv"
	"testing"
)

var benchSizes = []int{64, 512, 1400, 8000}

// roundDown16 is the largest multiple of the block size not above n (1400 is
// not a multiple of 16; 1392 is the ciphertext length benchmarked for it).
func roundDown16(n int) int { return n &^ (BlockSize - 1) }

// ivSetter is the SetIV method crypto/cipher's CBC modes have, which lets a
// mode be reused per packet the way crypto/tls does.
type ivSetter interface{ SetIV([]byte) }

func benchKey() []byte { return []byte("0123456789abcdef") }

func BenchmarkDecryptCBC(b *testing.B) {
	c := mustNew(b, benchKey())
	iv := make([]byte, 16)
	for _, size := range benchSizes {
		buf := make([]byte, roundDown16(size))
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				c.DecryptCBC(buf, buf, iv)
			}
		})
	}
}

func BenchmarkStdlibDecryptCBC(b *testing.B) {
	blk, _ := aes.NewCipher(benchKey())
	iv := make([]byte, 16)
	mode := cipher.NewCBCDecrypter(blk, iv)
	for _, size := range benchSizes {
		buf := make([]byte, roundDown16(size))
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				mode.(ivSetter).SetIV(iv)
				mode.CryptBlocks(buf, buf)
			}
		})
	}
}

func BenchmarkEncryptCBC(b *testing.B) {
	c := mustNew(b, benchKey())
	iv := make([]byte, 16)
	for _, size := range benchSizes {
		buf := make([]byte, roundDown16(size))
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				c.EncryptCBC(buf, buf, iv)
			}
		})
	}
}

func BenchmarkStdlibEncryptCBC(b *testing.B) {
	blk, _ := aes.NewCipher(benchKey())
	iv := make([]byte, 16)
	mode := cipher.NewCBCEncrypter(blk, iv)
	for _, size := range benchSizes {
		buf := make([]byte, roundDown16(size))
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				mode.(ivSetter).SetIV(iv)
				mode.CryptBlocks(buf, buf)
			}
		})
	}
}

// espOpenPacket lays out a 1400-byte ESP packet as RFC 4303/RFC 3602 do:
// SPI+sequence (8), IV (16), ciphertext (1360 = 85 blocks), ICV (12,
// HMAC-SHA1-96). It returns the packet, the authenticated part and the
// ciphertext, all aliasing one buffer.
func espOpenPacket() (pkt, authed, iv, ct, icv []byte) {
	pkt = make([]byte, 1400)
	const hdr, ivLen, icvLen = 8, 16, 12
	ctLen := roundDown16(len(pkt) - hdr - ivLen - icvLen)
	authed = pkt[:hdr+ivLen+ctLen]
	return pkt, authed, pkt[hdr : hdr+ivLen], pkt[hdr+ivLen : hdr+ivLen+ctLen], pkt[len(authed) : len(authed)+icvLen]
}

// BenchmarkESPOpen1400 is what the ESP inbound path does per 1400-byte
// packet with aes-cbc + hmac-sha-1-96: verify the ICV over header, IV and
// ciphertext, then decrypt. "ours" decrypts with this package, "stdlib" with
// crypto/cipher; both use the same HMAC-SHA1. The plaintext goes to a
// scratch buffer so that the packet stays valid across iterations (the cost
// is that of decrypting in place).
func BenchmarkESPOpen1400(b *testing.B) {
	key := benchKey()
	authKey := make([]byte, 20)
	c := mustNew(b, key)
	blk, _ := aes.NewCipher(key)
	mode := cipher.NewCBCDecrypter(blk, make([]byte, 16))
	mac := hmac.New(sha1.New, authKey)
	pkt, authed, iv, ct, icv := espOpenPacket()
	mac.Write(authed)
	copy(icv, mac.Sum(nil))
	var sum [sha1.Size]byte
	verify := func(b *testing.B) {
		mac.Reset()
		mac.Write(authed)
		if !hmac.Equal(mac.Sum(sum[:0])[:12], icv) {
			b.Fatal("ICV mismatch")
		}
	}
	var ivCopy [16]byte
	out := make([]byte, len(ct))
	b.Run("ours", func(b *testing.B) {
		b.SetBytes(int64(len(pkt)))
		b.ReportAllocs()
		for b.Loop() {
			verify(b)
			c.DecryptCBC(out, ct, iv)
		}
	})
	b.Run("stdlib", func(b *testing.B) {
		b.SetBytes(int64(len(pkt)))
		b.ReportAllocs()
		for b.Loop() {
			verify(b)
			copy(ivCopy[:], iv)
			mode.(ivSetter).SetIV(ivCopy[:])
			mode.CryptBlocks(out, ct)
		}
	})
	b.Run("hmac-only", func(b *testing.B) {
		b.SetBytes(int64(len(pkt)))
		b.ReportAllocs()
		for b.Loop() {
			verify(b)
		}
	})
}
