package hss

import (
	"context"
	"encoding/hex"
	"errors"
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

// forEachStore runs a Store contract test against every implementation.
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

func TestStoreAddGetListDelete(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		a, b := alice(), bob()
		b.Resyncs = 2
		b.LastResync = time.UnixMilli(1_700_000_000_123)
		for _, sub := range []Subscriber{b, a} {
			if err := s.Add(ctx, sub); err != nil {
				t.Fatalf("Add %s: %v", sub.IMPI, err)
			}
		}
		got, err := s.Get(ctx, a.IMPI)
		if err != nil {
			t.Fatal(err)
		}
		if !equalSub(got, a) {
			t.Fatalf("Get = %+v\nwant %+v", got, a)
		}
		if got.OP == nil || *got.OP != op1 {
			t.Fatalf("OP not kept: %v", got.OP)
		}
		got, err = s.Get(ctx, b.IMPI)
		if err != nil {
			t.Fatal(err)
		}
		if !equalSub(got, b) || got.OP != nil {
			t.Fatalf("Get = %+v\nwant %+v", got, b)
		}

		list, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || !equalSub(list[0], a) || !equalSub(list[1], b) {
			t.Fatalf("List = %v", list)
		}

		for _, u := range a.IMPUs {
			impi, err := s.LookupIMPU(ctx, u)
			if err != nil || impi != a.IMPI {
				t.Fatalf("LookupIMPU(%s) = %q, %v", u, impi, err)
			}
		}

		// The returned value is a copy: changing it changes nothing stored.
		got.IMPUs[0] = "sip:mallory@ims.example"
		if again, _ := s.Get(ctx, b.IMPI); again.IMPUs[0] != b.IMPUs[0] {
			t.Fatal("Get returned shared IMPUs")
		}

		if err := s.Delete(ctx, a.IMPI); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, a.IMPI); !errors.Is(err, ErrUnknownSubscriber) {
			t.Fatalf("Get after Delete: %v", err)
		}
		if _, err := s.LookupIMPU(ctx, a.IMPUs[0]); !errors.Is(err, ErrUnknownIMPU) {
			t.Fatalf("IMPU of deleted subscriber still resolves: %v", err)
		}
		// Its IMPUs are free again.
		c := alice()
		c.IMPI = "carol@ims.example"
		if err := s.Add(ctx, c); err != nil {
			t.Fatalf("re-using freed IMPUs: %v", err)
		}
		list, _ = s.List(ctx)
		if len(list) != 2 || list[0].IMPI != "bob@ims.example" || list[1].IMPI != "carol@ims.example" {
			t.Fatalf("List = %v", list)
		}
	})
}

func equalSub(a, b Subscriber) bool {
	if !a.LastResync.Equal(b.LastResync) {
		return false
	}
	a.LastResync, b.LastResync = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

func TestStoreBadInput(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.Add(ctx, alice()); err != nil {
			t.Fatal(err)
		}
		mod := func(f func(*Subscriber)) Subscriber {
			b := bob()
			f(&b)
			return b
		}
		cases := []struct {
			name string
			sub  Subscriber
			err  error
			msg  string
		}{
			{"empty IMPI", mod(func(s *Subscriber) { s.IMPI = "" }), ErrInvalidSubscriber, "IMPI is empty"},
			{"space in IMPI", mod(func(s *Subscriber) { s.IMPI = "bob @x" }), ErrInvalidSubscriber, "space or control"},
			{"control in IMPI", mod(func(s *Subscriber) { s.IMPI = "bob\n@x" }), ErrInvalidSubscriber, "space or control"},
			{"bad UTF-8", mod(func(s *Subscriber) { s.IMPI = "bob\xff" }), ErrInvalidSubscriber, "UTF-8"},
			{"long IMPI", mod(func(s *Subscriber) { s.IMPI = strings.Repeat("b", MaxIMPILen+1) }), ErrInvalidSubscriber, "at most 256"},
			{"no IMPU", mod(func(s *Subscriber) { s.IMPUs = nil }), ErrInvalidSubscriber, "no IMPU"},
			{"empty IMPU", mod(func(s *Subscriber) { s.IMPUs = []string{""} }), ErrInvalidSubscriber, "IMPU is empty"},
			{"IMPU scheme", mod(func(s *Subscriber) { s.IMPUs = []string{"http://bob"} }), ErrInvalidSubscriber, "not a sip:, sips: or tel: URI"},
			{"IMPU no body", mod(func(s *Subscriber) { s.IMPUs = []string{"sip:"} }), ErrInvalidSubscriber, "nothing after the scheme"},
			{"IMPU twice", mod(func(s *Subscriber) { s.IMPUs = []string{"sip:b@x", "sip:b@x"} }), ErrInvalidSubscriber, "listed twice"},
			{"OP/OPc mismatch", mod(func(s *Subscriber) { op := op1; s.OP = &op }), ErrInvalidSubscriber, "OPc does not match OP"},
			{"duplicate IMPI", mod(func(s *Subscriber) { s.IMPI = "alice@ims.example" }), ErrDuplicateIMPI, `"alice@ims.example"`},
			{"IMPU of another", mod(func(s *Subscriber) { s.IMPUs = []string{"sip:bob@ims.example", "tel:+15550100"} }),
				ErrIMPUTaken, `"tel:+15550100" belongs to "alice@ims.example"`},
		}
		for _, c := range cases {
			err := s.Add(ctx, c.sub)
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("%s: Add = %v, want %v containing %q", c.name, err, c.err, c.msg)
			}
			if err != nil {
				assertNoKeys(t, c.name, err.Error())
			}
		}
		// Nothing of the refused subscribers was stored.
		list, err := s.List(ctx)
		if err != nil || len(list) != 1 {
			t.Fatalf("List = %v, %v; want alice only", list, err)
		}
		if _, err := s.LookupIMPU(ctx, "sip:bob@ims.example"); !errors.Is(err, ErrUnknownIMPU) {
			t.Fatalf("IMPU of a refused Add was stored: %v", err)
		}

		if _, err := s.Get(ctx, "nobody@x"); !errors.Is(err, ErrUnknownSubscriber) || !strings.Contains(err.Error(), `"nobody@x"`) {
			t.Errorf("Get unknown: %v", err)
		}
		if err := s.Delete(ctx, "nobody@x"); !errors.Is(err, ErrUnknownSubscriber) {
			t.Errorf("Delete unknown: %v", err)
		}
		called := false
		_, err = s.UpdateSQN(ctx, "nobody@x", func(Subscriber) (SQNUpdate, error) { called = true; return SQNUpdate{}, nil })
		if !errors.Is(err, ErrUnknownSubscriber) || called {
			t.Errorf("UpdateSQN unknown: %v (fn called %v)", err, called)
		}
		if _, err := s.LookupIMPU(ctx, "sip:nobody@x"); !errors.Is(err, ErrUnknownIMPU) {
			t.Errorf("LookupIMPU unknown: %v", err)
		}
	})
}

func TestStoreUpdateSQN(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.Add(ctx, bob()); err != nil {
			t.Fatal(err)
		}
		// A failing fn changes nothing and its error comes back unchanged.
		boom := errors.New("boom")
		if _, err := s.UpdateSQN(ctx, "bob@ims.example", func(Subscriber) (SQNUpdate, error) {
			return SQNUpdate{SQN: akakeys.SQNFromUint64(99), Resync: true, At: time.Now()}, boom
		}); err != boom {
			t.Fatalf("UpdateSQN error %v, want boom", err)
		}
		if got, _ := s.Get(ctx, "bob@ims.example"); got.SQN != bob().SQN || got.Resyncs != 0 {
			t.Fatalf("failed update was stored: %v", got)
		}
		at := time.UnixMilli(1_800_000_000_000)
		var seen Subscriber
		got, err := s.UpdateSQN(ctx, "bob@ims.example", func(cur Subscriber) (SQNUpdate, error) {
			seen = cur
			return SQNUpdate{SQN: akakeys.SQNFromUint64(0x400), Resync: true, At: at}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if seen.SQN != bob().SQN || seen.K != k2 || seen.OPc != opc2 {
			t.Fatalf("fn saw %v", seen)
		}
		if got.SQN.Uint64() != 0x400 || got.Resyncs != 1 || !got.LastResync.Equal(at) {
			t.Fatalf("UpdateSQN returned %v", got)
		}
		// A plain update keeps the resync record.
		if _, err := s.UpdateSQN(ctx, "bob@ims.example", func(cur Subscriber) (SQNUpdate, error) {
			return SQNUpdate{SQN: akakeys.SQNFromUint64(0x421)}, nil
		}); err != nil {
			t.Fatal(err)
		}
		got, _ = s.Get(ctx, "bob@ims.example")
		if got.SQN.Uint64() != 0x421 || got.Resyncs != 1 || !got.LastResync.Equal(at) || len(got.IMPUs) != 1 {
			t.Fatalf("after updates: %v", got)
		}
		// A cancelled context stores nothing.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.UpdateSQN(cctx, "bob@ims.example", func(cur Subscriber) (SQNUpdate, error) {
			return SQNUpdate{SQN: akakeys.SQNFromUint64(0x999)}, nil
		}); err == nil {
			t.Fatal("UpdateSQN with cancelled context succeeded")
		}
		if got, _ := s.Get(ctx, "bob@ims.example"); got.SQN.Uint64() != 0x421 {
			t.Fatalf("cancelled update stored: %v", got)
		}
	})
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
