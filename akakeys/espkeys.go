package akakeys

// ESP keys from the AKA session keys, TS 33.203 §6.1, §7 and Annex I (key
// expansion for IPsec ESP).

import (
	"errors"
	"fmt"
	"strings"
)

// Algorithm names of the "alg" and "ealg" parameters of the Security-Client,
// Security-Server and Security-Verify headers, written as TS 33.203 §7 and
// RFC 3329 §2.2 write them.
const (
	AlgHMACMD596   = "hmac-md5-96"   // integrity, key = IK (16 octets)
	AlgHMACSHA196  = "hmac-sha-1-96" // integrity, key = IK || 32 zero bits (20 octets)
	EAlgAESCBC     = "aes-cbc"       // encryption, key = CK (16 octets)
	EAlgDESEDE3CBC = "des-ede3-cbc"  // encryption, key = CK1 || CK2 || CK1 (24 octets); interop only
	EAlgNull       = "null"          // no encryption, no key
)

// Fixed-size ESP keys, one type per algorithm.
type (
	HMACMD596Key  [16]byte
	HMACSHA196Key [20]byte
	AESCBCKey     [16]byte
	DESEDE3CBCKey [24]byte
)

// ErrUnknownAlgorithm is wrapped by the errors of IntegrityKey and
// EncryptionKey for a name they do not know.
var ErrUnknownAlgorithm = errors.New("akakeys: unknown ESP algorithm")

// IntegrityKeyMD5 is the hmac-md5-96 key: IK itself (TS 33.203 Annex I).
func IntegrityKeyMD5(ik IK) HMACMD596Key { return HMACMD596Key(ik) }

// IntegrityKeySHA1 is the hmac-sha-1-96 key: IK extended with 32 zero bits
// to the 160 bits HMAC-SHA-1-96 wants (TS 33.203 Annex I).
func IntegrityKeySHA1(ik IK) HMACSHA196Key {
	var k HMACSHA196Key
	copy(k[:], ik[:])
	return k
}

// EncryptionKeyAES is the aes-cbc key: CK itself (TS 33.203 Annex I).
func EncryptionKeyAES(ck CK) AESCBCKey { return AESCBCKey(ck) }

// EncryptionKeyDES3 is the des-ede3-cbc key of TS 33.203 Annex I: with
// CK = CK1 || CK2 (64 bits each), the key is CK1 || CK2 || CK1, i.e. DES
// keys k1 = k3 = CK1 and k2 = CK2. The octets are used as they are: DES
// ignores the low (parity) bit of every key octet, so a peer that adjusts
// the parity bits gets the same cipher. 3DES is for interoperability only
// and must never be preferred over aes-cbc.
func EncryptionKeyDES3(ck CK) DESEDE3CBCKey {
	var k DESEDE3CBCKey
	copy(k[0:16], ck[:])
	copy(k[16:24], ck[0:8])
	return k
}

// IntegrityKey maps a negotiated alg name (case-insensitive) to its ESP
// integrity key derived from IK.
func IntegrityKey(alg string, ik IK) ([]byte, error) {
	switch {
	case strings.EqualFold(alg, AlgHMACMD596):
		k := IntegrityKeyMD5(ik)
		return k[:], nil
	case strings.EqualFold(alg, AlgHMACSHA196):
		k := IntegrityKeySHA1(ik)
		return k[:], nil
	}
	return nil, fmt.Errorf("%w: integrity algorithm %q (want %s or %s)", ErrUnknownAlgorithm, alg, AlgHMACSHA196, AlgHMACMD596)
}

// EncryptionKey maps a negotiated ealg name (case-insensitive) to its ESP
// encryption key derived from CK. "null" gives an empty, non-nil key.
func EncryptionKey(ealg string, ck CK) ([]byte, error) {
	switch {
	case strings.EqualFold(ealg, EAlgAESCBC):
		k := EncryptionKeyAES(ck)
		return k[:], nil
	case strings.EqualFold(ealg, EAlgDESEDE3CBC):
		k := EncryptionKeyDES3(ck)
		return k[:], nil
	case strings.EqualFold(ealg, EAlgNull):
		return []byte{}, nil
	}
	return nil, fmt.Errorf("%w: encryption algorithm %q (want %s, %s or %s)", ErrUnknownAlgorithm, ealg, EAlgAESCBC, EAlgNull, EAlgDESEDE3CBC)
}
