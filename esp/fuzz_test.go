package esp

import (
	"bytes"
	"testing"
	"unsafe"
)

// fuzzSA returns the inbound SA a fuzz input selects with its first byte:
// the low bits pick the algorithm pair, bit 7 ESN, bit 6 tunnel mode.
func fuzzConfig(sel byte) Config {
	mode := Transport
	if sel&0x40 != 0 {
		mode = Tunnel
	}
	return allPairs[int(sel&0x3f)%len(allPairs)].config(mode, sel&0x80 != 0)
}

// fuzzSeeds are valid packets for a few selectors, sealed with the fixed
// test keys, so the fuzzer starts past the ICV.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for i := range allPairs {
		for _, sel := range []byte{byte(i), byte(i) | 0xc0} {
			o, err := NewOutbound(fuzzConfig(sel))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{0, 1, 20, 61} {
				if sel&0x40 != 0 && n == 0 {
					continue
				}
				payload := bytes.Repeat([]byte{0x45}, n)
				seeds = append(seeds, append([]byte{sel}, seal(t, o, payload, 17)...))
			}
		}
	}
	return seeds
}

func within(sub, buf []byte) bool {
	if len(sub) == 0 {
		return true
	}
	s, b := uintptr(unsafe.Pointer(&sub[0])), uintptr(unsafe.Pointer(&buf[0]))
	return s >= b && s+uintptr(len(sub)) <= b+uintptr(len(buf))
}

func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	ins := map[byte]*Inbound{}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		sel, pkt := data[0], data[1:]
		in := ins[sel]
		if in == nil {
			var err error
			if in, err = NewInbound(fuzzConfig(sel)); err != nil {
				t.Fatal(err)
			}
			ins[sel] = in
		}
		in.win.init(DefaultReplayWindow, in.esn) // fresh window: every input gets a chance
		orig := append([]byte(nil), pkt...)
		payload, nh, seq, err := in.Open(pkt)
		if err != nil {
			if payload != nil || ReasonOf(err) == ReasonOther || ReasonOf(err) == ReasonNone {
				t.Fatalf("error %v with payload %x", err, payload)
			}
			return
		}
		if !within(payload, pkt) || seq == 0 {
			t.Fatalf("payload not inside the packet, or seq %d", seq)
		}
		// An authentic packet must re-open as a replay and re-seal to the
		// same bytes (Seal given its IV and sequence number).
		if _, _, _, err := in.Open(append([]byte(nil), orig...)); err != ErrReplay {
			t.Fatalf("second Open: %v", err)
		}
		o, err := NewOutbound(fuzzConfig(sel))
		if err != nil {
			t.Fatal(err)
		}
		o.seq.Store(seq - 1)
		o.testIV = append([]byte(nil), orig[8:8+o.a.ivLen]...)
		buf := make([]byte, HeaderRoom+len(payload)+TailRoom)
		copy(buf[HeaderRoom:], payload)
		re, err := o.Seal(buf, HeaderRoom, len(payload), nh)
		padded := len(orig) - len(payload) - o.Overhead(len(payload)) // extra (non-minimal) padding
		if err == nil && padded == 0 && !bytes.Equal(re, orig) {
			t.Fatalf("re-seal differs:\n%x\n%x", re, orig)
		}
	})
}

func FuzzClassify(f *testing.F) {
	for _, s := range [][]byte{{0xFF}, {0, 0, 0, 0, 1, 2}, {0, 0, 1, 0, 0, 0, 0, 1}, {0, 0, 0, 5, 0, 0, 0, 1}, {}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k := Classify(b)
		switch k {
		case KindKeepalive:
			if len(b) != 1 || b[0] != 0xFF {
				t.Fatalf("%x: keepalive", b)
			}
		case KindNonESP:
			if len(b) < 4 || b[0]|b[1]|b[2]|b[3] != 0 {
				t.Fatalf("%x: non-esp", b)
			}
		case KindESP:
			spi, err := PacketSPI(b)
			if err != nil || spi <= SPIReservedMax {
				t.Fatalf("%x: esp with SPI %d, %v", b, spi, err)
			}
		case KindInvalid:
		default:
			t.Fatalf("%x: kind %d", b, k)
		}
	})
}
