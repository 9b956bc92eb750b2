package aescbc

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

// impl is one implementation of the CBC loops, so that both the assembly and
// the portable path are tested on amd64.
type impl struct {
	name     string
	dec, enc func(c *Cipher, dst, src, iv []byte)
}

func impls() []*impl {
	l := []*impl{{name: "generic", dec: decryptGeneric, enc: encryptGeneric}}
	if a := asmImpl(); a != nil {
		l = append(l, a)
	}
	// The public methods, whichever path they pick.
	l = append(l, &impl{
		name: "public",
		dec:  func(c *Cipher, dst, src, iv []byte) { c.DecryptCBC(dst, src, iv) },
		enc:  func(c *Cipher, dst, src, iv []byte) { c.EncryptCBC(dst, src, iv) },
	})
	return l
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func mustNew(t testing.TB, key []byte) *Cipher {
	t.Helper()
	c, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKeyExpansionFIPS197 checks the expanded encryption schedule word by
// word against FIPS-197 Appendix A.
func TestKeyExpansionFIPS197(t *testing.T) {
	type word struct {
		i int
		w uint32
	}
	vectors := []struct {
		src   string
		key   string
		words []word
	}{
		{
			src: "FIPS-197 Appendix A.1 (Expansion of a 128-bit Cipher Key)",
			key: "2b7e151628aed2a6abf7158809cf4f3c",
			words: []word{
				{0, 0x2b7e1516}, {1, 0x28aed2a6}, {2, 0xabf71588}, {3, 0x09cf4f3c},
				{4, 0xa0fafe17}, {5, 0x88542cb1}, {6, 0x23a33939}, {7, 0x2a6c7605},
				{8, 0xf2c295f2}, {9, 0x7a96b943}, {10, 0x5935807a}, {11, 0x7359f67f},
				{12, 0x3d80477d}, {13, 0x4716fe3e}, {14, 0x1e237e44}, {15, 0x6d7a883b},
				{16, 0xef44a541}, {17, 0xa8525b7f}, {18, 0xb671253b}, {19, 0xdb0bad00},
				{20, 0xd4d1c6f8}, {21, 0x7c839d87}, {22, 0xcaf2b8bc}, {23, 0x11f915bc},
				{24, 0x6d88a37a}, {25, 0x110b3efd}, {26, 0xdbf98641}, {27, 0xca0093fd},
				{28, 0x4e54f70e}, {29, 0x5f5fc9f3}, {30, 0x84a64fb2}, {31, 0x4ea6dc4f},
				{32, 0xead27321}, {33, 0xb58dbad2}, {34, 0x312bf560}, {35, 0x7f8d292f},
				{36, 0xac7766f3}, {37, 0x19fadc21}, {38, 0x28d12941}, {39, 0x575c006e},
				{40, 0xd014f9a8}, {41, 0xc9ee2589}, {42, 0xe13f0cc8}, {43, 0xb6630ca6},
			},
		},
		{
			src: "FIPS-197 Appendix A.2 (Expansion of a 192-bit Cipher Key)",
			key: "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
			words: []word{
				{0, 0x8e73b0f7}, {5, 0x522c6b7b},
				{6, 0xfe0c91f7}, {7, 0x2402f5a5}, {8, 0xec12068e}, {9, 0x6c827f6b},
				{10, 0x0e7a95b9}, {11, 0x5c56fec2}, {51, 0x01002202},
			},
		},
		{
			src: "FIPS-197 Appendix A.3 (Expansion of a 256-bit Cipher Key)",
			key: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
			words: []word{
				{0, 0x603deb10}, {7, 0x0914dff4},
				{8, 0x9ba35411}, {9, 0x8e6925af}, {10, 0xa51a8b5f}, {11, 0x2067fcde},
				{12, 0xa8b09c1a}, {13, 0x93d194cd}, {14, 0xbe49846e}, {15, 0xb75d5b9a},
				{59, 0x706c631e},
			},
		},
	}
	for _, v := range vectors {
		c := mustNew(t, unhex(v.key))
		for _, w := range v.words {
			got := binary.BigEndian.Uint32(c.enc[w.i/4][4*(w.i%4):])
			if got != w.w {
				t.Errorf("%s: w[%d] = %08x, want %08x", v.src, w.i, got, w.w)
			}
		}
		if last := 4*(c.rounds+1) - 1; v.words[len(v.words)-1].i != last {
			t.Errorf("%s: table does not reach the last word w[%d]", v.src, last)
		}
	}
}

// TestDecryptionSchedule checks the equivalent inverse cipher's schedule
// against its definition (FIPS-197 section 5.3.5) and checks invMixColumns
// against MixColumns (section 5.1.3), its inverse, over random columns.
func TestDecryptionSchedule(t *testing.T) {
	c := mustNew(t, unhex("2b7e151628aed2a6abf7158809cf4f3c"))
	if c.dec[0] != c.enc[10] || c.dec[10] != c.enc[0] {
		t.Fatal("first/last decryption round keys are not enc[Nr]/enc[0]")
	}
	mix := func(s [16]byte) [16]byte { // MixColumns, FIPS-197 (5.6)
		var o [16]byte
		for c := 0; c < 4; c++ {
			a0, a1, a2, a3 := s[4*c], s[4*c+1], s[4*c+2], s[4*c+3]
			o[4*c+0] = gmul(a0, 2) ^ gmul(a1, 3) ^ a2 ^ a3
			o[4*c+1] = a0 ^ gmul(a1, 2) ^ gmul(a2, 3) ^ a3
			o[4*c+2] = a0 ^ a1 ^ gmul(a2, 2) ^ gmul(a3, 3)
			o[4*c+3] = gmul(a0, 3) ^ a1 ^ a2 ^ gmul(a3, 2)
		}
		return o
	}
	for r := 1; r < 10; r++ {
		if mix(c.dec[r]) != c.enc[10-r] {
			t.Errorf("dec[%d] is not InvMixColumns(enc[%d])", r, 10-r)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		var s [16]byte
		for i := range s {
			s[i] = byte(rng.Uint32())
		}
		if mix(invMixColumns(s)) != s {
			t.Fatalf("MixColumns(InvMixColumns(%x)) != itself", s)
		}
	}
	// FIPS-197 section 4.2 example: {57} • {83} = {c1}; section 4.2.1: {57} • {13} = {fe}.
	if gmul(0x57, 0x83) != 0xc1 || gmul(0x57, 0x13) != 0xfe {
		t.Error("gmul disagrees with FIPS-197 section 4.2")
	}
}

// TestSbox checks the S-box table against its definition (FIPS-197 section
// 5.1.1): the multiplicative inverse in GF(2^8) followed by the affine map.
func TestSbox(t *testing.T) {
	for x := 0; x < 256; x++ {
		var inv byte
		for y := 1; y < 256 && x != 0; y++ {
			if gmul(byte(x), byte(y)) == 1 {
				inv = byte(y)
				break
			}
		}
		s := inv ^ 0x63
		for k := 1; k <= 4; k++ {
			s ^= inv<<k | inv>>(8-k)
		}
		if sbox[x] != s {
			t.Errorf("sbox[%#02x] = %#02x, want %#02x", x, sbox[x], s)
		}
	}
}

// spPlain is the plaintext of every NIST SP 800-38A Appendix F example.
const spPlain = "6bc1bee22e409f96e93d7e117393172a" + "ae2d8a571e03ac9c9eb76fac45af8e51" +
	"30c81c46a35ce411e5fbc1191a0a52ef" + "f69f2445df4f9b17ad2b417be66c3710"

var knownAnswers = []struct {
	src             string
	key, iv, pt, ct string
}{
	{src: "NIST SP 800-38A F.2.1 CBC-AES128.Encrypt / F.2.2 CBC-AES128.Decrypt",
		key: "2b7e151628aed2a6abf7158809cf4f3c", iv: "000102030405060708090a0b0c0d0e0f", pt: spPlain,
		ct: "7649abac8119b246cee98e9b12e9197d" + "5086cb9b507219ee95db113a917678b2" +
			"73bed6b8e3c1743b7116e69e22229516" + "3ff1caa1681fac09120eca307586e1a7"},
	{src: "NIST SP 800-38A F.2.3 CBC-AES192.Encrypt / F.2.4 CBC-AES192.Decrypt",
		key: "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b", iv: "000102030405060708090a0b0c0d0e0f", pt: spPlain,
		ct: "4f021db243bc633d7178183a9fa071e8" + "b4d9ada9ad7dedf4e5e738763f69145a" +
			"571b242012fb7ae07fa9baac3df102e0" + "08b0e27988598881d920a9e64f5615cd"},
	{src: "NIST SP 800-38A F.2.5 CBC-AES256.Encrypt / F.2.6 CBC-AES256.Decrypt",
		key: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", iv: "000102030405060708090a0b0c0d0e0f", pt: spPlain,
		ct: "f58c4c04d6e5f1ba779eabfb5f7bfbd6" + "9cfc4e967edb808d679f777bc6702c7d" +
			"39f23369a9d9bacfa530e26304231461" + "b2eb05e2c39be9fcda6c19078c6a9d1b"},
	// One block with a zero IV is the bare cipher.
	{src: "FIPS-197 Appendix C.1 (AES-128), as one CBC block with a zero IV",
		key: "000102030405060708090a0b0c0d0e0f", iv: "00000000000000000000000000000000",
		pt: "00112233445566778899aabbccddeeff", ct: "69c4e0d86a7b0430d8cdb78070b4c55a"},
	{src: "FIPS-197 Appendix C.2 (AES-192), as one CBC block with a zero IV",
		key: "000102030405060708090a0b0c0d0e0f1011121314151617", iv: "00000000000000000000000000000000",
		pt: "00112233445566778899aabbccddeeff", ct: "dda97ca4864cdfe06eaf70a0ec0d7191"},
	{src: "FIPS-197 Appendix C.3 (AES-256), as one CBC block with a zero IV",
		key: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", iv: "00000000000000000000000000000000",
		pt: "00112233445566778899aabbccddeeff", ct: "8ea2b7ca516745bfeafc49904b496089"},
}

func TestKnownAnswers(t *testing.T) {
	for _, m := range impls() {
		for _, v := range knownAnswers {
			c := mustNew(t, unhex(v.key))
			iv, pt, ct := unhex(v.iv), unhex(v.pt), unhex(v.ct)
			// Every prefix of a CBC chain is the chain of that prefix.
			for n := BlockSize; n <= len(pt); n += BlockSize {
				got := make([]byte, n)
				m.enc(c, got, pt[:n], iv)
				if !bytes.Equal(got, ct[:n]) {
					t.Errorf("%s: %s: encrypt %d bytes = %x, want %x", m.name, v.src, n, got, ct[:n])
				}
				m.dec(c, got, ct[:n], iv)
				if !bytes.Equal(got, pt[:n]) {
					t.Errorf("%s: %s: decrypt %d bytes = %x, want %x", m.name, v.src, n, got, pt[:n])
				}
			}
		}
	}
}

// lengths covers every tail path of the 8/4/1-block loops.
func lengths() []int {
	var l []int
	for n := 0; n <= 8000; n += BlockSize {
		l = append(l, n)
	}
	return l
}

// TestAgainstStdlib compares every implementation with crypto/cipher's CBC
// over random keys, IVs and data of every length 0..8000 (multiples of 16),
// in place and out of place.
func TestAgainstStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	fill := func(b []byte) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	for _, keyLen := range []int{16, 24, 32} {
		for _, n := range lengths() {
			if keyLen != 16 && n > 512 && n%160 != 0 {
				continue // every tail for 128; a sample of lengths for 192/256
			}
			key := make([]byte, keyLen)
			iv := make([]byte, BlockSize)
			pt := make([]byte, n)
			fill(key)
			fill(iv)
			fill(pt)
			blk, err := aes.NewCipher(key)
			if err != nil {
				t.Fatal(err)
			}
			wantCT := make([]byte, n)
			cipher.NewCBCEncrypter(blk, iv).CryptBlocks(wantCT, pt)
			wantPT := make([]byte, n)
			cipher.NewCBCDecrypter(blk, iv).CryptBlocks(wantPT, wantCT)
			if !bytes.Equal(wantPT, pt) {
				t.Fatal("crypto/cipher round trip failed")
			}
			c := mustNew(t, key)
			ivCopy := bytes.Clone(iv)
			for _, m := range impls() {
				if n == 0 && m.name != "public" {
					continue // the loops are only called with at least one block
				}
				// Out of place, with dst longer than src.
				dst := make([]byte, n+BlockSize)
				m.enc(c, dst, pt, iv)
				if !bytes.Equal(dst[:n], wantCT) || !bytes.Equal(dst[n:], make([]byte, BlockSize)) {
					t.Fatalf("%s: AES-%d encrypt %d bytes out of place differs from crypto/cipher", m.name, 8*keyLen, n)
				}
				m.dec(c, dst, wantCT, iv)
				if !bytes.Equal(dst[:n], pt) {
					t.Fatalf("%s: AES-%d decrypt %d bytes out of place differs from crypto/cipher", m.name, 8*keyLen, n)
				}
				// In place.
				buf := bytes.Clone(pt)
				m.enc(c, buf, buf, iv)
				if !bytes.Equal(buf, wantCT) {
					t.Fatalf("%s: AES-%d encrypt %d bytes in place differs from crypto/cipher", m.name, 8*keyLen, n)
				}
				m.dec(c, buf, buf, iv)
				if !bytes.Equal(buf, pt) {
					t.Fatalf("%s: AES-%d decrypt %d bytes in place differs from crypto/cipher", m.name, 8*keyLen, n)
				}
				if !bytes.Equal(iv, ivCopy) {
					t.Fatalf("%s: iv modified", m.name)
				}
			}
		}
	}
}

// TestBitFlipPropagation: flipping bit b of ciphertext block i garbles
// plaintext block i, flips exactly bit b of plaintext block i+1 and leaves
// every other block alone (SP 800-38A section 6.2 / Appendix D). Flipping a
// bit of the IV flips the same bit of plaintext block 0 only.
func TestBitFlipPropagation(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	key := make([]byte, 16)
	iv := make([]byte, 16)
	pt := make([]byte, 23*BlockSize) // 8 + 8 + 4 + 3: crosses every group boundary
	for _, b := range [][]byte{key, iv, pt} {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	c := mustNew(t, key)
	ct := make([]byte, len(pt))
	c.EncryptCBC(ct, pt, iv)
	nblocks := len(pt) / BlockSize
	for _, m := range impls() {
		for blk := -1; blk < nblocks; blk++ {
			bit := rng.IntN(128)
			ct2, iv2 := bytes.Clone(ct), bytes.Clone(iv)
			if blk < 0 {
				iv2[bit/8] ^= 1 << (bit % 8)
			} else {
				ct2[blk*BlockSize+bit/8] ^= 1 << (bit % 8)
			}
			got := make([]byte, len(ct2))
			m.dec(c, got, ct2, iv2)
			for j := range nblocks {
				g, p := got[j*BlockSize:(j+1)*BlockSize], pt[j*BlockSize:(j+1)*BlockSize]
				switch j {
				case blk:
					if bytes.Equal(g, p) {
						t.Errorf("%s: flip in block %d: plaintext block %d unchanged", m.name, blk, j)
					}
				case blk + 1:
					want := bytes.Clone(p)
					want[bit/8] ^= 1 << (bit % 8)
					if !bytes.Equal(g, want) {
						t.Errorf("%s: flip in block %d: block %d is not the plaintext with bit %d flipped", m.name, blk, j, bit)
					}
				default:
					if !bytes.Equal(g, p) {
						t.Errorf("%s: flip in block %d: unrelated block %d changed", m.name, blk, j)
					}
				}
			}
		}
	}
}

func TestNewKeySizes(t *testing.T) {
	for n := 0; n <= 40; n++ {
		c, err := New(make([]byte, n))
		valid := n == 16 || n == 24 || n == 32
		if valid != (err == nil) {
			t.Errorf("New(%d-byte key): err = %v", n, err)
		}
		if valid && c.Rounds() != n/4+6 {
			t.Errorf("New(%d-byte key): %d rounds", n, c.Rounds())
		}
	}
}

func TestMisusePanics(t *testing.T) {
	c := mustNew(t, make([]byte, 16))
	buf := make([]byte, 64)
	iv := make([]byte, 16)
	cases := []struct {
		name         string
		dst, src, iv []byte
	}{
		{"partial block", buf[:20], buf[:20], iv},
		{"short dst", make([]byte, 32), buf[:48], iv},
		{"short iv", buf[:16], buf[:16], iv[:15]},
		{"long iv", buf[:16], buf[:16], make([]byte, 17)},
		{"inexact overlap", buf[16:48], buf[:32], iv},
	}
	for _, tc := range cases {
		for op, f := range map[string]func([]byte, []byte, []byte){"DecryptCBC": c.DecryptCBC, "EncryptCBC": c.EncryptCBC} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s with %s did not panic", op, tc.name)
					}
				}()
				f(tc.dst, tc.src, tc.iv)
			}()
		}
	}
	// Empty input and exact aliasing are fine.
	c.DecryptCBC(nil, nil, iv)
	c.EncryptCBC(buf, buf, iv)
}

func TestNoAllocations(t *testing.T) {
	c := mustNew(t, make([]byte, 16))
	buf := make([]byte, 1408)
	iv := make([]byte, 16)
	if n := testing.AllocsPerRun(100, func() {
		c.EncryptCBC(buf, buf, iv)
		c.DecryptCBC(buf, buf, iv)
	}); n != 0 {
		t.Errorf("%v allocations per call, want 0", n)
	}
	for _, m := range impls() {
		if n := testing.AllocsPerRun(100, func() {
			m.enc(c, buf, buf, iv)
			m.dec(c, buf, buf, iv)
		}); n != 0 {
			t.Errorf("%s: %v allocations per call, want 0", m.name, n)
		}
	}
}

// TestConcurrentUse runs one *Cipher from many goroutines (meaningful under
// -race) and checks every result.
func TestConcurrentUse(t *testing.T) {
	key := unhex("2b7e151628aed2a6abf7158809cf4f3c")
	c := mustNew(t, key)
	blk, _ := aes.NewCipher(key)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 200 {
				n := BlockSize * rng.IntN(100)
				pt := make([]byte, n)
				iv := make([]byte, 16)
				for i := range pt {
					pt[i] = byte(rng.Uint32())
				}
				iv[0] = byte(g)
				want := make([]byte, n)
				cipher.NewCBCEncrypter(blk, iv).CryptBlocks(want, pt)
				got := make([]byte, n)
				c.EncryptCBC(got, pt, iv)
				if !bytes.Equal(got, want) {
					errs <- fmt.Errorf("goroutine %d: encrypt mismatch at %d bytes", g, n)
					return
				}
				c.DecryptCBC(got, got, iv)
				if !bytes.Equal(got, pt) {
					errs <- fmt.Errorf("goroutine %d: decrypt mismatch at %d bytes", g, n)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func ExampleCipher_DecryptCBC() {
	// NIST SP 800-38A F.2.2 CBC-AES128.Decrypt, first block, decrypted in place.
	c, err := New(unhex("2b7e151628aed2a6abf7158809cf4f3c"))
	if err != nil {
		panic(err)
	}
	iv := unhex("000102030405060708090a0b0c0d0e0f")
	buf := unhex("7649abac8119b246cee98e9b12e9197d")
	c.DecryptCBC(buf, buf, iv)
	fmt.Printf("%x\n", buf)
	// Output: 6bc1bee22e409f96e93d7e117393172a
}

// gmul multiplies a by b in GF(2^8) (FIPS-197 section 4.2), without
// branching on either operand.
func gmul(a, b byte) byte {
	var p byte
	for range 8 {
		p ^= a & -(b & 1)
		a = xtime(a)
		b >>= 1
	}
	return p
}

// TestScheduleMemory: an AES-128 schedule takes what its eleven round keys
// each way need (352 bytes) and a small header, not room for AES-256's
// fifteen (576 bytes in all before). A P-CSCF keeps one per UE that has
// sent a packet.
func TestScheduleMemory(t *testing.T) {
	key := make([]byte, 16)
	const n = 1000
	kept := make([]*Cipher, 0, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		c, err := New(key)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, c)
	}
	runtime.ReadMemStats(&after)
	per := float64(after.TotalAlloc-before.TotalAlloc) / n
	if per > 464 {
		t.Errorf("an AES-128 schedule takes %.0f bytes, budget 464", per)
	}
	if len(kept[0].enc) != 11 || len(kept[0].dec) != 11 {
		t.Errorf("%d and %d round keys, want 11 each way", len(kept[0].enc), len(kept[0].dec))
	}
}
