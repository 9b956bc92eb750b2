package bench

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/imsec/imsec/esp"
)

// TestBaselineSealOpensWithESP shows the baseline seal does esp's job: its
// packets open with esp.Inbound to the same payload.
func TestBaselineSealOpensWithESP(t *testing.T) {
	for _, s := range CodecSuites() {
		cfg := s.config()
		b, err := newBaseline(cfg)
		if err != nil {
			t.Fatal(err)
		}
		in, err := esp.NewInbound(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, 2, 15, 16, 64, 1400} {
			payload := make([]byte, size)
			for i := range payload {
				payload[i] = byte(i * 7)
			}
			buf := make([]byte, esp.HeaderRoom+size+esp.TailRoom)
			copy(buf[esp.HeaderRoom:], payload)
			pkt := b.seal(buf, esp.HeaderRoom, size)
			got, nh, _, err := in.Open(pkt)
			if err != nil || nh != nextHeaderUDP || !bytes.Equal(got, payload) {
				t.Errorf("%s/%s %dB: esp.Open of the baseline's packet: err %v, nh %d, payload ok %v", s.EAlg, s.Auth, size, err, nh, bytes.Equal(got, payload))
			}
		}
	}
}

// TestBaselineOpensESPPackets shows the baseline open does esp's job: it
// authenticates and decrypts esp's packets, and rejects a flipped bit.
func TestBaselineOpensESPPackets(t *testing.T) {
	for _, s := range CodecSuites() {
		cfg := s.config()
		b, err := newBaseline(cfg)
		if err != nil {
			t.Fatal(err)
		}
		out, err := esp.NewOutbound(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, 64, 1400} {
			payload := bytes.Repeat([]byte{0x5a}, size)
			buf := make([]byte, esp.HeaderRoom+size+esp.TailRoom)
			copy(buf[esp.HeaderRoom:], payload)
			pkt, err := out.Seal(buf, esp.HeaderRoom, size, nextHeaderUDP)
			if err != nil {
				t.Fatal(err)
			}
			scratch := make([]byte, len(pkt))
			pt, err := b.open(pkt, scratch)
			if err != nil || !bytes.HasPrefix(pt, payload) || pt[len(pt)-1] != nextHeaderUDP {
				t.Errorf("%s/%s %dB: baseline open of esp's packet: err %v", s.EAlg, s.Auth, size, err)
			}
			pkt[len(pkt)/2] ^= 1
			if _, err := b.open(pkt, scratch); !errors.Is(err, errBaselineICV) {
				t.Errorf("%s/%s %dB: baseline accepted a flipped bit: %v", s.EAlg, s.Auth, size, err)
			}
		}
	}
}

func TestRunCodec(t *testing.T) {
	suites := CodecSuites()
	var calls int
	res, err := RunCodec(context.Background(), CodecConfig{
		Suites: suites,
		Sizes:  []int{64, 1400},
		Budget: time.Millisecond,
		Progress: func(n, total int, label string) {
			calls++
			if n != calls || total != 2*2*len(suites) || label == "" {
				t.Errorf("progress %d/%d %q at call %d", n, total, label, calls)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2*2*len(suites) || calls != len(res) {
		t.Fatalf("%d results, %d progress calls", len(res), calls)
	}
	for i, r := range res {
		s := suites[i/4]
		wantOp := []string{"seal", "open"}[i%2]
		wantSize := []int{64, 1400}[i/2%2]
		if r.EAlg != s.EAlg || r.Alg != string(s.Auth) || r.Op != wantOp || r.Size != wantSize {
			t.Errorf("row %d = %+v, want %s/%s %d %s", i, r, s.EAlg, s.Auth, wantSize, wantOp)
		}
		if !(r.MBps > 0 && r.PPS > 0 && r.BaselineMBps > 0 && r.Ratio > 0) || r.Allocs < 0 {
			t.Errorf("row %d: implausible numbers %+v", i, r)
		}
		if d := r.MBps - r.PPS*float64(r.Size)/1e6; d > 1e-6*r.MBps || d < -1e-6*r.MBps {
			t.Errorf("row %d: MB/s %v inconsistent with pkt/s %v", i, r.MBps, r.PPS)
		}
	}
}

func TestRunCodecCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := RunCodec(ctx, CodecConfig{Budget: time.Millisecond}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestRunCodecBadConfig(t *testing.T) {
	for _, cfg := range []CodecConfig{
		{Sizes: []int{0}},
		{Sizes: []int{MaxPacketSize + 1}},
		{Budget: -time.Second},
	} {
		if _, err := RunCodec(context.Background(), cfg); err == nil {
			t.Errorf("RunCodec(%+v) succeeded", cfg)
		}
	}
}

func TestFilterSuites(t *testing.T) {
	all := CodecSuites()
	cases := []struct {
		ealgs, algs []string
		want        int
		err         bool
	}{
		{nil, nil, len(all), false},
		{[]string{"aes-cbc"}, nil, 3, false},
		{[]string{"aes-gcm"}, nil, 2, false},
		{[]string{"aes-gcm(256)"}, nil, 1, false},
		{nil, []string{"hmac-sha-1-96"}, 3, false},
		{[]string{"aes-cbc"}, []string{"hmac-md5-96"}, 1, false},
		{[]string{"aes-gcm"}, []string{"hmac-md5-96"}, 0, true}, // nothing left
		{[]string{"rot13"}, nil, 0, true},
		{nil, []string{"crc32"}, 0, true},
	}
	for _, c := range cases {
		got, err := FilterSuites(all, c.ealgs, c.algs)
		if (err != nil) != c.err || len(got) != c.want {
			t.Errorf("FilterSuites(%v, %v) = %d suites, err %v; want %d, err %v", c.ealgs, c.algs, len(got), err, c.want, c.err)
		}
	}
}

// TestRunCodecBatch: with Batch the cells go through SealBatch and
// OpenBatch (which check every packet they open) for every suite, without
// allocating; a batch out of range is refused.
func TestRunCodecBatch(t *testing.T) {
	res, err := RunCodec(context.Background(), CodecConfig{
		Suites: CodecSuites(),
		Sizes:  []int{100, 1400},
		Budget: time.Millisecond,
		Batch:  9,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Batch != 9 || !(r.MBps > 0 && r.Ratio > 0) {
			t.Errorf("implausible row %+v", r)
		}
		if r.Allocs != 0 && !raceEnabled {
			t.Errorf("%s/%s %d %s x9: %v allocations per packet", r.EAlg, r.Alg, r.Size, r.Op, r.Allocs)
		}
	}
	for _, b := range []int{-1, maxCodecBatch + 1} {
		if _, err := RunCodec(context.Background(), CodecConfig{Suites: CodecSuites()[:1], Sizes: []int{64}, Budget: time.Millisecond, Batch: b}); err == nil {
			t.Errorf("batch %d accepted", b)
		}
	}
}
