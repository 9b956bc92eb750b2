// Package aescbc implements AES (FIPS-197) in CBC mode (NIST SP 800-38A,
// section 6.2) for the ESP codec (RFC 3602), with the whole chain handled in
// one call.
//
// crypto/cipher's CBC decrypter runs one AES block at a time, so each block
// waits for the full latency of its ten AESDEC instructions. CBC decryption
// has no chaining between the block decryptions, only in the final XOR, so on
// amd64 with AES-NI this package decrypts eight blocks at once with the
// AESDEC instructions interleaved, which keeps the AES unit's pipeline full.
// CBC encryption is serial within a chain, so one chain runs as one assembly
// loop; EncryptCBCN interleaves up to eight independent chains (one per
// packet) instead, the "multi-buffer" way of Intel's IPsec library, which
// gives encryption the pipelining decryption gets from its blocks.
//
// On other architectures, on amd64 without AES-NI, and with the purego build
// tag, the same API runs on crypto/aes one block at a time.
//
// The key schedule is expanded in Go (FIPS-197 section 5.2) once by New;
// decryption round keys are those of the equivalent inverse cipher
// (FIPS-197 section 5.3.5, InvMixColumns applied to rounds 1..Nr-1), which is
// what AESDEC expects. A *Cipher is read-only after New and is safe for
// concurrent use.
package aescbc

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"sync"
	"unsafe"
)

// BlockSize is the AES block size in bytes (FIPS-197 section 3.1, Nb = 4 words).
const BlockSize = 16

// Implementation constants.
const (
	maxRounds = 14 // Nr for a 256-bit key (FIPS-197 Figure 4)
)

// errKeySize is returned by New for a key that is not 16, 24 or 32 bytes.
var errKeySize = errors.New("aescbc: invalid key size (want 16, 24 or 32 bytes)")

// Cipher is an AES key prepared for CBC encryption and decryption. It holds
// no per-call state: one *Cipher may be used by many goroutines at once.
type Cipher struct {
	// enc[i] is round key i as the 16 bytes w[4i..4i+3] of FIPS-197
	// section 5.2, each word big-endian: the byte order AESENC uses.
	// enc and dec share one array of exactly 2(Nr+1) round keys: an
	// AES-128 schedule takes 352 bytes, not the 480 of AES-256's size.
	enc [][BlockSize]byte
	// dec is the schedule of the equivalent inverse cipher (FIPS-197
	// section 5.3.5) in the order AESDEC consumes it: dec[0] = enc[Nr],
	// dec[i] = InvMixColumns(enc[Nr-i]) for 0 < i < Nr, dec[Nr] = enc[0].
	dec    [][BlockSize]byte
	rounds int
	// block is crypto/aes's cipher for the portable path, made on first
	// use: with AES-NI it is never needed, and it would be half of the
	// memory of every SA (a P-CSCF holds six per UE).
	blockOnce sync.Once
	block     cipher.Block
}

// New expands an AES-128, AES-192 or AES-256 key (16, 24 or 32 bytes).
func New(key []byte) (*Cipher, error) {
	var c Cipher
	switch len(key) {
	case 16:
		c.rounds = 10
	case 24:
		c.rounds = 12
	case 32:
		c.rounds = 14
	default:
		return nil, errKeySize
	}
	n := c.rounds + 1
	rk := make([][BlockSize]byte, 2*n)
	c.enc, c.dec = rk[:n:n], rk[n:]
	expandKey(&c, key)
	return &c, nil
}

// portable returns crypto/aes's cipher for the key, made from the key
// schedule's first Nk words, which are the key itself (FIPS-197 §5.2).
func (c *Cipher) portable() cipher.Block {
	c.blockOnce.Do(func() {
		n := map[int]int{10: 16, 12: 24, 14: 32}[c.rounds]
		key := make([]byte, 0, 32)
		for i := 0; len(key) < n; i++ {
			key = append(key, c.enc[i][:]...)
		}
		b, err := aes.NewCipher(key[:n])
		if err != nil {
			panic("aescbc: " + err.Error()) // unreachable: New checked the size
		}
		c.block = b
	})
	return c.block
}

// Rounds reports Nr, the number of AES rounds: 10, 12 or 14.
func (c *Cipher) Rounds() int { return c.rounds }

// DecryptCBC decrypts src into dst in CBC mode with the given 16-byte iv.
// len(src) must be a multiple of 16 and dst at least as long as src; dst may
// be src itself (in place) but must not overlap it otherwise. iv is not
// modified. Like crypto/cipher it panics on those caller mistakes.
func (c *Cipher) DecryptCBC(dst, src, iv []byte) {
	checkArgs(dst, src, iv)
	if len(src) == 0 {
		return
	}
	decryptCBC(c, dst[:len(src)], src, iv)
}

// EncryptCBC encrypts src into dst in CBC mode with the given 16-byte iv.
// The rules for dst, src and iv are those of DecryptCBC.
func (c *Cipher) EncryptCBC(dst, src, iv []byte) {
	checkArgs(dst, src, iv)
	if len(src) == 0 {
		return
	}
	encryptCBC(c, dst[:len(src)], src, iv)
}

// Job is one CBC encryption for EncryptCBCN: Buf, whole blocks, is
// encrypted in place, chained from the 16-byte IV. IV is read before Buf is
// written, so it may sit right before Buf (as an ESP packet's IV does).
type Job struct {
	Buf []byte
	IV  []byte
}

// EncryptCBCN encrypts every job's Buf in place, as EncryptCBC(j.Buf, j.Buf,
// j.IV) would. On amd64 with AES-NI the chains run up to eight at a time
// with their rounds interleaved: a batch of packets encrypts several times
// faster than one packet after another. Jobs must not share memory, but
// for IV with its own Buf. Like EncryptCBC it panics on malformed jobs.
func (c *Cipher) EncryptCBCN(jobs []Job) {
	for i := range jobs {
		j := &jobs[i]
		checkArgs(j.Buf, j.Buf, j.IV)
	}
	encryptCBCN(c, jobs)
}

func checkArgs(dst, src, iv []byte) {
	if len(iv) != BlockSize {
		panic("aescbc: IV length must equal block size")
	}
	if len(src)%BlockSize != 0 {
		panic("aescbc: input not full blocks")
	}
	if len(dst) < len(src) {
		panic("aescbc: output smaller than input")
	}
	if inexactOverlap(dst[:len(src)], src) {
		panic("aescbc: invalid buffer overlap")
	}
}

// inexactOverlap reports whether x and y share memory at any position other
// than the same index (the check crypto/cipher makes).
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	xs := uintptr(unsafe.Pointer(&x[0]))
	ys := uintptr(unsafe.Pointer(&y[0]))
	return xs <= ys+uintptr(len(y)-1) && ys <= xs+uintptr(len(x)-1)
}

// decryptGeneric is the portable path: crypto/aes one block at a time,
// walking the chain backwards so that in place each block's predecessor is
// still ciphertext when it is needed.
func decryptGeneric(c *Cipher, dst, src, iv []byte) {
	var iv0 [BlockSize]byte
	copy(iv0[:], iv) // iv may sit in dst
	b := c.portable()
	for end := len(src); end > 0; end -= BlockSize {
		start := end - BlockSize
		b.Decrypt(dst[start:end], src[start:end])
		prev := iv0[:]
		if start > 0 {
			prev = src[start-BlockSize : start]
		}
		xorBlock(dst[start:end], prev)
	}
}

// encryptGeneric is the portable path for encryption.
func encryptGeneric(c *Cipher, dst, src, iv []byte) {
	var prev [BlockSize]byte
	copy(prev[:], iv)
	b := c.portable()
	for i := 0; i < len(src); i += BlockSize {
		d := dst[i : i+BlockSize]
		for j := range BlockSize {
			d[j] = src[i+j] ^ prev[j]
		}
		b.Encrypt(d, d)
		copy(prev[:], d)
	}
}

func xorBlock(dst, x []byte) {
	_ = dst[BlockSize-1]
	_ = x[BlockSize-1]
	for i := range BlockSize {
		dst[i] ^= x[i]
	}
}
