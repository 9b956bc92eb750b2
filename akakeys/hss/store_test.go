package hss

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
)

// Keys of TS 35.208 §4.3 (Milenage conformance test data).
var (
	// Test Set 1.
	k1   = mustHex[akakeys.K]("465b5ce8b199b49faa5f0a2ee238a6bc")
	op1  = mustHex[akakeys.OP]("cdc202d5123e20f62b6d676ac72cb318")
	opc1 = mustHex[akakeys.OPc]("cd63cb71954a9f4e48a5994e37a02baf")
	// Test Set 2.
	k2   = mustHex[akakeys.K]("0396eb317b6d1c36f19c1c84cd6ffd16")
	opc2 = mustHex[akakeys.OPc]("53c15671c60a4b731c55b4a441c0bde2")
)

func mustHex[T ~[16]byte](s string) T {
	var t T
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(t) {
		panic("bad test hex " + s)
	}
	copy(t[:], b)
	return t
}

// alice is provisioned with OP, bob with OPc.
func alice() Subscriber {
	s := Subscriber{
		IMPI:  "alice@ims.example",
		IMPUs: []string{"sip:alice@ims.example", "tel:+15550100"},
		K:     k1,
		AMF:   akakeys.AMF{0x80, 0x00},
	}
	s.SetOP(op1)
	return s
}

func bob() Subscriber {
	return Subscriber{
		IMPI:  "bob@ims.example",
		IMPUs: []string{"sip:bob@ims.example"},
		K:     k2,
		OPc:   opc2,
		AMF:   akakeys.AMF{0x80, 0x00},
		SQN:   akakeys.SQNFromUint64(0x0000000001e0),
	}
}

func openTemp(t testing.TB) (*SQLiteStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hss.db")
	s, err := OpenSQLite(path, SQLiteOptions{})
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// forEachStore runs a test against every Store of this package. The Store
// contract itself is the storetest suite (conformance_test.go).
func forEachStore(t *testing.T, f func(t *testing.T, s Store)) {
	t.Run("mem", func(t *testing.T) { f(t, NewMemStore()) })
	t.Run("sqlite", func(t *testing.T) {
		s, _ := openTemp(t)
		f(t, s)
	})
}

func TestSetOPDerivesOPc(t *testing.T) {
	a := alice()
	if a.OPc != opc1 { // TS 35.208 Test Set 1: OPc from K and OP
		t.Fatalf("OPc %x, want %x", a.OPc, opc1)
	}
}

func equalSub(a, b Subscriber) bool {
	if !a.LastResync.Equal(b.LastResync) {
		return false
	}
	a.LastResync, b.LastResync = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// assertNoKeys fails if text contains any test key in hex, in either case.
func assertNoKeys(t *testing.T, what, text string) {
	t.Helper()
	low := strings.ToLower(text)
	for _, key := range [][]byte{k1[:], op1[:], opc1[:], k2[:], opc2[:]} {
		h := hex.EncodeToString(key)
		forms := []string{
			h[:8],                                   // hex, either case
			strings.Trim(fmt.Sprint(key[:4]), "[]"), // decimal, as fmt prints bytes: "70 91 92 232"
			fmt.Sprintf("%#x, %#x, %#x", key[0], key[1], key[2]), // Go syntax, as %#v prints: "0x46, 0x5b, 0x5c"
			fmt.Sprintf("%d,%d,%d", key[0], key[1], key[2]),      // JSON array: "70,91,92"
		}
		for _, f := range forms {
			if strings.Contains(low, strings.ToLower(f)) {
				t.Errorf("%s shows a key (as %q): %s", what, f, text)
			}
		}
	}
}
