package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"hash"
	"slices"
	"sync/atomic"

	"github.com/imsec/imsec/esp/internal/aescbc"

	"github.com/imsec/imsec/esp/internal/hmacsha1"
)

// EncAlg names an ESP encryption algorithm the way TS 33.203 and RFC 3329
// write it in the ealg parameter of Security-Client / Security-Server.
type EncAlg string

// AuthAlg names an ESP integrity algorithm the way TS 33.203 and RFC 3329
// write it in the alg parameter.
type AuthAlg string

// Encryption algorithms.
const (
	// EncNull is NULL encryption (RFC 2410); the SA must have an integrity algorithm.
	EncNull EncAlg = "null"
	// EncAESCBC is AES-CBC with an explicit 16-octet IV (RFC 3602). TS 33.203
	// uses a 128-bit key; 192 and 256-bit keys are accepted too.
	EncAESCBC EncAlg = "aes-cbc"
	// EncDES3CBC is 3DES-EDE-CBC (RFC 2451) with a 24-octet key, for interoperability only.
	EncDES3CBC EncAlg = "des-ede3-cbc"
	// EncAESGCM is AES-GCM with a 16-octet ICV (RFC 4106). The key material is
	// the AES key (16, 24 or 32 octets) followed by a 4-octet salt; the
	// integrity algorithm must be AuthNull.
	EncAESGCM EncAlg = "aes-gcm"
)

// Integrity algorithms.
const (
	// AuthNull is no separate integrity algorithm; only valid with EncAESGCM.
	AuthNull AuthAlg = "null"
	// AuthHMACSHA196 is HMAC-SHA-1-96 (RFC 2404), 20-octet key.
	AuthHMACSHA196 AuthAlg = "hmac-sha-1-96"
	// AuthHMACMD596 is HMAC-MD5-96 (RFC 2403), 16-octet key.
	AuthHMACMD596 AuthAlg = "hmac-md5-96"
	// AuthHMACSHA256128 is HMAC-SHA-256-128 (RFC 4868), 32-octet key.
	AuthHMACSHA256128 AuthAlg = "hmac-sha-256-128"
)

// EncAlgs and AuthAlgs list the supported algorithms, in a stable order.
var (
	EncAlgs  = []EncAlg{EncNull, EncAESCBC, EncDES3CBC, EncAESGCM}
	AuthAlgs = []AuthAlg{AuthNull, AuthHMACSHA196, AuthHMACMD596, AuthHMACSHA256128}
)

// EncKeyLen returns the key lengths accepted for e (the first is the one
// TS 33.203 uses), or nil if e is unknown.
func EncKeyLen(e EncAlg) []int {
	return slices.Clone(encKeyLens(e))
}

// The key lengths EncKeyLen returns copies of.
var (
	nullKeyLens = []int{0}
	aesKeyLens  = []int{16, 24, 32}
	des3KeyLens = []int{DES3KeyLen}
	gcmKeyLens  = []int{16 + GCMSaltLen, 24 + GCMSaltLen, 32 + GCMSaltLen}
)

// encKeyLens is EncKeyLen without the copy, for newAlgs: the slices are
// shared and must not be changed.
func encKeyLens(e EncAlg) []int {
	switch e {
	case EncNull:
		return nullKeyLens
	case EncAESCBC:
		return aesKeyLens
	case EncDES3CBC:
		return des3KeyLens
	case EncAESGCM:
		return gcmKeyLens
	}
	return nil
}

// AuthKeyLen returns the key length of a, or -1 if a is unknown.
func AuthKeyLen(a AuthAlg) int {
	switch a {
	case AuthNull:
		return 0
	case AuthHMACSHA196:
		return HMACSHA196KeyLen
	case AuthHMACMD596:
		return HMACMD596KeyLen
	case AuthHMACSHA256128:
		return HMACSHA256128KeyLen
	}
	return -1
}

// algs is the per-SA algorithm state shared by all goroutines: immutable
// but for the AES-CBC key schedule, made once on first use (cbc).
type algs struct {
	enc     EncAlg
	auth    AuthAlg
	ivLen   int // explicit IV in each packet
	align   int // the payload+trailer is padded to a multiple of this
	icvLen  int
	cbcSize int // cipher block size for CBC, 0 otherwise

	block cipher.Block // 3DES-CBC cipher; concurrent-safe
	aead  cipher.AEAD  // GCM; concurrent-safe
	salt  [GCMSaltLen]byte

	// The keys are held in the struct, not in slices of their own: a
	// P-CSCF holds two algs per UE (signalling and media keys), mostly
	// idle. The small fields sit together to keep the struct at 192 bytes.
	//
	// encKey is the encryption key (for AES-GCM without the salt) for
	// Keys.Raw, and for AES-CBC the key cbc expands.
	// AES-CBC: the key, and the cipher (whole chains per call,
	// concurrent-safe) that cbc makes from it on the SA's first packet.
	// HMAC: the key and the hash under it; for hmac-sha-1-96 (sha1Fast)
	// the precomputed pads that hmacSHA1 makes on first use, used for
	// several packets at once.
	aesCBCKey  bool
	encKeyLen  uint8
	authKeyLen uint8
	sha1Fast   bool
	encKey     [32]byte
	authKey    [32]byte
	aesCBC     atomic.Pointer[aescbc.Cipher]
	macHash    func() hash.Hash // nil without separate integrity
	sha1       atomic.Pointer[hmacsha1.Key]
}

// newAlgs checks c and builds its algorithms. allowNoAuth admits a CBC
// cipher with no integrity, which only the RFC 3602 §4 known-answer tests
// (ESP packets without ICV) need; the public constructors never set it.
func newAlgs(c *Config, allowNoAuth bool) (*algs, error) {
	a := &algs{}
	if err := a.init(c, allowNoAuth); err != nil {
		return nil, err
	}
	return a, nil
}

// init is newAlgs into a (Keys holds its algs, not a pointer to them).
func (a *algs) init(c *Config, allowNoAuth bool) error {
	a.enc, a.auth, a.align = c.Encryption, c.Integrity, PadAlign
	lens := encKeyLens(c.Encryption)
	if lens == nil {
		return fmt.Errorf("esp: unknown encryption algorithm %q (want one of null, aes-cbc, des-ede3-cbc, aes-gcm)", c.Encryption)
	}
	if AuthKeyLen(c.Integrity) < 0 {
		return fmt.Errorf("esp: unknown integrity algorithm %q (want one of null, hmac-sha-1-96, hmac-md5-96, hmac-sha-256-128)", c.Integrity)
	}
	okLen := false
	for _, l := range lens {
		okLen = okLen || len(c.EncKey) == l
	}
	if !okLen {
		return fmt.Errorf("esp: %s key is %d bytes, want %v", c.Encryption, len(c.EncKey), lens)
	}
	if l := AuthKeyLen(c.Integrity); len(c.AuthKey) != l {
		return fmt.Errorf("esp: %s key is %d bytes, want %d", c.Integrity, len(c.AuthKey), l)
	}
	switch {
	case c.Encryption == EncAESGCM && c.Integrity != AuthNull:
		return fmt.Errorf("esp: aes-gcm is a combined-mode algorithm and takes integrity null, not %s (RFC 4303 §3.2.2)", c.Integrity)
	case c.Encryption != EncAESGCM && c.Integrity == AuthNull && !(allowNoAuth && c.Encryption != EncNull):
		return fmt.Errorf("esp: encryption %s with integrity null is not allowed (no integrity protection)", c.Encryption)
	}

	switch c.Encryption {
	case EncAESCBC:
		// The key length was checked above, the schedule waits (cbc).
		a.aesCBCKey, a.ivLen, a.cbcSize, a.align = true, AESBlockSize, AESBlockSize, AESBlockSize
		a.encKeyLen = uint8(copy(a.encKey[:], c.EncKey))
	case EncDES3CBC:
		b, err := des.NewTripleDESCipher(c.EncKey)
		if err != nil {
			return fmt.Errorf("esp: des-ede3-cbc: %w", err)
		}
		a.block, a.ivLen, a.cbcSize, a.align = b, DES3BlockSize, DES3BlockSize, DES3BlockSize
		a.encKeyLen = uint8(copy(a.encKey[:], c.EncKey)) // for Keys.Raw
	case EncAESGCM:
		k := len(c.EncKey) - GCMSaltLen
		b, err := aes.NewCipher(c.EncKey[:k])
		if err != nil {
			return fmt.Errorf("esp: aes-gcm: %w", err)
		}
		g, err := cipher.NewGCM(b)
		if err != nil {
			return fmt.Errorf("esp: aes-gcm: %w", err)
		}
		a.aead, a.ivLen, a.icvLen = g, GCMIVLen, GCMICVLen
		a.encKeyLen = uint8(copy(a.encKey[:], c.EncKey[:k])) // for Keys.Raw, with the salt
		copy(a.salt[:], c.EncKey[k:])
	}

	if h, icv := macHash(c.Integrity); h != nil {
		a.macHash, a.icvLen = h, icv
		a.authKeyLen = uint8(copy(a.authKey[:], c.AuthKey))
		a.sha1Fast = c.Integrity == AuthHMACSHA196 && hmacsha1.Accelerated()
	}
	return nil
}

// newMAC returns a new HMAC with the SA's integrity key; macHash must be set.
func (a *algs) newMAC() hash.Hash {
	return hmac.New(a.macHash, a.authKey[:a.authKeyLen])
}

// hmacSHA1 returns hmac-sha-1-96's precomputed key, nil without the fast
// path. Like cbc's schedule it is made on the first call, by the SA's first
// packet; two first packets at once may both make it, and one is kept.
func (a *algs) hmacSHA1() *hmacsha1.Key {
	if !a.sha1Fast {
		return nil
	}
	if k := a.sha1.Load(); k != nil {
		return k
	}
	// Return what was made, not a second Load: idle may clear it between.
	k := hmacsha1.New(a.authKey[:a.authKeyLen])
	if !a.sha1.CompareAndSwap(nil, k) {
		if cur := a.sha1.Load(); cur != nil {
			return cur
		}
	}
	return k
}

// cbc returns the AES-CBC cipher, nil for other algorithms. Its key
// schedule is made on the first call: the SAs of a P-CSCF that never carry
// a packet (a UE's media SAs outside calls, a stranger's temporary set)
// keep only the key.
func (a *algs) cbc() *aescbc.Cipher {
	if !a.aesCBCKey {
		return nil
	}
	if c := a.aesCBC.Load(); c != nil {
		return c
	}
	c, err := aescbc.New(a.encKey[:a.encKeyLen])
	if err != nil {
		panic("esp: aes-cbc key of a length newAlgs checked: " + err.Error())
	}
	if !a.aesCBC.CompareAndSwap(nil, c) {
		if cur := a.aesCBC.Load(); cur != nil {
			return cur
		}
	}
	return c
}

// idle drops what cbc and hmacSHA1 made; their next calls make it again.
// A packet being sealed or opened meanwhile keeps the one it took.
func (a *algs) idle() {
	a.aesCBC.Store(nil)
	a.sha1.Store(nil)
}

// macHash returns the hash under the HMAC of a and its truncated ICV
// length, or nil for AuthNull.
func macHash(a AuthAlg) (func() hash.Hash, int) {
	switch a {
	case AuthHMACSHA196:
		return sha1.New, ICV96Len
	case AuthHMACMD596:
		return md5.New, ICV96Len
	case AuthHMACSHA256128:
		return sha256.New, ICV128Len
	}
	return nil, 0
}

// padLen is the RFC 4303 §2.4 padding for an n-byte payload.
func (a *algs) padLen(n int) int {
	return (a.align - (n+TrailerLen)%a.align) % a.align
}

// overhead is the ESP overhead (header, IV, padding, trailer, ICV) of an n-byte payload.
func (a *algs) overhead(n int) int {
	return ESPHeaderLen + a.ivLen + a.padLen(n) + TrailerLen + a.icvLen
}
