package akakeys

import (
	"bytes"
	"crypto/des"
	"encoding/hex"
	"errors"
	"math/bits"
	"strings"
	"testing"
)

func TestESPKeys(t *testing.T) {
	// CK and IK of TS 35.208 §4.3 test set 1 (f3, f4).
	ck := unhex[CK](t, "b40ba9a3c58b2a05bbf0d987b21bf8cb")
	ik := unhex[IK](t, "f769bcd751044604127672711c6d3441")
	for _, tc := range []struct {
		name string
		got  func() ([]byte, error)
		want string
	}{
		// TS 33.203 Annex I: hmac-md5-96 takes IK as it is.
		{AlgHMACMD596, func() ([]byte, error) { return IntegrityKey(AlgHMACMD596, ik) }, "f769bcd751044604127672711c6d3441"},
		// hmac-sha-1-96 takes IK || 32 zero bits.
		{AlgHMACSHA196, func() ([]byte, error) { return IntegrityKey(AlgHMACSHA196, ik) }, "f769bcd751044604127672711c6d344100000000"},
		{"HMAC-SHA-1-96", func() ([]byte, error) { return IntegrityKey("HMAC-SHA-1-96", ik) }, "f769bcd751044604127672711c6d344100000000"},
		// aes-cbc takes CK as it is.
		{EAlgAESCBC, func() ([]byte, error) { return EncryptionKey(EAlgAESCBC, ck) }, "b40ba9a3c58b2a05bbf0d987b21bf8cb"},
		// des-ede3-cbc takes CK1 || CK2 || CK1.
		{EAlgDESEDE3CBC, func() ([]byte, error) { return EncryptionKey(EAlgDESEDE3CBC, ck) }, "b40ba9a3c58b2a05bbf0d987b21bf8cbb40ba9a3c58b2a05"},
		{EAlgNull, func() ([]byte, error) { return EncryptionKey(EAlgNull, ck) }, ""},
	} {
		got, err := tc.got()
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if hex.EncodeToString(got) != tc.want {
			t.Errorf("%s: key %x, want %s", tc.name, got, tc.want)
		}
	}
	if k, _ := EncryptionKey(EAlgNull, ck); k == nil {
		t.Error("null key is nil, want empty non-nil")
	}
	// The typed functions agree with the by-name ones.
	if k := IntegrityKeyMD5(ik); !bytes.Equal(k[:], ik[:]) {
		t.Error("IntegrityKeyMD5")
	}
	if k := IntegrityKeySHA1(ik); !bytes.Equal(k[:16], ik[:]) || !bytes.Equal(k[16:], []byte{0, 0, 0, 0}) {
		t.Error("IntegrityKeySHA1")
	}
	if k := EncryptionKeyAES(ck); !bytes.Equal(k[:], ck[:]) {
		t.Error("EncryptionKeyAES")
	}

	for _, name := range []string{"", "hmac-sha-256-128", "aes-gcm", "hmac-sha1-96", "des-cbc", "aes-cbc "} {
		_, err1 := IntegrityKey(name, ik)
		_, err2 := EncryptionKey(name, ck)
		for _, err := range []error{err1, err2} {
			if !errors.Is(err, ErrUnknownAlgorithm) || !strings.Contains(err.Error(), `"`+name+`"`) {
				t.Errorf("%q: err = %v, want ErrUnknownAlgorithm naming it", name, err)
			}
		}
	}
	if _, err := IntegrityKey(EAlgAESCBC, ik); err == nil {
		t.Error("an encryption name accepted as an integrity algorithm")
	}
	if _, err := EncryptionKey(AlgHMACMD596, ck); err == nil {
		t.Error("an integrity name accepted as an encryption algorithm")
	}
}

// Each bit of CK lands in the 3DES key at its place in CK1 || CK2 || CK1:
// bits of CK1 twice, bits of CK2 once.
func TestDES3KeyFlipBit(t *testing.T) {
	base := EncryptionKeyDES3(CK{})
	for bit := range 128 {
		var ck CK
		ck[bit/8] ^= 1 << (bit % 8)
		k := EncryptionKeyDES3(ck)
		n := 0
		for i := range k {
			n += bits.OnesCount8(k[i] ^ base[i])
		}
		want := 1
		if bit < 64 {
			want = 2
		}
		if n != want || k[bit/8]&(1<<(bit%8)) == 0 {
			t.Fatalf("CK bit %d: %d key bits changed, want %d", bit, n, want)
		}
	}
}

// DES ignores the parity bit of each key octet, so a peer that fixes odd
// parity on CK1 || CK2 || CK1 gets the same cipher as we do.
func TestDES3ParityIgnored(t *testing.T) {
	ck := unhex[CK](t, "b40ba9a3c58b2a05bbf0d987b21bf8cb")
	k := EncryptionKeyDES3(ck)
	odd := k
	for i := range odd {
		odd[i] = odd[i]&0xfe | byte(1^bits.OnesCount8(odd[i]&0xfe)&1)
	}
	if odd == k {
		t.Fatal("test vector already has odd parity; pick another")
	}
	a, err := des.NewTripleDESCipher(k[:])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := des.NewTripleDESCipher(odd[:])
	in := []byte("imsec3de")
	var x, y [8]byte
	a.Encrypt(x[:], in)
	b.Encrypt(y[:], in)
	if x != y {
		t.Fatalf("parity-adjusted key encrypts differently: %x vs %x", x, y)
	}
	// k1 = k3: EDE with CK1 || CK2 || CK1 is two-key 3DES.
	c, _ := des.NewTripleDESCipher(append(append(ck[:8:8], ck[8:]...), ck[8:]...))
	c.Encrypt(y[:], in)
	if x == y {
		t.Fatal("CK1 || CK2 || CK2 gives the same cipher; the key layout is not being tested")
	}
}
