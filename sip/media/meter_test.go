package media

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// rtpPacket builds a packet with a probe.
func rtpPacket(h Header, p Probe, size int) []byte {
	b := AppendRTP(nil, h, nil)
	b = AppendProbe(b, p)
	for len(b) < HeaderLen+size {
		b = append(b, 0xff)
	}
	return b
}

type modelPacket struct {
	ext  int64 // true extended sequence number
	ts   uint32
	sent int64
	at   int64
}

// model computes what a Meter must report for arrivals, the obvious way:
// a set of sequence numbers seen, sorted delays, A.8 written out.
type modelReport struct {
	expected, lost, unique, dups, reordered uint64
	jitterMs                                float64
	meanMs, p50Ms, p95Ms, maxMs             float64
}

func model(arr []modelPacket, rate float64) modelReport {
	var r modelReport
	seen := map[int64]bool{}
	first, maxExt := arr[0].ext, arr[0].ext
	var delays []int64
	var jitter, prevTransit float64
	have := false
	for _, a := range arr {
		if seen[a.ext] {
			r.dups++
			continue
		}
		seen[a.ext] = true
		if a.ext < maxExt {
			r.reordered++
		}
		maxExt = max(maxExt, a.ext)
		r.unique++
		// The timestamp, unwrapped: packets carry ts = ts0 + 160*i mod 2^32,
		// so transit is taken on the unwrapped value.
		transit := float64(a.at)*rate/1e9 - float64(a.ts)
		if have {
			d := transit - prevTransit
			// Undo a 2^32 wrap between the two timestamps.
			d = math.Remainder(d, 1<<32)
			jitter += (math.Abs(d) - jitter) / 16
		}
		have, prevTransit = true, transit
		delays = append(delays, a.at-a.sent)
	}
	r.expected = uint64(maxExt - first + 1)
	if r.expected > r.unique {
		r.lost = r.expected - r.unique
	}
	r.jitterMs = jitter / rate * 1000
	slices.Sort(delays)
	var sum float64
	for _, d := range delays {
		sum += float64(d)
	}
	r.meanMs = sum / float64(len(delays)) / 1e6
	rank := func(p float64) float64 {
		i := int(math.Ceil(p / 100 * float64(len(delays))))
		return float64(delays[max(i, 1)-1]) / 1e6
	}
	r.p50Ms, r.p95Ms, r.maxMs = rank(50), rank(95), float64(delays[len(delays)-1])/1e6
	return r
}

// channel loses, duplicates, reorders and delays a stream of n packets
// starting at startSeq and ts0, 20 ms apart.
func channel(r *rand.Rand, n int, startSeq uint16, ts0 uint32) []modelPacket {
	var sent []modelPacket
	for i := range n {
		s := int64(i) * int64(20*time.Millisecond)
		sent = append(sent, modelPacket{ext: int64(startSeq) + int64(i), ts: ts0 + uint32(i)*160, sent: s,
			at: s + int64(time.Millisecond) + r.Int64N(int64(8*time.Millisecond))})
	}
	var out []modelPacket
	for _, p := range sent {
		switch x := r.IntN(100); {
		case x < 5: // lost
		case x < 8: // duplicated, the copy a little later
			out = append(out, p)
			q := p
			q.at += int64(time.Millisecond)
			out = append(out, q)
		default:
			out = append(out, p)
		}
	}
	// Reorder: some packets overtaken by up to 3 later ones.
	for i := 0; i < len(out)-4; i++ {
		if r.IntN(100) < 6 {
			k := 1 + r.IntN(3)
			p := out[i]
			copy(out[i:], out[i+1:i+1+k])
			out[i+k] = p
			i += k
		}
	}
	return out
}

// The Meter against the model, over random channels that cross the 16-bit
// sequence wrap and the 32-bit timestamp wrap.
func TestMeterModel(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := range 50 {
		startSeq := uint16(65536 - 100 - r.IntN(1500))
		var ts0 uint32
		ts0 -= 160 * uint32(1+r.IntN(500)) // wraps within the stream
		arr := channel(r, 2000, startSeq, ts0)
		m := NewMeter(MeterConfig{})
		for _, a := range arr {
			h := Header{PayloadType: PayloadTypePCMU, Seq: uint16(a.ext), Timestamp: a.ts, SSRC: 0x5eed}
			m.Observe(rtpPacket(h, Probe{Kind: KindAudio, SendTime: a.sent, Frame: uint32(a.ext), Count: 1}, 160), a.at)
		}
		want := model(arr, 8000)
		rep := m.Report()
		if len(rep.Streams) != 1 {
			t.Fatalf("trial %d: %d streams", trial, len(rep.Streams))
		}
		s := rep.Streams[0]
		if s.Packets != uint64(len(arr)) || s.Expected != want.expected || s.Lost != want.lost ||
			s.Duplicates != want.dups || s.Reordered != want.reordered || s.Jumps != 0 || s.Restarts != 0 {
			t.Errorf("trial %d: packets %d expected %d lost %d dups %d reordered %d jumps %d; model: %d %d %d %d %d",
				trial, s.Packets, s.Expected, s.Lost, s.Duplicates, s.Reordered, s.Jumps,
				len(arr), want.expected, want.lost, want.dups, want.reordered)
		}
		if wantPct := 100 * float64(want.lost) / float64(want.expected); math.Abs(s.LossPercent-wantPct) > 1e-9 {
			t.Errorf("trial %d: loss %v%%, model %v%%", trial, s.LossPercent, wantPct)
		}
		if math.Abs(s.JitterMs-want.jitterMs) > 1e-6 {
			t.Errorf("trial %d: jitter %v ms, model %v ms", trial, s.JitterMs, want.jitterMs)
		}
		d := s.Delay
		if d.Samples != want.unique || math.Abs(d.MeanMs-want.meanMs) > 1e-9 || d.P50Ms != want.p50Ms || d.P95Ms != want.p95Ms || d.MaxMs != want.maxMs {
			t.Errorf("trial %d: delay %+v, model %+v", trial, d, want)
		}
		if s.FramesComplete != want.unique || s.FramesIncomplete != 0 || s.MarkerErrors != 0 {
			t.Errorf("trial %d: frames %d/%d, marker errors %d; want %d complete", trial, s.FramesComplete, s.FramesIncomplete, s.MarkerErrors, want.unique)
		}
	}
}

type seqCounts struct {
	expected, lost, dups, reord, jumps, r uint64
}

type seqCase struct {
	seqs []uint16
	seqCounts
}

func TestMeterSequence(t *testing.T) {
	for name, tc := range map[string]seqCase{
		"in order":                {seqs: []uint16{10, 11, 12}, seqCounts: seqCounts{expected: 3}},
		"wrap":                    {seqs: []uint16{65534, 65535, 0, 1}, seqCounts: seqCounts{expected: 4}},
		"wrap with loss":          {seqs: []uint16{65534, 0, 1}, seqCounts: seqCounts{expected: 4, lost: 1}},
		"late across wrap":        {seqs: []uint16{65535, 1, 0}, seqCounts: seqCounts{expected: 3, reord: 1}},
		"late before first":       {seqs: []uint16{5, 4, 6}, seqCounts: seqCounts{expected: 2, reord: 1}},
		"duplicate":               {seqs: []uint16{1, 2, 2, 3, 1}, seqCounts: seqCounts{expected: 3, dups: 2}},
		"duplicate across wrap":   {seqs: []uint16{65535, 0, 65535}, seqCounts: seqCounts{expected: 2, dups: 1}},
		"gap under dropout":       {seqs: []uint16{1, 2999}, seqCounts: seqCounts{expected: 2999, lost: 2997}},
		"one far packet ignored":  {seqs: []uint16{1, 2, 40000, 3}, seqCounts: seqCounts{expected: 3, jumps: 1}},
		"restart (two far ones)":  {seqs: []uint16{1, 2, 40000, 40001, 40002}, seqCounts: seqCounts{expected: 2 + 2, jumps: 1, r: 1}},
		"too late is a jump":      {seqs: []uint16{1000, 1001, 800}, seqCounts: seqCounts{expected: 2, jumps: 1}},
		"duplicate of the newest": {seqs: []uint16{7, 7, 7}, seqCounts: seqCounts{expected: 1, dups: 2}},
	} {
		m := NewMeter(MeterConfig{})
		for i, seq := range tc.seqs {
			m.Observe(AppendRTP(nil, Header{Seq: seq, SSRC: 1, Timestamp: uint32(i) * 160}, nil), int64(i)*20e6)
		}
		s := m.Report().Streams[0]
		got := seqCounts{expected: s.Expected, lost: s.Lost, dups: s.Duplicates, reord: s.Reordered, jumps: s.Jumps, r: s.Restarts}
		n := len(tc.seqs)
		if got != tc.seqCounts {
			t.Errorf("%s: got %+v, want %+v", name, got, tc.seqCounts)
		}
		if s.Packets != uint64(n) || s.NoProbe != s.Packets-s.Jumps-s.Duplicates {
			t.Errorf("%s: no_probe %d of %d packets", name, s.NoProbe, s.Packets)
		}
	}
}

// Jitter of a perfectly paced stream is 0; a constant offset changes
// nothing; one packet 10 ms late gives |D| = 80 units twice (late, then
// back), and J follows A.8 exactly.
func TestMeterJitter(t *testing.T) {
	m := NewMeter(MeterConfig{})
	for i := range 100 {
		at := int64(i)*20e6 + 5e6
		if i == 50 {
			at += 10e6
		}
		m.Observe(AppendRTP(nil, Header{Seq: uint16(i), SSRC: 1, Timestamp: ^uint32(0) - 799 + uint32(i)*160}, nil), at)
	}
	var j float64
	for i := 1; i < 100; i++ {
		d := 0.0
		if i == 50 || i == 51 {
			d = 80 // 10 ms at 8000 Hz
		}
		j += (d - j) / 16
	}
	if got := m.Report().Streams[0].JitterMs; math.Abs(got-j/8) > 1e-9 {
		t.Errorf("jitter %v ms, want %v", got, j/8)
	}
	// Clock rate from the configuration: the same arrivals at 90 kHz.
	m = NewMeter(MeterConfig{ClockRates: map[uint8]uint32{0: 90000}})
	for i := range 10 {
		m.Observe(AppendRTP(nil, Header{Seq: uint16(i), SSRC: 1, Timestamp: uint32(i) * 3600}, nil), int64(i)*40e6)
	}
	if s := m.Report().Streams[0]; s.ClockRate != 90000 || s.JitterMs > 1e-9 {
		t.Errorf("90 kHz: clock rate %d, jitter %v", s.ClockRate, s.JitterMs)
	}
}

func TestMeterFrames(t *testing.T) {
	m := NewMeter(MeterConfig{})
	send := func(seq uint16, frame uint32, idx, count uint16, marker bool) {
		h := Header{Marker: marker, PayloadType: 96, Seq: seq, Timestamp: frame * 3600, SSRC: 2}
		m.Observe(rtpPacket(h, Probe{Kind: KindVideo, Frame: frame, Index: idx, Count: count}, 100), int64(seq)*1e6)
	}
	// Frame 0: three packets, complete, in order.
	send(0, 0, 0, 3, false)
	send(1, 0, 1, 3, false)
	send(2, 0, 2, 3, true)
	// Frame 1: two packets, the last arrives first, the first twice.
	send(4, 1, 1, 2, true)
	send(3, 1, 0, 2, false)
	send(3, 1, 0, 2, false)
	// Frame 2: middle packet lost.
	send(5, 2, 0, 3, false)
	send(7, 2, 2, 3, true)
	// Frame 3: marker on the wrong packet.
	send(8, 3, 0, 2, true)
	send(9, 3, 1, 2, false)
	s := m.Report().Streams[0]
	if s.Kind != "video" || s.FramesComplete != 3 || s.FramesIncomplete != 1 || s.MarkerErrors != 2 || s.Lost != 1 || s.Duplicates != 1 || s.Reordered != 1 {
		t.Errorf("got %+v", s)
	}
	// Frame 2's slot is needed again 64 frames later: it counts as dropped
	// there, and no longer as pending.
	send(10, 2+frameSlots, 0, 1, true)
	s = m.Report().Streams[0]
	if s.FramesComplete != 4 || s.FramesIncomplete != 1 {
		t.Errorf("after reuse: complete %d incomplete %d", s.FramesComplete, s.FramesIncomplete)
	}
	// A packet whose count disagrees with its frame's.
	send(11, 100, 0, 2, false)
	send(12, 100, 1, 3, false)
	if s = m.Report().Streams[0]; s.BadProbe != 1 {
		t.Errorf("bad probe %d, want 1", s.BadProbe)
	}
}

func TestMeterMalformed(t *testing.T) {
	m := NewMeter(MeterConfig{})
	m.Observe([]byte("not rtp at all"), 0)
	m.Observe(nil, 0)
	// An RTCP receiver report (PT 201) on the RTP port.
	m.Observe(mustHex(t, "81c90007000000010000000000000000000000000000000000000000000000"), 0)
	// RTP with a foreign payload and with a broken probe.
	m.Observe(AppendRTP(nil, Header{SSRC: 3}, []byte("hello, this is not a probe")), 0)
	bad := AppendProbe(nil, Probe{Kind: KindAudio, Count: 1})
	bad[19] = 0 // count 0
	m.Observe(AppendRTP(nil, Header{SSRC: 3, Seq: 1}, bad), 0)
	r := m.Report()
	if r.Malformed != 3 || len(r.Streams) != 1 || r.Streams[0].NoProbe != 1 || r.Streams[0].BadProbe != 1 || r.Streams[0].Kind != "" || r.Streams[0].Delay.Samples != 0 {
		t.Errorf("report %+v", r)
	}
	if m.Packets() != 2 {
		t.Errorf("Packets() = %d, want 2", m.Packets())
	}
}

// The delay reservoir keeps at most MaxDelaySamples samples while mean and
// max cover every packet.
func TestMeterDelayReservoir(t *testing.T) {
	m := NewMeter(MeterConfig{MaxDelaySamples: 100})
	for i := range 10000 {
		d := int64(1e6) // 1 ms
		if i == 5000 {
			d = 500e6
		}
		m.Observe(rtpPacket(Header{Seq: uint16(i), SSRC: 1, Timestamp: uint32(i) * 160}, Probe{Kind: KindAudio, SendTime: int64(i) * 20e6, Frame: uint32(i), Count: 1}, 40), int64(i)*20e6+d)
	}
	s := m.Report().Streams[0]
	if len(m.streams[1].delays) != 100 || s.Delay.Samples != 10000 || s.Delay.MaxMs != 500 || s.Delay.P50Ms != 1 {
		t.Errorf("delay %+v with %d samples kept", s.Delay, len(m.streams[1].delays))
	}
	if want := (9999*1.0 + 500) / 10000; math.Abs(s.Delay.MeanMs-want) > 1e-9 {
		t.Errorf("mean %v, want %v", s.Delay.MeanMs, want)
	}
}

func TestReportFormats(t *testing.T) {
	m := NewMeter(MeterConfig{})
	for i := range 10 {
		if i == 4 {
			continue
		}
		m.Observe(rtpPacket(Header{Seq: uint16(i), SSRC: 0xabcd, Timestamp: uint32(i) * 160}, Probe{Kind: KindAudio, SendTime: int64(i) * 20e6, Frame: uint32(i), Count: 1}, 160), int64(i)*20e6+2e6)
	}
	r := m.Report()
	str := r.String()
	for _, want := range []string{"ssrc", "loss%", "jitter", "0x0000abcd", "audio", "10.00", "2.00/2.00/2.00/2.00ms", "9/9"} {
		if !strings.Contains(str, want) {
			t.Errorf("String() lacks %q:\n%s", want, str)
		}
	}
	if n := strings.Count(str, "\n"); n != 2 {
		t.Errorf("String() has %d lines, want 2:\n%s", n, str)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"streams"`, `"ssrc":43981`, `"loss_percent":10`, `"jitter_ms"`, `"frames_complete":9`, `"p95_ms":2`, `"payload_type":0`, `"malformed":0`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
	if s, ok := r.Stream(0xabcd); !ok || s.Lost != 1 {
		t.Errorf("Stream(0xabcd) = %+v, %v", s, ok)
	}
	if _, ok := r.Stream(1); ok {
		t.Error("Stream(1) found")
	}
}

func TestDefaultClockRate(t *testing.T) {
	for pt, want := range map[uint8]uint32{0: 8000, 8: 8000, 9: 8000, 6: 16000, 10: 44100, 26: 90000, 96: 90000, 127: 90000} {
		if got := DefaultClockRate(pt); got != want {
			t.Errorf("DefaultClockRate(%d) = %d, want %d", pt, got, want)
		}
	}
}

func BenchmarkMeterObserve(b *testing.B) {
	m := NewMeter(MeterConfig{MaxDelaySamples: 1024})
	pkts := make([][]byte, 256)
	for i := range pkts {
		pkts[i] = rtpPacket(Header{Seq: uint16(i), SSRC: 1, Timestamp: uint32(i) * 160}, Probe{Kind: KindAudio, Frame: uint32(i), Count: 1}, 160)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := pkts[i%len(pkts)]
		// Keep sequence numbers moving forward.
		p[2], p[3] = byte(i>>8), byte(i)
		m.Observe(p, int64(i)*20e6)
		i++
	}
}

// TestMeterDrain: Drain returns once packets stop arriving (not before the
// last one), and within max when they never stop.
func TestMeterDrain(t *testing.T) {
	m := NewMeter(MeterConfig{})
	ctx := context.Background()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20 {
			m.Observe(AppendRTP(nil, Header{Seq: uint16(i), SSRC: 1, Timestamp: uint32(i) * 160}, nil), int64(i)*20e6)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	m.Drain(ctx, 250*time.Millisecond, 10*time.Second)
	<-done
	if n := m.Packets(); n != 20 {
		t.Fatalf("Drain returned with %d of 20 packets observed", n)
	}

	// A sender that never stops: Drain gives up at max.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			m.Observe(AppendRTP(nil, Header{Seq: uint16(i), SSRC: 2, Timestamp: uint32(i) * 160}, nil), int64(i)*20e6)
			time.Sleep(time.Millisecond)
		}
	}()
	start := time.Now()
	m.Drain(ctx, 50*time.Millisecond, 200*time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Drain took %v with max 200ms", d)
	}
}
