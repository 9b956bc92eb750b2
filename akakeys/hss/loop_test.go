package hss

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

// TestUSIMAndHSSLoop runs the network and the USIM against each other over
// a real SQLite store, the way a registration does (TS 33.102 §6.3):
// a vector is accepted once; the same AUTN again is refused with AUTS; a
// USIM far ahead (a forced SQN gap) answers AUTS; the HSS checks MAC-S,
// resynchronises, and its next vector is accepted.
func TestUSIMAndHSSLoop(t *testing.T) {
	ctx := context.Background()
	store, err := OpenSQLite(filepath.Join(t.TempDir(), "hss.db"), SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h := newHSS(t, store, Config{})
	// TS 35.208 test set 1 keys.
	k := mustHex[akakeys.K]("465b5ce8b199b49faa5f0a2ee238a6bc")
	op := mustHex[akakeys.OP]("cdc202d5123e20f62b6d676ac72cb318")
	opc := akakeys.ComputeOPc(k, op)
	if err := store.Add(ctx, Subscriber{IMPI: "alice@a.example", IMPUs: []string{"sip:alice@a.example"}, K: k, OPc: opc, OP: &op, AMF: akakeys.AMF{0x80, 0}}); err != nil {
		t.Fatal(err)
	}
	usim, err := akakeys.NewUSIM(k, opc, akakeys.USIMConfig{})
	if err != nil {
		t.Fatal(err)
	}

	// 1. Accepted once, and RES matches XRES.
	v, err := h.Vector(ctx, "alice@a.example")
	if err != nil {
		t.Fatal(err)
	}
	res, ck, ik, err := usim.Authenticate(v.RAND, v.AUTN)
	if err != nil || res != v.XRES || ck != v.CK || ik != v.IK {
		t.Fatalf("first vector: err %v, RES/CK/IK match %v", err, res == v.XRES && ck == v.CK && ik == v.IK)
	}
	// 2. The same AUTN again is a replay: AUTS, not RES.
	_, _, _, err = usim.Authenticate(v.RAND, v.AUTN)
	var sf *akakeys.SyncFailureError
	if !errors.As(err, &sf) {
		t.Fatalf("replayed AUTN: %v, want a sync failure", err)
	}

	// 3. A forced gap: the USIM has accepted SEQ 100000 in every IND slot
	// (vectors from another HSS, or a restored backup of this one).
	m := akakeys.NewMilenage(k, opc)
	for ind := range uint64(32) {
		far, _ := m.NewVector(akakeys.SQNFromUint64(100000<<5|ind), akakeys.AMF{0x80, 0})
		if _, _, _, err := usim.Authenticate(far.RAND, far.AUTN); err != nil {
			t.Fatal(err)
		}
	}
	v2, err := h.Vector(ctx, "alice@a.example")
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, err = usim.Authenticate(v2.RAND, v2.AUTN)
	if !errors.As(err, &sf) {
		t.Fatalf("vector behind the USIM: %v, want AUTS", err)
	}
	// A forged AUTS is refused and changes nothing.
	bad := sf.AUTS
	bad[13] ^= 1
	if _, err := h.Resync(ctx, "alice@a.example", v2.RAND, bad); err == nil {
		t.Fatal("forged AUTS accepted")
	}
	// 4. The genuine one resynchronises the HSS; its fresh vector works.
	v3, err := h.Resync(ctx, "alice@a.example", v2.RAND, sf.AUTS)
	if err != nil {
		t.Fatal(err)
	}
	if res, _, _, err := usim.Authenticate(v3.RAND, v3.AUTN); err != nil || res != v3.XRES {
		t.Fatalf("vector after resync: %v", err)
	}
	// And the one after it, drawn normally, too.
	v4, err := h.Vector(ctx, "alice@a.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := usim.Authenticate(v4.RAND, v4.AUTN); err != nil {
		t.Fatalf("next vector: %v", err)
	}
}
