package hss

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
)

func TestSubscriberNeverShowsKeys(t *testing.T) {
	a := alice()
	a.Resyncs = 3
	a.LastResync = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	type wrapper struct {
		Sub  Subscriber
		Ptr  *Subscriber
		List []Subscriber
	}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v"} {
		outs = append(outs, fmt.Sprintf(verb, a), fmt.Sprintf(verb, &a))
	}
	outs = append(outs,
		fmt.Sprintf("%+v", wrapper{Sub: a, List: []Subscriber{a}}),
		fmt.Sprint(a), fmt.Sprintln([]Subscriber{a}), a.String(),
	)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "sub", a, "ptr", &a)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "sub", a)
	outs = append(outs, logs.String())
	j, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	bs := bob()
	outs = append(outs, fmt.Sprintf("%+v", bs))

	for _, o := range outs {
		assertNoKeys(t, "output", o)
		// The decimal form of an array, as fmt or encoding/json would print it.
		if strings.Contains(o, fmt.Sprint(a.K[:4])[1:10]) || strings.Contains(o, fmt.Sprint(bs.K[:4])[1:10]) {
			t.Errorf("output shows K bytes in decimal: %s", o)
		}
	}
	// What it does show.
	s := a.String()
	for _, want := range []string{`"alice@ims.example"`, "tel:+15550100", "K:" + Fingerprint(k1[:]), "OP:" + Fingerprint(op1[:]),
		"OPc:" + Fingerprint(opc1[:]), "AMF:8000", "SQN:000000000000", "Resyncs:3", "2026-01-02T03:04:05Z"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %s; lacks %q", s, want)
		}
	}
	if strings.Contains(bs.String(), " OP:") {
		t.Errorf("OP shown for a subscriber provisioned with OPc: %s", bs)
	}
	if !strings.Contains(logs.String(), `"k":"sha256:`) {
		t.Errorf("slog output lacks the K fingerprint: %s", logs.String())
	}
}

func TestFingerprint(t *testing.T) {
	// sha256 of the TS 35.208 Test Set 1 K, computed with
	// printf %s 465b5ce8b199b49faa5f0a2ee238a6bc | xxd -r -p | sha256sum
	if got := Fingerprint(k1[:]); got != "sha256:836b7a93" {
		t.Fatalf("Fingerprint(K1) = %s", got)
	}
	k := k1
	k[15] ^= 1
	if Fingerprint(k[:]) == Fingerprint(k1[:]) {
		t.Fatal("fingerprint ignores the last bit")
	}
}

func TestSubscriberView(t *testing.T) {
	a := alice()
	a.SQN = [6]byte{0, 0, 0, 0, 0x01, 0xe3}
	v := a.View(akakeys.SQNScheme{})
	if v.KeyKind != "OP" || v.SEQ != 0xf || v.IND != 3 || v.SQN != "0000000001e3" || v.OPFingerprint == "" || v.LastResync != nil {
		t.Fatalf("View = %+v", v)
	}
	if b := bob().View(akakeys.SQNScheme{}); b.KeyKind != "OPc" || b.OPFingerprint != "" {
		t.Fatalf("View = %+v", b)
	}
}

// FuzzValidate: identities from anywhere are refused with an error or
// accepted and stored intact; never a panic.
func FuzzValidate(f *testing.F) {
	f.Add("alice@ims.example", "sip:alice@ims.example")
	f.Add("", "tel:+1555")
	f.Add("a\x00b", "SIPS:x")
	f.Add("b\xff", "sip:")
	f.Fuzz(func(t *testing.T, impi, impu string) {
		s := Subscriber{IMPI: impi, IMPUs: []string{impu}, K: k1, OPc: opc1}
		if err := s.Validate(); err != nil {
			if !errors.Is(err, ErrInvalidSubscriber) {
				t.Fatalf("error %v does not wrap ErrInvalidSubscriber", err)
			}
			return
		}
		m := NewMemStore()
		if err := m.Add(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		got, err := m.Get(context.Background(), impi)
		if err != nil || got.IMPI != impi || got.IMPUs[0] != impu {
			t.Fatalf("round trip: %v %v", got, err)
		}
		if owner, err := m.LookupIMPU(context.Background(), impu); err != nil || owner != impi {
			t.Fatalf("LookupIMPU: %q %v", owner, err)
		}
	})
}
