package esp

import (
	"bytes"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want Kind
	}{
		// RFC 3948 §2.3: a NAT-keepalive is exactly one octet, 0xFF.
		{"keepalive", []byte{0xFF}, KindKeepalive},
		{"0xFF twice", []byte{0xFF, 0xFF}, KindInvalid},
		{"one other octet", []byte{0x00}, KindInvalid},
		{"empty", nil, KindInvalid},
		// RFC 3948 §2.2: the non-ESP marker is four zero octets (then IKE).
		{"non-esp marker + IKE", append(make([]byte, 4), bytes.Repeat([]byte{1}, 28)...), KindNonESP},
		{"bare marker", make([]byte, 4), KindNonESP},
		{"three zeros", make([]byte, 3), KindInvalid},
		// RFC 3948 §2.1 / RFC 4303 §2.1: ESP starts with a non-zero SPI.
		{"esp", []byte{0, 0, 0x10, 0, 0, 0, 0, 1}, KindESP},
		{"esp long", append([]byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1}, make([]byte, 100)...), KindESP},
		{"esp spi 256", []byte{0, 0, 1, 0, 0, 0, 0, 1}, KindESP},
		{"reserved spi 1", []byte{0, 0, 0, 1, 0, 0, 0, 1}, KindInvalid},
		{"reserved spi 255", []byte{0, 0, 0, 255, 0, 0, 0, 1}, KindInvalid},
		{"7 octets", []byte{0, 0, 0x10, 0, 0, 0, 0}, KindInvalid},
		{"4 octets non-zero", []byte{1, 2, 3, 4}, KindInvalid},
	} {
		if got := Classify(tc.b); got != tc.want {
			t.Errorf("%s: Classify(%x) = %v, want %v", tc.name, tc.b, got, tc.want)
		}
	}
}

func TestClassifySealed(t *testing.T) {
	for _, p := range allPairs {
		o, _ := mustSA(t, p.config(Transport, false))
		if k := Classify(seal(t, o, nil, 17)); k != KindESP {
			t.Errorf("%v: sealed packet classified %v", p, k)
		}
	}
}

func TestKeepalive(t *testing.T) {
	if !bytes.Equal(Keepalive(), []byte{0xFF}) || Classify(Keepalive()) != KindKeepalive {
		t.Fatal(Keepalive())
	}
	for k, s := range map[Kind]string{KindESP: "esp", KindKeepalive: "keepalive", KindNonESP: "non-esp", KindInvalid: "invalid", 77: "invalid"} {
		if k.String() != s {
			t.Errorf("%d: %q", k, k.String())
		}
	}
}

// TestClassifyPrefixes: every prefix of every kind classifies without panic.
func TestClassifyPrefixes(t *testing.T) {
	b := append([]byte{0, 0, 0, 0}, bytes.Repeat([]byte{0xFF}, 40)...)
	for n := range len(b) + 1 {
		Classify(b[:n])
		Classify(b[4 : 4+min(n, len(b)-4)])
	}
}
