// Package storetest is the conformance suite of [hss.Store]: the contract
// written in the Store doc comment (copies, exact identities, sentinel
// errors, nothing stored by a refused Add, one atomic UpdateSQN), as tests
// that every implementation runs: MemStore and SQLiteStore in package hss,
// the PostgreSQL store in package pgstore.
//
// Subscribers use the keys of TS 35.208 §4.3 test sets 1 and 2, and every
// error is checked for a trace of them.
package storetest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

// Keys of TS 35.208 §4.3 (Milenage conformance test data).
var (
	// Test Set 1.
	k1  = mustHex[akakeys.K]("465b5ce8b199b49faa5f0a2ee238a6bc")
	op1 = mustHex[akakeys.OP]("cdc202d5123e20f62b6d676ac72cb318")
	// opc1 is OPc of test set 1, derived from k1 and op1.
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

// Alice is a subscriber provisioned with OP (TS 35.208 test set 1), with two
// IMPUs and the zero SQN.
func Alice() hss.Subscriber {
	s := hss.Subscriber{
		IMPI:  "alice@ims.example",
		IMPUs: []string{"sip:alice@ims.example", "tel:+15550100"},
		K:     k1,
		AMF:   akakeys.AMF{0x80, 0x00},
	}
	s.SetOP(op1)
	return s
}

// Bob is a subscriber provisioned with OPc (TS 35.208 test set 2), with one
// IMPU and SQN 0x1e0.
func Bob() hss.Subscriber {
	return hss.Subscriber{
		IMPI:  "bob@ims.example",
		IMPUs: []string{"sip:bob@ims.example"},
		K:     k2,
		OPc:   opc2,
		AMF:   akakeys.AMF{0x80, 0x00},
		SQN:   akakeys.SQNFromUint64(0x0000000001e0),
	}
}

// AssertNoKeys fails t if text shows any key of Alice or Bob: in hex (either
// case, even its first 4 bytes), or in the decimal and Go-syntax forms fmt
// and encoding/json give byte slices.
func AssertNoKeys(t testing.TB, what, text string) {
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

// Equal reports whether two subscribers are the same, with times compared
// by instant (time.Time.Equal) rather than by location.
func Equal(a, b hss.Subscriber) bool {
	if !a.LastResync.Equal(b.LastResync) {
		return false
	}
	a.LastResync, b.LastResync = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// Run runs the contract of one Store handle. newStore returns a new, empty
// store for each subtest; it closes it in t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) hss.Store) {
	tests := []struct {
		name string
		f    func(*testing.T, hss.Store)
	}{
		{"AddGetListDelete", testAddGetListDelete},
		{"BadInput", testBadInput},
		{"UpdateSQN", testUpdateSQN},
		{"ExactIdentities", testExactIdentities},
		{"Limits", testLimits},
		{"ConcurrentUpdateSQN", func(t *testing.T, s hss.Store) { testConcurrentUpdateSQN(t, []hss.Store{s}) }},
		{"ConcurrentAdd", func(t *testing.T, s hss.Store) { testConcurrentAdd(t, []hss.Store{s}) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newStore(t)) })
	}
}

// RunShared runs the contract between several handles on one backing store
// (two pools on one database, two opens of one file): what one writes the
// others see, and UpdateSQN is atomic across them. open returns n handles
// on a new, empty store; it closes them in t.Cleanup.
func RunShared(t *testing.T, open func(t *testing.T, n int) []hss.Store) {
	t.Run("SeeEachOther", func(t *testing.T) { testSeeEachOther(t, open(t, 2)) })
	t.Run("ConcurrentUpdateSQN", func(t *testing.T) { testConcurrentUpdateSQN(t, open(t, 3)) })
	t.Run("ConcurrentAdd", func(t *testing.T) { testConcurrentAdd(t, open(t, 3)) })
}

func testAddGetListDelete(t *testing.T, s hss.Store) {
	ctx := context.Background()
	a, b := Alice(), Bob()
	b.Resyncs = 2
	b.LastResync = time.UnixMilli(1_700_000_000_123)
	for _, sub := range []hss.Subscriber{b, a} {
		if err := s.Add(ctx, sub); err != nil {
			t.Fatalf("Add %s: %v", sub.IMPI, err)
		}
	}
	got, err := s.Get(ctx, a.IMPI)
	if err != nil {
		t.Fatal(err)
	}
	if !Equal(got, a) {
		t.Fatalf("Get = %+v\nwant %+v", got, a)
	}
	if got.OP == nil || *got.OP != op1 {
		t.Fatalf("OP not kept: %v", got.OP)
	}
	got, err = s.Get(ctx, b.IMPI)
	if err != nil {
		t.Fatal(err)
	}
	if !Equal(got, b) || got.OP != nil {
		t.Fatalf("Get = %+v\nwant %+v", got, b)
	}

	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || !Equal(list[0], a) || !Equal(list[1], b) {
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
	if _, err := s.Get(ctx, a.IMPI); !errors.Is(err, hss.ErrUnknownSubscriber) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if _, err := s.LookupIMPU(ctx, a.IMPUs[0]); !errors.Is(err, hss.ErrUnknownIMPU) {
		t.Fatalf("IMPU of deleted subscriber still resolves: %v", err)
	}
	// Its IMPUs are free again.
	c := Alice()
	c.IMPI = "carol@ims.example"
	if err := s.Add(ctx, c); err != nil {
		t.Fatalf("re-using freed IMPUs: %v", err)
	}
	list, _ = s.List(ctx)
	if len(list) != 2 || list[0].IMPI != "bob@ims.example" || list[1].IMPI != "carol@ims.example" {
		t.Fatalf("List = %v", list)
	}
}

func testBadInput(t *testing.T, s hss.Store) {
	ctx := context.Background()
	if err := s.Add(ctx, Alice()); err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*hss.Subscriber)) hss.Subscriber {
		b := Bob()
		f(&b)
		return b
	}
	cases := []struct {
		name string
		sub  hss.Subscriber
		err  error
		msg  string
	}{
		{"empty IMPI", mod(func(s *hss.Subscriber) { s.IMPI = "" }), hss.ErrInvalidSubscriber, "IMPI is empty"},
		{"space in IMPI", mod(func(s *hss.Subscriber) { s.IMPI = "bob @x" }), hss.ErrInvalidSubscriber, "space or control"},
		{"control in IMPI", mod(func(s *hss.Subscriber) { s.IMPI = "bob\n@x" }), hss.ErrInvalidSubscriber, "space or control"},
		{"NUL in IMPI", mod(func(s *hss.Subscriber) { s.IMPI = "bob\x00@x" }), hss.ErrInvalidSubscriber, "space or control"},
		{"bad UTF-8", mod(func(s *hss.Subscriber) { s.IMPI = "bob\xff" }), hss.ErrInvalidSubscriber, "UTF-8"},
		{"long IMPI", mod(func(s *hss.Subscriber) { s.IMPI = strings.Repeat("b", hss.MaxIMPILen+1) }), hss.ErrInvalidSubscriber, "at most 256"},
		{"no IMPU", mod(func(s *hss.Subscriber) { s.IMPUs = nil }), hss.ErrInvalidSubscriber, "no IMPU"},
		{"empty IMPU", mod(func(s *hss.Subscriber) { s.IMPUs = []string{""} }), hss.ErrInvalidSubscriber, "IMPU is empty"},
		{"IMPU scheme", mod(func(s *hss.Subscriber) { s.IMPUs = []string{"http://bob"} }), hss.ErrInvalidSubscriber, "not a sip:, sips: or tel: URI"},
		{"IMPU no body", mod(func(s *hss.Subscriber) { s.IMPUs = []string{"sip:"} }), hss.ErrInvalidSubscriber, "nothing after the scheme"},
		{"IMPU twice", mod(func(s *hss.Subscriber) { s.IMPUs = []string{"sip:b@x", "sip:b@x"} }), hss.ErrInvalidSubscriber, "listed twice"},
		{"OP/OPc mismatch", mod(func(s *hss.Subscriber) { op := op1; s.OP = &op }), hss.ErrInvalidSubscriber, "OPc does not match OP"},
		{"duplicate IMPI", mod(func(s *hss.Subscriber) { s.IMPI = "alice@ims.example" }), hss.ErrDuplicateIMPI, `"alice@ims.example"`},
		// Both at once: the IMPI is reported.
		{"duplicate IMPI and IMPU", mod(func(s *hss.Subscriber) { s.IMPI = "alice@ims.example"; s.IMPUs = []string{"tel:+15550100"} }),
			hss.ErrDuplicateIMPI, `"alice@ims.example"`},
		{"IMPU of another", mod(func(s *hss.Subscriber) { s.IMPUs = []string{"sip:bob@ims.example", "tel:+15550100"} }),
			hss.ErrIMPUTaken, `"tel:+15550100" belongs to "alice@ims.example"`},
	}
	for _, c := range cases {
		err := s.Add(ctx, c.sub)
		if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: Add = %v, want %v containing %q", c.name, err, c.err, c.msg)
		}
		if err != nil {
			AssertNoKeys(t, c.name, err.Error())
		}
	}
	// Nothing of the refused subscribers was stored.
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v; want alice only", list, err)
	}
	if _, err := s.LookupIMPU(ctx, "sip:bob@ims.example"); !errors.Is(err, hss.ErrUnknownIMPU) {
		t.Fatalf("IMPU of a refused Add was stored: %v", err)
	}

	if _, err := s.Get(ctx, "nobody@x"); !errors.Is(err, hss.ErrUnknownSubscriber) || !strings.Contains(err.Error(), `"nobody@x"`) {
		t.Errorf("Get unknown: %v", err)
	}
	if err := s.Delete(ctx, "nobody@x"); !errors.Is(err, hss.ErrUnknownSubscriber) {
		t.Errorf("Delete unknown: %v", err)
	}
	called := false
	_, err = s.UpdateSQN(ctx, "nobody@x", func(hss.Subscriber) (hss.SQNUpdate, error) { called = true; return hss.SQNUpdate{}, nil })
	if !errors.Is(err, hss.ErrUnknownSubscriber) || called {
		t.Errorf("UpdateSQN unknown: %v (fn called %v)", err, called)
	}
	if _, err := s.LookupIMPU(ctx, "sip:nobody@x"); !errors.Is(err, hss.ErrUnknownIMPU) {
		t.Errorf("LookupIMPU unknown: %v", err)
	}
	// What no identity can be is simply unknown, not a store error.
	for _, id := range []string{"", "bob\x00@x", "bob\xff@x", strings.Repeat("x", 5000)} {
		if _, err := s.Get(ctx, id); !errors.Is(err, hss.ErrUnknownSubscriber) {
			t.Errorf("Get(%q): %v", id, err)
		}
		if _, err := s.LookupIMPU(ctx, "sip:"+id); !errors.Is(err, hss.ErrUnknownIMPU) {
			t.Errorf("LookupIMPU(%q): %v", "sip:"+id, err)
		}
	}
}

func testUpdateSQN(t *testing.T, s hss.Store) {
	ctx := context.Background()
	if err := s.Add(ctx, Bob()); err != nil {
		t.Fatal(err)
	}
	// A failing fn changes nothing and its error comes back unchanged.
	boom := errors.New("boom")
	if _, err := s.UpdateSQN(ctx, "bob@ims.example", func(hss.Subscriber) (hss.SQNUpdate, error) {
		return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(99), Resync: true, At: time.Now()}, boom
	}); err != boom {
		t.Fatalf("UpdateSQN error %v, want boom", err)
	}
	if got, _ := s.Get(ctx, "bob@ims.example"); got.SQN != Bob().SQN || got.Resyncs != 0 {
		t.Fatalf("failed update was stored: %v", got)
	}
	at := time.UnixMilli(1_800_000_000_000)
	var seen hss.Subscriber
	got, err := s.UpdateSQN(ctx, "bob@ims.example", func(cur hss.Subscriber) (hss.SQNUpdate, error) {
		seen = cur
		return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(0x400), Resync: true, At: at}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen.SQN != Bob().SQN || seen.K != k2 || seen.OPc != opc2 || seen.AMF != Bob().AMF {
		t.Fatalf("fn saw %v", seen)
	}
	if got.SQN.Uint64() != 0x400 || got.Resyncs != 1 || !got.LastResync.Equal(at) || got.K != k2 || got.OPc != opc2 {
		t.Fatalf("UpdateSQN returned %v", got)
	}
	// A plain update keeps the resync record.
	if _, err := s.UpdateSQN(ctx, "bob@ims.example", func(cur hss.Subscriber) (hss.SQNUpdate, error) {
		return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(0x421)}, nil
	}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Get(ctx, "bob@ims.example")
	if got.SQN.Uint64() != 0x421 || got.Resyncs != 1 || !got.LastResync.Equal(at) || len(got.IMPUs) != 1 {
		t.Fatalf("after updates: %v", got)
	}
	// The largest SQN is stored as it is.
	if _, err := s.UpdateSQN(ctx, "bob@ims.example", func(cur hss.Subscriber) (hss.SQNUpdate, error) {
		return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(1<<48 - 1)}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, "bob@ims.example"); got.SQN.Uint64() != 1<<48-1 {
		t.Fatalf("max SQN stored as %x", got.SQN)
	}
	// A cancelled context stores nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.UpdateSQN(cctx, "bob@ims.example", func(cur hss.Subscriber) (hss.SQNUpdate, error) {
		return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(0x999)}, nil
	}); err == nil {
		t.Fatal("UpdateSQN with cancelled context succeeded")
	}
	if got, _ := s.Get(ctx, "bob@ims.example"); got.SQN.Uint64() != 1<<48-1 {
		t.Fatalf("cancelled update stored: %v", got)
	}
}

// testExactIdentities: identities match byte for byte (no case folding, no
// Unicode normalisation), List sorts by bytes, not by a locale's collation,
// and IMPUs keep the order they were given in.
func testExactIdentities(t *testing.T, s hss.Store) {
	ctx := context.Background()
	// In byte order; a locale would sort them _carol, alice, Alice, bob, émile.
	impis := []string{"Alice@x", "_carol@x", "alice@x", "bob@x", "émile@x"}
	for i, impi := range []string{"bob@x", "émile@x", "alice@x", "_carol@x", "Alice@x"} {
		sub := Bob()
		sub.IMPI = impi
		sub.IMPUs = []string{"tel:+1555010" + fmt.Sprint(i), "sip:" + impi}
		if err := s.Add(ctx, sub); err != nil {
			t.Fatalf("Add %s: %v", impi, err)
		}
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sub := range list {
		got = append(got, sub.IMPI)
	}
	if !slices.Equal(got, impis) {
		t.Fatalf("List order %q, want byte order %q", got, impis)
	}
	for _, sub := range list {
		if len(sub.IMPUs) != 2 || !strings.HasPrefix(sub.IMPUs[0], "tel:") || sub.IMPUs[1] != "sip:"+sub.IMPI {
			t.Fatalf("%s: IMPUs %q, not in the order given", sub.IMPI, sub.IMPUs)
		}
	}
	if impi, err := s.LookupIMPU(ctx, "sip:Alice@x"); err != nil || impi != "Alice@x" {
		t.Fatalf("LookupIMPU(sip:Alice@x) = %q, %v", impi, err)
	}
	for _, id := range []string{"ALICE@x", "alice@X", "Émile@x", "e\u0301mile@x", " bob@x"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, hss.ErrUnknownSubscriber) {
			t.Errorf("Get(%q) matched: %v", id, err)
		}
		if _, err := s.LookupIMPU(ctx, "sip:"+id); !errors.Is(err, hss.ErrUnknownIMPU) {
			t.Errorf("LookupIMPU(%q) matched: %v", "sip:"+id, err)
		}
	}
	// IMPUs differing in case only belong to different subscribers.
	d := Bob()
	d.IMPI = "dave@x"
	d.IMPUs = []string{"SIP:Bob@x", "sip:BOB@x"}
	if err := s.Add(ctx, d); err != nil {
		t.Fatalf("IMPUs differing in case refused: %v", err)
	}
}

// testLimits: the largest identities and IMPU list Validate allows are
// stored and read back whole, and a subscriber's last resync time too.
func testLimits(t *testing.T, s hss.Store) {
	ctx := context.Background()
	big := Alice()
	big.IMPI = strings.Repeat("i", hss.MaxIMPILen-len("@x")) + "@x"
	big.IMPUs = nil
	for i := range hss.MaxIMPUs {
		u := fmt.Sprintf("sip:%03d", hss.MaxIMPUs-i) // descending: order is kept, not sorted
		if i == 0 {
			u += strings.Repeat("u", hss.MaxIMPULen-len(u))
		}
		big.IMPUs = append(big.IMPUs, u)
	}
	big.SQN = akakeys.SQNFromUint64(1<<48 - 1)
	big.Resyncs = 1<<63 - 1
	big.LastResync = time.Date(2030, 1, 2, 3, 4, 5, 678_000_000, time.UTC)
	if err := s.Add(ctx, big); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, big.IMPI)
	if err != nil {
		t.Fatal(err)
	}
	if !Equal(got, big) {
		t.Fatalf("Get = %v\nwant %v", got, big)
	}
	if impi, err := s.LookupIMPU(ctx, big.IMPUs[0]); err != nil || impi != big.IMPI {
		t.Fatalf("LookupIMPU of the longest IMPU: %q, %v", impi, err)
	}
}

// testConcurrentUpdateSQN: goroutines spread over the handles add one to
// the SQN at once; every update sees the result of the one before, so the
// SQNs returned are exactly the next ones, each once, and each handle's are
// increasing.
func testConcurrentUpdateSQN(t *testing.T, stores []hss.Store) {
	ctx := context.Background()
	b := Bob()
	if err := stores[0].Add(ctx, b); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 6, 20
	start := b.SQN.Uint64()
	results := make([][]uint64, goroutines)
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	begin := make(chan struct{})
	for g := range goroutines {
		s := stores[g%len(stores)]
		wg.Go(func() {
			<-begin
			for range each {
				got, err := s.UpdateSQN(ctx, b.IMPI, func(cur hss.Subscriber) (hss.SQNUpdate, error) {
					return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(cur.SQN.Uint64() + 1)}, nil
				})
				if err != nil {
					errs <- err
					return
				}
				results[g] = append(results[g], got.SQN.Uint64())
			}
		})
	}
	close(begin)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("UpdateSQN: %v", err)
	}
	var all []uint64
	for g, r := range results {
		if !slices.IsSorted(r) {
			t.Errorf("goroutine %d saw SQNs out of order: %v", g, r)
		}
		all = append(all, r...)
	}
	slices.Sort(all)
	for i, v := range all {
		if v != start+1+uint64(i) {
			t.Fatalf("SQNs returned are not start+1..start+%d once each: %v", goroutines*each, all)
		}
	}
	for i, s := range stores {
		got, err := s.Get(ctx, b.IMPI)
		if err != nil || got.SQN.Uint64() != start+goroutines*each {
			t.Fatalf("handle %d: final SQN %x, %v; want %x", i, got.SQN, err, start+goroutines*each)
		}
	}
}

// testConcurrentAdd: subscribers racing for one IMPI, and others for one
// IMPU: exactly one of each race wins, the others get the sentinel error,
// and no loser left anything behind.
func testConcurrentAdd(t *testing.T, stores []hss.Store) {
	ctx := context.Background()
	const n = 6
	errs := make([]error, 2*n)
	var wg sync.WaitGroup
	begin := make(chan struct{})
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() { // same IMPI, IMPUs of their own
			sub := Bob()
			sub.IMPUs = []string{fmt.Sprintf("sip:bob%d@x", i)}
			<-begin
			errs[i] = s.Add(ctx, sub)
		})
		wg.Go(func() { // IMPIs of their own, one IMPU
			sub := Alice()
			sub.IMPI = fmt.Sprintf("alice%d@x", i)
			sub.IMPUs = []string{fmt.Sprintf("sip:own%d@x", i), "sip:shared@x"}
			<-begin
			errs[n+i] = s.Add(ctx, sub)
		})
	}
	close(begin)
	wg.Wait()
	won := func(errs []error, loss error) {
		t.Helper()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, loss):
				t.Errorf("Add: %v, want nil or %v", err, loss)
			}
		}
		if wins != 1 {
			t.Errorf("%d Adds won, want 1 (%v)", wins, errs)
		}
	}
	won(errs[:n], hss.ErrDuplicateIMPI)
	won(errs[n:], hss.ErrIMPUTaken)

	list, err := stores[len(stores)-1].List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("List = %v, want one bob and one alice", list)
	}
	for i := range n {
		for _, u := range []string{fmt.Sprintf("sip:bob%d@x", i), fmt.Sprintf("sip:own%d@x", i)} {
			impi, err := stores[0].LookupIMPU(ctx, u)
			winner := slices.ContainsFunc(list, func(s hss.Subscriber) bool { return slices.Contains(s.IMPUs, u) })
			if winner != (err == nil) {
				t.Errorf("LookupIMPU(%s) = %q, %v; the winners are %v", u, impi, err, list)
			}
		}
	}
}

// testSeeEachOther: what one handle writes, another reads at once.
func testSeeEachOther(t *testing.T, stores []hss.Store) {
	ctx := context.Background()
	a, b := stores[0], stores[1]
	if err := a.Add(ctx, Alice()); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, Alice().IMPI); err != nil || !Equal(got, Alice()) {
		t.Fatalf("other handle: Get = %v, %v", got, err)
	}
	if err := b.Add(ctx, Alice()); !errors.Is(err, hss.ErrDuplicateIMPI) {
		t.Fatalf("other handle: Add of the same IMPI: %v", err)
	}
	if _, err := b.UpdateSQN(ctx, Alice().IMPI, func(cur hss.Subscriber) (hss.SQNUpdate, error) {
		return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(0x20)}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Get(ctx, Alice().IMPI); err != nil || got.SQN.Uint64() != 0x20 {
		t.Fatalf("first handle: SQN %x, %v after the other's update", got.SQN, err)
	}
	if err := a.Delete(ctx, Alice().IMPI); err != nil {
		t.Fatal(err)
	}
	if _, err := b.UpdateSQN(ctx, Alice().IMPI, func(cur hss.Subscriber) (hss.SQNUpdate, error) {
		return hss.SQNUpdate{SQN: akakeys.SQNFromUint64(0x40)}, nil
	}); !errors.Is(err, hss.ErrUnknownSubscriber) {
		t.Fatalf("other handle: UpdateSQN of a deleted subscriber: %v", err)
	}
	if _, err := b.LookupIMPU(ctx, Alice().IMPUs[1]); !errors.Is(err, hss.ErrUnknownIMPU) {
		t.Fatalf("other handle: IMPU of a deleted subscriber: %v", err)
	}
}
