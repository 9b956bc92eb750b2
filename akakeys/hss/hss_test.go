package hss

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
)

func newHSS(t *testing.T, s Store, cfg Config) *HSS {
	t.Helper()
	h, err := New(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(nil, Config{}); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := New(NewMemStore(), Config{SQN: akakeys.SQNScheme{IndBits: MaxIndBits + 1}}); err == nil {
		t.Error("IND of 17 bits accepted")
	}
}

func TestVectorSequence(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.Add(ctx, alice()); err != nil {
			t.Fatal(err)
		}
		h := newHSS(t, s, Config{})
		m := akakeys.NewMilenage(k1, opc1)
		prev := akakeys.SQN{}
		for i := range 40 {
			v, err := h.Vector(ctx, alice().IMPI)
			if err != nil {
				t.Fatal(err)
			}
			// Annex C: SEQ+1 and IND+1 mod 32 per vector, from SQN 0.
			if want := h.Scheme().Next(prev); v.SQN != want {
				t.Fatalf("vector %d: SQN %x, want %x", i, v.SQN, want)
			}
			if want := m.Vector(v.RAND, v.SQN, v.AMF); v != want {
				t.Fatalf("vector %d does not recompute", i)
			}
			if v.AMF != alice().AMF {
				t.Fatalf("AMF %x", v.AMF)
			}
			prev = v.SQN
		}
		// The store holds the top of the range reserved: SEQ 1..64 (IND
		// 1..31, 0, 1..31, 0), of which 40 were issued.
		if got, _ := s.Get(ctx, alice().IMPI); got.SQN != h.Scheme().Join(DefaultReserve, DefaultReserve) {
			t.Fatalf("stored SQN %x, want the top of the first range %x (last issued %x)",
				got.SQN, h.Scheme().Join(DefaultReserve, DefaultReserve), prev)
		}
		if _, err := h.Vector(ctx, "nobody@x"); !errors.Is(err, ErrUnknownSubscriber) {
			t.Fatalf("Vector for unknown: %v", err)
		}
		impi, err := h.LookupIMPU(ctx, "tel:+15550100")
		if err != nil || impi != alice().IMPI {
			t.Fatalf("LookupIMPU = %q, %v", impi, err)
		}
	})
}

func TestVectorIndBits(t *testing.T) {
	s := NewMemStore()
	ctx := context.Background()
	s.Add(ctx, alice())
	h := newHSS(t, s, Config{SQN: akakeys.SQNScheme{IndBits: 3}})
	for i := 1; i <= 10; i++ {
		v, err := h.Vector(ctx, alice().IMPI)
		if err != nil {
			t.Fatal(err)
		}
		if want := uint64(i)<<3 | uint64(i%8); v.SQN.Uint64() != want {
			t.Fatalf("vector %d: SQN %x, want %x", i, v.SQN, want)
		}
	}
}

func TestVectorSQNExhausted(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		a := alice()
		a.SQN = akakeys.SQNFromUint64(1<<48 - 1) // SEQ at its maximum
		if err := s.Add(ctx, a); err != nil {
			t.Fatal(err)
		}
		h := newHSS(t, s, Config{})
		if _, err := h.Vector(ctx, a.IMPI); !errors.Is(err, ErrSQNExhausted) {
			t.Fatalf("Vector at max SEQ: %v", err)
		}
		if got, _ := s.Get(ctx, a.IMPI); got.SQN != a.SQN {
			t.Fatalf("SQN moved to %x", got.SQN)
		}
		// One step below the maximum still works, once.
		b := bob()
		b.SQN = akakeys.SQNFromUint64((1<<43 - 2) << 5)
		s.Add(ctx, b)
		if _, err := h.Vector(ctx, b.IMPI); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Vector(ctx, b.IMPI); !errors.Is(err, ErrSQNExhausted) {
			t.Fatalf("second vector past max: %v", err)
		}
	})
}

func fixedClock() func() time.Time {
	return func() time.Time { return time.UnixMilli(1_750_000_000_000) }
}

func TestResyncMovesForward(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.Add(ctx, alice()); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		h := newHSS(t, s, Config{Now: fixedClock(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		v, err := h.Vector(ctx, alice().IMPI)
		if err != nil {
			t.Fatal(err)
		}
		// The USIM has seen far more than the HSS remembers (a restored
		// backup, say) and answers with AUTS carrying SQN_MS.
		usim := akakeys.NewMilenage(k1, opc1)
		sqnMS := h.Scheme().Join(5000, 7)
		auts := usim.AUTS(v.RAND, sqnMS)

		nv, err := h.Resync(ctx, alice().IMPI, v.RAND, auts)
		if err != nil {
			t.Fatal(err)
		}
		if want := h.Scheme().AfterResync(sqnMS); nv.SQN != want || nv.SQN.Uint64() <= sqnMS.Uint64() {
			t.Fatalf("vector after resync has SQN %x, want AfterResync(%x) = %x", nv.SQN, sqnMS, want)
		}
		if nv != usim.Vector(nv.RAND, nv.SQN, nv.AMF) {
			t.Fatal("resync vector does not recompute")
		}
		next, err := h.Vector(ctx, alice().IMPI)
		if err != nil {
			t.Fatal(err)
		}
		if next.SQN != h.Scheme().Next(nv.SQN) {
			t.Fatalf("next SQN %x after %x", next.SQN, nv.SQN)
		}
		// The resync stored a new range from its vector's SQN on.
		got, _ := s.Get(ctx, alice().IMPI)
		if got.Resyncs != 1 || !got.LastResync.Equal(fixedClock()()) || got.SQN != h.ahead(nv.SQN, DefaultReserve-1) {
			t.Fatalf("after resync: %v", got)
		}
		if !strings.Contains(logs.String(), "moved=true") || !strings.Contains(logs.String(), "sqn_ms=000000027107") {
			t.Errorf("resync log: %s", logs.String())
		}
		assertNoKeys(t, "resync log", logs.String())
	})
}

func TestResyncNeverMovesBackwards(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		a := alice()
		a.SQN = akakeys.SQNScheme{}.Join(900, 4)
		if err := s.Add(ctx, a); err != nil {
			t.Fatal(err)
		}
		h := newHSS(t, s, Config{Now: fixedClock()})
		// A USIM behind the HSS (it never saw SEQ 600..900) refuses an old
		// vector, e.g. one a registrar replayed; its SQN_MS is 600.
		var r akakeys.RAND
		r[0] = 0x42
		sqnMS := h.Scheme().Join(600, 3)
		nv, err := h.Resync(ctx, a.IMPI, r, akakeys.NewMilenage(k1, opc1).AUTS(r, sqnMS))
		if err != nil {
			t.Fatal(err)
		}
		// The HSS stays ahead: the next SQN after 900, which the USIM accepts.
		if want := h.Scheme().Next(a.SQN); nv.SQN != want {
			t.Fatalf("SQN %x, want %x (no move backwards)", nv.SQN, want)
		}
		got, _ := s.Get(ctx, a.IMPI)
		if got.SQN != h.ahead(nv.SQN, DefaultReserve-1) || got.Resyncs != 1 {
			t.Fatalf("after resync: %v", got)
		}
		// Equal SEQ (the USIM took vectors up to the top of the range):
		// also no move, the next SEQ is already fresh.
		sqnMS = got.SQN
		nv2, err := h.Resync(ctx, a.IMPI, r, akakeys.NewMilenage(k1, opc1).AUTS(r, sqnMS))
		if err != nil || nv2.SQN != h.Scheme().Next(sqnMS) {
			t.Fatalf("resync at equal SEQ: %x, %v", nv2.SQN, err)
		}
	})
}

func TestResyncRejectsForgedAUTS(t *testing.T) {
	forEachStore(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if err := s.Add(ctx, alice()); err != nil {
			t.Fatal(err)
		}
		h := newHSS(t, s, Config{Now: fixedClock()})
		v, err := h.Vector(ctx, alice().IMPI)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := s.Get(ctx, alice().IMPI)
		sqnMS := h.Scheme().Join(1<<30, 0)
		auts := akakeys.NewMilenage(k1, opc1).AUTS(v.RAND, sqnMS)
		refused := func(what string, r akakeys.RAND, a akakeys.AUTS) {
			t.Helper()
			nv, err := h.Resync(ctx, alice().IMPI, r, a)
			if !errors.Is(err, akakeys.ErrAUTSMAC) || nv != (akakeys.Vector{}) {
				t.Fatalf("%s: Resync = %x, %v; want ErrAUTSMAC", what, nv.SQN, err)
			}
			assertNoKeys(t, what, err.Error())
		}
		// Every single-bit change of AUTS (SQN_MS xor AK*, or MAC-S) and of
		// RAND is refused.
		for bit := range len(auts) * 8 {
			forged := auts
			forged[bit/8] ^= 1 << (bit % 8)
			refused("AUTS bit flip", v.RAND, forged)
		}
		for bit := range len(v.RAND) * 8 {
			r := v.RAND
			r[bit/8] ^= 1 << (bit % 8)
			refused("RAND bit flip", r, auts)
		}
		// Another subscriber's valid AUTS is refused too.
		refused("other key", v.RAND, akakeys.NewMilenage(k2, opc2).AUTS(v.RAND, sqnMS))

		after, _ := s.Get(ctx, alice().IMPI)
		if !equalSub(before, after) {
			t.Fatalf("forged AUTS changed state:\n%v\n%v", before, after)
		}
		if _, err := h.Resync(ctx, "nobody@x", v.RAND, auts); !errors.Is(err, ErrUnknownSubscriber) {
			t.Fatalf("Resync unknown: %v", err)
		}
		// The genuine one still works.
		if _, err := h.Resync(ctx, alice().IMPI, v.RAND, auts); err != nil {
			t.Fatal(err)
		}
	})
}

func TestResyncSQNExhausted(t *testing.T) {
	s := NewMemStore()
	ctx := context.Background()
	s.Add(ctx, alice())
	h := newHSS(t, s, Config{})
	var r akakeys.RAND
	sqnMS := akakeys.SQNFromUint64(1<<48 - 1)
	if _, err := h.Resync(ctx, alice().IMPI, r, akakeys.NewMilenage(k1, opc1).AUTS(r, sqnMS)); !errors.Is(err, ErrSQNExhausted) {
		t.Fatalf("resync to max SEQ: %v", err)
	}
	if got, _ := s.Get(ctx, alice().IMPI); got.SQN != (akakeys.SQN{}) || got.Resyncs != 0 {
		t.Fatalf("state changed: %v", got)
	}
}

// TestSQLiteMatchesMemStore drives both stores through the same random
// operations and requires the same answers: the SQLite store checked against
// the obvious in-memory model.
func TestSQLiteMatchesMemStore(t *testing.T) {
	sq, _ := openTemp(t)
	ctx := context.Background()
	hs := []*HSS{newHSS(t, NewMemStore(), Config{Now: fixedClock()}), newHSS(t, sq, Config{Now: fixedClock()})}
	rng := rand.New(rand.NewPCG(1, 2))
	ids := []string{"a@x", "b@x", "c@x"}
	m := akakeys.NewMilenage(k1, opc1)
	for step := range 300 {
		// Draw the operation once, apply it to both.
		id := ids[rng.IntN(len(ids))]
		op := rng.IntN(20) // 0-1 add, 2 delete, 3 lookup, 4 list, 5-7 resync, 8-19 vector
		var r akakeys.RAND
		r[0] = byte(rng.IntN(256))
		msSEQ, msIND := uint64(rng.IntN(60)), uint64(rng.IntN(32))
		forge := rng.IntN(4) == 0
		var res [2]string
		for i, h := range hs {
			var out string
			var err error
			switch op {
			case 0, 1:
				sub := Subscriber{IMPI: id, IMPUs: []string{"sip:" + id, "tel:+1" + id[:1]}, K: k1, OPc: opc1, AMF: akakeys.AMF{0x80}}
				if id == "c@x" {
					sub.IMPUs = []string{"sip:a@x"} // taken while a@x exists
				}
				err = h.store.Add(ctx, sub)
			case 2:
				err = h.store.Delete(ctx, id)
			case 3:
				out, err = h.LookupIMPU(ctx, "sip:"+id)
			case 4:
				var l []Subscriber
				l, err = h.store.List(ctx)
				out = fmt.Sprint(l)
			case 5, 6, 7:
				auts := m.AUTS(r, h.Scheme().Join(msSEQ, msIND))
				if forge {
					auts[13] ^= 1
				}
				var v akakeys.Vector
				v, err = h.Resync(ctx, id, r, auts)
				out = fmt.Sprintf("%x", v.SQN)
			default:
				var v akakeys.Vector
				v, err = h.Vector(ctx, id)
				out = fmt.Sprintf("%x", v.SQN)
			}
			if err != nil {
				out = "error: " + err.Error()
			}
			res[i] = out
		}
		if res[0] != res[1] {
			t.Fatalf("step %d (op %d on %s): mem %q, sqlite %q", step, op, id, res[0], res[1])
		}
	}
}
