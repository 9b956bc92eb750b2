package esp

import (
	"bytes"
	"errors"
	"testing"
)

// TestSealDummy: a dummy packet (RFC 4303 §2.6) is authenticated, moves the
// replay window and is then dropped with ErrDummy, in both modes and for
// every pair; a tampered one fails authentication; a replayed one is a
// replay.
func TestSealDummy(t *testing.T) {
	for _, p := range allPairs {
		for _, mode := range []Mode{Tunnel, Transport} {
			o, in := mustSA(t, p.config(mode, false))
			buf := make([]byte, HeaderRoom+TailRoom)
			pkt, err := o.SealDummy(buf, HeaderRoom)
			if err != nil {
				t.Fatalf("%v %v: %v", p, mode, err)
			}
			tampered := bytes.Clone(pkt)
			tampered[len(tampered)-1] ^= 1
			if _, _, _, err := in.Open(tampered); !errors.Is(err, ErrAuth) {
				t.Fatalf("%v %v: tampered dummy: %v", p, mode, err)
			}
			again := bytes.Clone(pkt)
			if _, nh, seq, err := in.Open(pkt); !errors.Is(err, ErrDummy) || nh != NextHeaderNone || seq != 1 {
				t.Fatalf("%v %v: dummy opened as nh %d seq %d err %v", p, mode, nh, seq, err)
			}
			if _, _, _, err := in.Open(again); !errors.Is(err, ErrReplay) {
				t.Fatalf("%v %v: replayed dummy: %v", p, mode, err)
			}
		}
	}
	o, _ := mustSA(t, allPairs[3].config(Tunnel, false))
	if _, err := o.SealDummy(make([]byte, 10), 8); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("short buffer: %v", err)
	}
	if _, err := o.SealDummy(make([]byte, 100), 4); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("no headroom: %v", err)
	}
}
