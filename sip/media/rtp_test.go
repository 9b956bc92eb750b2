package media

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Packets written out by hand from the RFC 3550 §5.1 and §5.3.1 layouts.
var rtpVectors = []struct {
	name    string
	pkt     string
	h       Header
	payload string
}{
	{"plain PCMU", "80" + "00" + "1234" + "000000a0" + "deadbeef" + "6869",
		Header{PayloadType: 0, Seq: 0x1234, Timestamp: 0xa0, SSRC: 0xdeadbeef}, "6869"},
	{"marker, PT 96", "80" + "e0" + "ffff" + "01020304" + "0a0b0c0d" + "",
		Header{Marker: true, PayloadType: 96, Seq: 0xffff, Timestamp: 0x01020304, SSRC: 0x0a0b0c0d}, ""},
	// V=2 P=1 X=1 CC=2; M=1 PT=96; two CSRCs; extension 0xBEDE of one
	// word; payload "abc" then three octets of padding.
	{"CSRC, extension, padding", "b2" + "e0" + "0001" + "01020304" + "0a0b0c0d" + "11111111" + "22222222" +
		"bede0001" + "01020304" + "616263" + "000003",
		Header{Marker: true, PayloadType: 96, Seq: 1, Timestamp: 0x01020304, SSRC: 0x0a0b0c0d,
			Padding: true, Extension: true, CSRCCount: 2}, "616263"},
	// Padding may be the whole payload.
	{"padding only", "a0" + "08" + "0002" + "00000000" + "00000001" + "00000004",
		Header{PayloadType: 8, Seq: 2, SSRC: 1, Padding: true}, ""},
	// An extension of zero words.
	{"empty extension", "90" + "00" + "0003" + "00000000" + "00000001" + "10000000" + "ff",
		Header{Seq: 3, SSRC: 1, Extension: true}, "ff"},
}

func TestParseRTP(t *testing.T) {
	for _, v := range rtpVectors {
		pkt := mustHex(t, v.pkt)
		h, p, err := ParseRTP(pkt)
		if err != nil {
			t.Errorf("%s: %v", v.name, err)
			continue
		}
		if h != v.h || hex.EncodeToString(p) != v.payload {
			t.Errorf("%s: got %+v %x, want %+v %s", v.name, h, p, v.h, v.payload)
		}
		if !v.h.Padding && !v.h.Extension && v.h.CSRCCount == 0 {
			if got := AppendRTP(nil, h, p); !bytes.Equal(got, pkt) {
				t.Errorf("%s: AppendRTP = %x, want %x", v.name, got, pkt)
			}
		}
	}
}

func TestParseRTPErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkt  string
		err  error
	}{
		{"empty", "", ErrRTPShort},
		{"11 octets", "8000123400000000000000", ErrRTPShort},
		{"version 1", "40001234000000000000000000", ErrRTPVersion},
		{"version 0 (STUN-like)", "000100000000000000000000", ErrRTPVersion},
		{"CSRCs missing", "81001234000000000000000011", ErrRTPShort},
		{"extension header missing", "90001234000000000000000000", ErrRTPShort},
		{"extension body missing", "9000123400000000000000000000000200000000", ErrRTPShort},
		{"padding count zero", "a000123400000000000000006100", ErrRTPPadding},
		{"padding longer than payload", "a000123400000000000000006103", ErrRTPPadding},
		{"padding bit, no payload", "a00012340000000000000000", ErrRTPPadding},
	} {
		if _, _, err := ParseRTP(mustHex(t, tc.pkt)); err != tc.err {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.err)
		}
	}
}

// Every prefix of every vector either fails with a sentinel error or parses
// to the same header and a prefix of the payload.
func TestParseRTPTruncated(t *testing.T) {
	for _, v := range rtpVectors {
		pkt := mustHex(t, v.pkt)
		want := mustHex(t, v.payload)
		for n := range len(pkt) {
			h, p, err := ParseRTP(pkt[:n])
			switch {
			case err == ErrRTPShort || err == ErrRTPPadding:
			case err != nil:
				t.Errorf("%s[:%d]: unexpected error %v", v.name, n, err)
			case h != v.h || !bytes.HasPrefix(want, p) || v.h.Padding:
				t.Errorf("%s[:%d]: parsed as %+v %x", v.name, n, h, p)
			}
		}
	}
}

func TestProbe(t *testing.T) {
	p := Probe{Kind: KindVideo, SendTime: 0x0102030405060708, Frame: 0x0a0b0c0d, Index: 2, Count: 7}
	b := AppendProbe(nil, p)
	if want := "696d0200" + "0102030405060708" + "0a0b0c0d" + "0002" + "0007"; hex.EncodeToString(b) != want {
		t.Fatalf("AppendProbe = %x, want %s", b, want)
	}
	got, err := ParseProbe(append(b, 0xff, 0xff))
	if err != nil || got != p {
		t.Fatalf("ParseProbe = %+v, %v", got, err)
	}
	for n := range len(b) {
		if _, err := ParseProbe(b[:n]); err != ErrProbeShort {
			t.Errorf("probe[:%d]: err = %v, want ErrProbeShort", n, err)
		}
	}
	for i, want := range []error{ErrProbeMagic, ErrProbeMagic, ErrProbeBad, ErrProbeBad} {
		bad := bytes.Clone(b)
		bad[i] ^= 0x40
		if _, err := ParseProbe(bad); err != want {
			t.Errorf("octet %d flipped: err = %v, want %v", i, err, want)
		}
	}
	for _, bad := range []Probe{{Kind: KindAudio, Count: 0}, {Kind: KindAudio, Index: 1, Count: 1}, {Kind: 3, Count: 1}} {
		if _, err := ParseProbe(AppendProbe(nil, bad)); err != ErrProbeBad {
			t.Errorf("%+v: err = %v, want ErrProbeBad", bad, err)
		}
	}
}

func TestRTPNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 1500)
	payload := AppendProbe(make([]byte, 0, 160), Probe{Kind: KindAudio, Count: 1})
	h := Header{PayloadType: 96, Seq: 9, Timestamp: 3, SSRC: 4}
	if n := testing.AllocsPerRun(100, func() {
		pkt := AppendRTP(buf[:0], h, payload)
		_, p, err := ParseRTP(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseProbe(p); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("%v allocations per build and parse, want 0", n)
	}
}

// A random header survives a round trip.
func TestRTPRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		h := Header{Marker: r.IntN(2) == 1, PayloadType: uint8(r.IntN(128)), Seq: uint16(r.Uint32()), Timestamp: r.Uint32(), SSRC: r.Uint32()}
		payload := make([]byte, r.IntN(100))
		for i := range payload {
			payload[i] = byte(r.Uint32())
		}
		got, p, err := ParseRTP(AppendRTP(nil, h, payload))
		if err != nil || got != h || !bytes.Equal(p, payload) {
			t.Fatalf("%+v %x: parsed %+v %x %v", h, payload, got, p, err)
		}
	}
}

func FuzzParseRTP(f *testing.F) {
	for _, v := range rtpVectors {
		f.Add(mustHex(f, v.pkt))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := ParseRTP(b)
		if err != nil {
			if !errors.Is(err, ErrRTPShort) && !errors.Is(err, ErrRTPVersion) && !errors.Is(err, ErrRTPPadding) {
				t.Fatalf("non-sentinel error %v", err)
			}
			return
		}
		if len(p) > len(b)-HeaderLen {
			t.Fatalf("payload of %d octets from a packet of %d", len(p), len(b))
		}
		if len(p) > 0 && &p[0] != &b[len(b)-len(p)-padLen(h, b)] {
			t.Fatal("payload is not the tail of the packet before padding")
		}
		if !h.Padding && !h.Extension && h.CSRCCount == 0 {
			if got := AppendRTP(nil, h, p); !bytes.Equal(got, b) {
				t.Fatalf("re-encoded %x, want %x", got, b)
			}
		}
	})
}

func padLen(h Header, b []byte) int {
	if !h.Padding {
		return 0
	}
	return int(b[len(b)-1])
}

func FuzzParseProbe(f *testing.F) {
	f.Add(AppendProbe(nil, Probe{Kind: KindVideo, SendTime: 5, Frame: 1, Index: 0, Count: 2}))
	f.Add([]byte("im"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProbe(b)
		if err != nil {
			if err != ErrProbeShort && err != ErrProbeMagic && err != ErrProbeBad {
				t.Fatalf("non-sentinel error %v", err)
			}
			return
		}
		if got := AppendProbe(nil, p); !bytes.Equal(got, b[:ProbeLen]) {
			t.Fatalf("re-encoded %x, want %x", got, b[:ProbeLen])
		}
	})
}

func BenchmarkParseRTP(b *testing.B) {
	for _, size := range []int{160, 1200} {
		pkt := AppendRTP(nil, Header{PayloadType: 96, SSRC: 1}, AppendProbe(make([]byte, 0, size), Probe{Kind: KindVideo, Count: 1})[:size])
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				_, p, _ := ParseRTP(pkt)
				ParseProbe(p)
			}
		})
	}
}
