package hss

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

// Known answers of the key derivation, each computed outside Go with
// OpenSSL as the derivation's documentation shows:
//
//	printf %s "imsec sub gen K ue000001@ims.example" | openssl dgst -sha256 -hmac imsec-test | awk '{print substr($NF, 1, 32)}'
func TestDeriveTestKeysKnownAnswers(t *testing.T) {
	cases := []struct {
		seed, impi string // impi "" for OP
		want       string
	}{
		// openssl dgst -sha256 -hmac imsec-test, message "imsec sub gen K ue000001@ims.example"
		{"imsec-test", "ue000001@ims.example", "3160dffca43195e71b1e1e70679ab796"},
		// openssl dgst -sha256 -hmac s3cret, message "imsec sub gen K ue000042@lab.example"
		{"s3cret", "ue000042@lab.example", "8f224954b4a47b9c7054b9088744b5f6"},
		// openssl dgst -sha256 -hmac imsec-test, message "imsec sub gen OP"
		{"imsec-test", "", "e011100aa0d6e99fcf65492e619ab7f9"},
	}
	for _, c := range cases {
		var got []byte
		if c.impi == "" {
			op := DeriveTestOP(c.seed)
			got = op[:]
		} else {
			k := DeriveTestK(c.seed, c.impi)
			got = k[:]
		}
		if hex.EncodeToString(got) != c.want {
			t.Errorf("seed %q, IMPI %q: %x, want %s", c.seed, c.impi, got, c.want)
		}
		// Another seed or IMPI gives another key.
		if c.impi != "" {
			if k := DeriveTestK(c.seed+"x", c.impi); hex.EncodeToString(k[:]) == c.want {
				t.Errorf("seed %q: the key does not depend on the seed", c.seed)
			}
			if k := DeriveTestK(c.seed, "x"+c.impi); hex.EncodeToString(k[:]) == c.want {
				t.Errorf("IMPI %q: the key does not depend on the IMPI", c.impi)
			}
		}
	}
}

// A range written as CSV reads back as the same subscribers, which any
// other computation of the range (a load generator's) gives too.
func TestTestRangeCSVRoundTrip(t *testing.T) {
	k := k1
	opc := opc2
	for _, r := range []TestRange{
		{Prefix: "ue", Domain: "ims.example", Start: 1, Count: 30},
		{Prefix: "cpe", Domain: "lab.example", Start: 999_998, Count: 3, K: &k, OPc: &opc, Seed: "other"},
	} {
		var b bytes.Buffer
		if err := r.WriteCSV(&b); err != nil {
			t.Fatal(err)
		}
		rows, err := ReadCSV(&b)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != r.Count {
			t.Fatalf("%d rows, want %d", len(rows), r.Count)
		}
		for i, row := range rows {
			want := r.Subscriber(r.Start + i)
			if !equalSub(row.Sub, want) {
				t.Fatalf("row %d: %v, want %v", i, row.Sub, want)
			}
		}
	}
	r := TestRange{Prefix: "ue", Domain: "ims.example", Count: 1}
	s := r.Subscriber(1)
	if s.IMPI != "ue000001@ims.example" || s.IMPUs[0] != "sip:ue000001@ims.example" || s.K != DeriveTestK(DefaultTestSeed, s.IMPI) ||
		s.OP == nil || *s.OP != DeriveTestOP(DefaultTestSeed) || s.AMF != DefaultAMF {
		t.Fatalf("subscriber 1 of the default range: %v", s)
	}
	if got := r.IMPI(1234567); got != "ue1234567@ims.example" {
		t.Fatalf("IMPI of a 7-digit number: %q", got)
	}
}

func TestTestRangeCheck(t *testing.T) {
	op, opc := akakeys.OP{}, akakeys.OPc{}
	for _, c := range []struct {
		r    TestRange
		want string
	}{
		{TestRange{Prefix: "ue", Domain: "x", Count: 0}, "want 1 to"},
		{TestRange{Prefix: "ue", Domain: "x", Count: MaxTestRange + 1}, "want 1 to"},
		{TestRange{Prefix: "ue", Domain: "x", Count: 1, Start: -1}, "starting at -1"},
		{TestRange{Prefix: "ue", Domain: "x", Count: 1, OP: &op, OPc: &opc}, "both OP and OPc"},
		{TestRange{Prefix: "u e", Domain: "x", Count: 1}, "space or control"},
		{TestRange{Prefix: "ue", Domain: strings.Repeat("d", MaxIMPILen), Count: 1}, "bytes long"},
	} {
		if err := c.r.Check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.r, err, c.want)
		}
	}
}
