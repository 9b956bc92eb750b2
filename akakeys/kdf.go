package akakeys

// The generic key derivation function of TS 33.220 Annex B.2, and the keys
// imsec derives with it from CK and IK: the AES-GCM and AES-GMAC salts of
// TS 33.203 Annex I, and (an imsec extension) separate keys for the media
// tunnel.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
)

// FC values (the first octet of the KDF input S, TS 33.220 Annex B.2.0).
const (
	// FCAESGMACSalt derives the AES-GMAC salt (TS 33.203 Annex I).
	FCAESGMACSalt byte = 0x58
	// FCAESGCMSalt derives the AES-GCM salt (TS 33.203 Annex I).
	FCAESGCMSalt byte = 0x59

	// FCMediaKeys derives the media tunnel's CK and IK (MediaKeys). It is an
	// imsec extension, not a 3GPP allocation: TS 33.220 Annex B.2.2 keeps the
	// whole FC number space under 3GPP control and sets no range aside for
	// private use, so we take 0xFE: the top of the single-octet space, far
	// from the values 3GPP specifications have taken so far (0x01 up to the
	// 0x80s) and just below 0xFF, the escape of two-octet FCs. What keeps our
	// keys apart from any 3GPP key derived from CK || IK is the whole string
	// S, whose P0 is our label, not the FC alone.
	FCMediaKeys byte = 0xFE
)

// KDF inputs of TS 33.203 Annex I.
const (
	labelAESGMACSalt = "AES_GMAC_SALT" // P0 with FCAESGMACSalt
	labelAESGCMSalt  = "AES_GCM_SALT"  // P0 with FCAESGCMSalt
)

// MediaLabel is the label imsec uses for the media tunnel's keys when a call
// needs no finer separation (see MediaKeys).
const MediaLabel = "imsec-media"

// maxKDFParam is the longest parameter the two-octet length Li can encode
// (TS 33.220 Annex B.1, assumption 2).
const maxKDFParam = 0xFFFF

// KDF is the generic key derivation function of TS 33.220 Annex B.2.0:
//
//	derived key = HMAC-SHA-256(Key, S)
//	S = FC || P0 || L0 || P1 || L1 || ... || Pn || Ln
//
// where Li is the length of Pi in octets as a two-octet big-endian number.
// An empty parameter is encoded as its length 0x00 0x00 alone. Specs that
// use fewer than 256 bits take the least significant (last) octets, or
// split the output as TS 33.402 Annex A.2 does for CK' || IK'.
//
// A parameter longer than 65535 octets cannot be encoded (TS 33.220 Annex
// B.1) and is a caller bug: KDF panics on it. Callers passing lengths they
// do not control check them first (MediaKeys does).
func KDF(key []byte, fc byte, params ...[]byte) [32]byte {
	n := 1 // the length of S
	for i, p := range params {
		if len(p) > maxKDFParam {
			panic(fmt.Sprintf("akakeys: KDF parameter P%d is %d octets, longer than 65535 (TS 33.220 Annex B.1)", i, len(p)))
		}
		n += len(p) + 2
	}
	if len(key) <= sha256.BlockSize && n <= kdfShortS {
		return kdfShort(key, fc, params)
	}
	// Longer keys and inputs, through crypto/hmac, on copies: the
	// arguments stay off the heap for the callers of the short path.
	m := hmac.New(sha256.New, bytes.Clone(key))
	m.Write(appendS(make([]byte, 0, n), fc, params))
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// appendS appends S = FC || P0 || L0 || ... || Pn || Ln to b.
func appendS(b []byte, fc byte, params [][]byte) []byte {
	b = append(b, fc)
	for _, p := range params {
		b = append(b, p...)
		b = append(b, byte(len(p)>>8), byte(len(p)))
	}
	return b
}

// kdfShortS is the longest S that kdfShort takes: the derivations here
// (one label of a few octets) fit many times over.
const kdfShortS = 192

// kdfShort is KDF for a key of at most one SHA-256 block and an S of at
// most kdfShortS octets, with the HMAC of RFC 2104 written out over
// sha256.Sum256 on the stack: H((K ⊕ opad) || H((K ⊕ ipad) || S)). It
// allocates nothing, where crypto/hmac makes two digests and their pads on
// the heap; the P-CSCF derives media keys for every challenge.
// TestKDFModel holds both paths to crypto/hmac.
func kdfShort(key []byte, fc byte, params [][]byte) [32]byte {
	var inner [sha256.BlockSize + kdfShortS]byte
	var outer [sha256.BlockSize + sha256.Size]byte
	copy(inner[:], key)
	copy(outer[:], key)
	for i := range sha256.BlockSize {
		inner[i] ^= 0x36
		outer[i] ^= 0x5c
	}
	sum := sha256.Sum256(appendS(inner[:sha256.BlockSize], fc, params))
	copy(outer[sha256.BlockSize:], sum[:])
	return sha256.Sum256(outer[:])
}

// kdfCKIK runs KDF keyed with CK || IK, the key of every derivation here.
func kdfCKIK(ck CK, ik IK, fc byte, params ...[]byte) [32]byte {
	var key [32]byte
	copy(key[:16], ck[:])
	copy(key[16:], ik[:])
	return KDF(key[:], fc, params...)
}

// GCMSalt is the 32-bit salt (RFC 4106 §4) of an aes-gcm ESP SA set up by
// IMS AKA, TS 33.203 Annex I: the 32 least significant bits of
// KDF(CK || IK, S) with FC = 0x59 and P0 = "AES_GCM_SALT". The AES-GCM key
// itself is CK.
func GCMSalt(ck CK, ik IK) [4]byte {
	out := kdfCKIK(ck, ik, FCAESGCMSalt, []byte(labelAESGCMSalt))
	return [4]byte(out[28:])
}

// GMACSalt is the 32-bit salt (RFC 4543 §3.2) of an aes-gmac ESP SA set up
// by IMS AKA, TS 33.203 Annex I: the 32 least significant bits of
// KDF(CK || IK, S) with FC = 0x58 and P0 = "AES_GMAC_SALT". The AES-GMAC key
// itself is IK.
func GMACSalt(ck CK, ik IK) [4]byte {
	out := kdfCKIK(ck, ik, FCAESGMACSalt, []byte(labelAESGMACSalt))
	return [4]byte(out[28:])
}

// ErrMediaLabel is wrapped by the errors of MediaKeys for a label it cannot
// use.
var ErrMediaLabel = errors.New("akakeys: bad media key label")

// MediaKeys derives the CK and IK of a media tunnel from the CK and IK of
// the registration, so that the ESP SAs carrying RTP never share keys with
// the SAs carrying SIP (the separate signalling and media tunnels of the
// imsec design). It is an imsec extension, not a 3GPP-defined key:
//
//	CKmedia || IKmedia = KDF(CK || IK, S)
//	S = FCMediaKeys (0xFE) || P0 = label || L0
//
// CKmedia is the 128 most significant bits of the output and IKmedia the
// 128 least significant, as CK' || IK' in TS 33.402 Annex A.2. The keys then
// feed the same TS 33.203 Annex I expansion as the signalling keys
// (EncryptionKey, IntegrityKey, GCMSalt).
//
// The label separates uses: MediaLabel for the one media tunnel of a
// registration, or a label naming a call or a stream when each needs its
// own keys. Both ends must use the same label. It must be non-empty and at
// most 65535 octets; it is hashed as given (its octets, no normalisation).
func MediaKeys(ck CK, ik IK, label string) (CK, IK, error) {
	if label == "" {
		return CK{}, IK{}, fmt.Errorf("%w: empty", ErrMediaLabel)
	}
	if len(label) > maxKDFParam {
		return CK{}, IK{}, fmt.Errorf("%w: %d octets, longer than 65535", ErrMediaLabel, len(label))
	}
	out := kdfCKIK(ck, ik, FCMediaKeys, []byte(label))
	return CK(out[:16]), IK(out[16:]), nil
}
