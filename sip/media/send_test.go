package media

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// listenLoopback opens a kernel UDP socket on 127.0.0.1, closed at the end
// of the test.
func listenLoopback(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c net.PacketConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// startMeter runs a Meter on c until the returned stop is called.
func startMeter(t testing.TB, c net.PacketConn, cfg MeterConfig) (*Meter, func()) {
	m := NewMeter(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, c) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Meter.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return m, stop
}

// waitPackets waits until m has observed n packets, for at most 5 s.
func waitPackets(t testing.TB, m *Meter, n uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for m.Packets() < n {
		if time.Now().After(deadline) {
			t.Fatalf("meter saw %d packets, want %d", m.Packets(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func total(st SendStats) uint64 { return st.Audio.Packets + st.Video.Packets }

// checkClean requires a stream without loss, duplicates, reordering or
// broken frames, with the counts the sender gives, small jitter and delay.
// The bounds are loose: loopback on a loaded two-core machine.
func checkClean(t *testing.T, r Report, sent StreamStats, kind string) StreamReport {
	t.Helper()
	s, ok := r.Stream(sent.SSRC)
	if !ok {
		t.Fatalf("%s stream %#x not in report:\n%s", kind, sent.SSRC, r)
	}
	if s.Kind != kind || s.Packets != sent.Packets || s.Bytes != sent.Bytes || s.Expected != sent.Packets || s.Lost != 0 ||
		s.LossPercent != 0 || s.Duplicates != 0 || s.Reordered != 0 || s.Jumps != 0 || s.NoProbe != 0 || s.BadProbe != 0 {
		t.Errorf("%s: report %+v, sent %+v", kind, s, sent)
	}
	if s.FramesComplete != sent.Frames || s.FramesIncomplete != 0 || s.MarkerErrors != 0 {
		t.Errorf("%s: frames %d complete, %d incomplete, %d marker errors; sent %d", kind, s.FramesComplete, s.FramesIncomplete, s.MarkerErrors, sent.Frames)
	}
	// Jitter and delay are the machine's: on a busy one loopback alone
	// adds tens of milliseconds, so only their consistency and their units
	// are checked here (a second would be a unit error: the streams last
	// one); the arithmetic is checked against a model in meter_test.go.
	if s.JitterMs < 0 || s.JitterMs > 1000 || s.Delay.P50Ms > 1000 || s.Delay.MeanMs > 1000 || s.Delay.MeanMs < 0 ||
		s.Delay.Samples != sent.Packets || s.Delay.MaxMs < s.Delay.P95Ms || s.Delay.P95Ms < s.Delay.P50Ms {
		t.Errorf("%s: jitter %.3f ms, delay %+v", kind, s.JitterMs, s.Delay)
	}
	return s
}

func TestSendDirect(t *testing.T) {
	a, b := listenLoopback(t), listenLoopback(t)
	m, stop := startMeter(t, b, MeterConfig{})
	cfg := SendConfig{
		// Audio across the sequence and timestamp wraps.
		Audio:    &Audio{Start: Start{SSRC: 0xa0d10, Fixed: true, FirstSeq: 65520, FirstTimestamp: ^uint32(0) - 1000}},
		Video:    &Video{},
		Duration: time.Second,
	}
	st, err := Send(context.Background(), a, addrOf(b), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// 20 ms audio and 25 fps video for exactly one second.
	if st.Audio.Packets != 50 || st.Audio.Frames != 50 || st.Audio.Bytes != 50*(HeaderLen+160) || st.Audio.SSRC != 0xa0d10 {
		t.Errorf("audio sent %+v", st.Audio)
	}
	if st.Video.Frames != 25 || st.Video.Packets < 25+5 || st.Video.WriteErrors != 0 || st.Video.SSRC == 0 {
		t.Errorf("video sent %+v", st.Video)
	}
	waitPackets(t, m, total(st))
	stop()
	r := m.Report()
	t.Logf("\n%s", r)
	au := checkClean(t, r, st.Audio, "audio")
	vi := checkClean(t, r, st.Video, "video")
	if au.PayloadType != 0 || au.ClockRate != 8000 || vi.PayloadType != 96 || vi.ClockRate != 90000 || len(r.Streams) != 2 || r.Malformed != 0 {
		t.Errorf("report %+v", r)
	}
	// One key frame (about 8000 octets) and 24 deltas (about 1500).
	if payload := vi.Bytes - vi.Packets*HeaderLen; payload < 6400+24*1200 || payload > 9600+24*1800 {
		t.Errorf("video payload %d octets in 25 frames", payload)
	}
}

// lossyConn loses every every-th datagram written (the phase-th of each
// group), as a network would: the write succeeds. It keeps the probes of
// what it lost.
type lossyConn struct {
	net.PacketConn
	every, phase, n int
	lost            []Probe
}

func (c *lossyConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.n++
	if c.n%c.every == c.phase {
		_, p, _ := ParseRTP(b)
		pr, _ := ParseProbe(p)
		c.lost = append(c.lost, pr)
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

func TestSendLossy(t *testing.T) {
	a, b := listenLoopback(t), listenLoopback(t)
	m, stop := startMeter(t, b, MeterConfig{})
	// 100 audio packets, every 10th lost: packets 5, 15, ..., 95 (never
	// the first or last, so the expected count is exact).
	conn := &lossyConn{PacketConn: a, every: 10, phase: 5}
	st, err := Send(context.Background(), conn, addrOf(b), SendConfig{Audio: &Audio{Interval: 5 * time.Millisecond}, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if st.Audio.Packets != 100 || len(conn.lost) != 10 {
		t.Fatalf("sent %d, lost %d", st.Audio.Packets, len(conn.lost))
	}
	waitPackets(t, m, 90)
	stop()
	s, _ := m.Report().Stream(st.Audio.SSRC)
	if s.Packets != 90 || s.Expected != 100 || s.Lost != 10 || s.LossPercent != 10 || s.FramesComplete != 90 {
		t.Errorf("report %+v", s)
	}
}

// Lost video packets leave exactly the frames they belonged to incomplete;
// a frame lost whole is not seen at all.
func TestSendVideoFrames(t *testing.T) {
	a, b := listenLoopback(t), listenLoopback(t)
	m, stop := startMeter(t, b, MeterConfig{})
	conn := &lossyConn{PacketConn: a, every: 7, phase: 3}
	st, err := Send(context.Background(), conn, addrOf(b), SendConfig{
		Video: &Video{FPS: 100, KeyFrameInterval: 10}, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if st.Video.Frames != 50 {
		t.Fatalf("sent %d frames", st.Video.Frames)
	}
	lostPerFrame := map[uint32]int{}
	counts := map[uint32]int{}
	for _, p := range conn.lost {
		lostPerFrame[p.Frame]++
		counts[p.Frame] = int(p.Count)
	}
	var partial, whole uint64
	for f, n := range lostPerFrame {
		if n == counts[f] {
			whole++
		} else {
			partial++
		}
	}
	waitPackets(t, m, st.Video.Packets-uint64(len(conn.lost)))
	stop()
	s, _ := m.Report().Stream(st.Video.SSRC)
	if s.FramesComplete != 50-partial-whole || s.FramesIncomplete != partial || s.MarkerErrors != 0 {
		t.Errorf("frames %d complete, %d incomplete; want %d and %d (%d lost whole, %d packets lost of %d)",
			s.FramesComplete, s.FramesIncomplete, 50-partial-whole, partial, whole, len(conn.lost), st.Video.Packets)
	}
	if s.Packets != st.Video.Packets-uint64(len(conn.lost)) {
		t.Errorf("received %d of %d sent, %d lost", s.Packets, st.Video.Packets, len(conn.lost))
	}
}

// messyConn duplicates the 3rd and holds back the 6th datagram of every 10
// until after the next one.
type messyConn struct {
	net.PacketConn
	n        int
	held     []byte
	heldAddr net.Addr
	dups     int
}

func (c *messyConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.n++
	switch c.n % 10 {
	case 3:
		c.dups++
		c.PacketConn.WriteTo(b, addr)
	case 6:
		c.held, c.heldAddr = append([]byte(nil), b...), addr
		return len(b), nil
	}
	n, err := c.PacketConn.WriteTo(b, addr)
	if c.held != nil {
		c.flush()
	}
	return n, err
}

func (c *messyConn) flush() {
	if c.held != nil {
		c.PacketConn.WriteTo(c.held, c.heldAddr)
		c.held = nil
	}
}

func TestSendDuplicatesReordering(t *testing.T) {
	a, b := listenLoopback(t), listenLoopback(t)
	m, stop := startMeter(t, b, MeterConfig{})
	conn := &messyConn{PacketConn: a}
	st, err := Send(context.Background(), conn, addrOf(b), SendConfig{Audio: &Audio{Interval: 5 * time.Millisecond}, Duration: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	conn.flush()
	waitPackets(t, m, st.Audio.Packets+uint64(conn.dups))
	stop()
	s, _ := m.Report().Stream(st.Audio.SSRC)
	if s.Packets != 110 || s.Duplicates != 10 || s.Reordered != 10 || s.Lost != 0 || s.Expected != 100 || s.FramesComplete != 100 {
		t.Errorf("report %+v", s)
	}
}

func TestSendStops(t *testing.T) {
	a, b := listenLoopback(t), listenLoopback(t)
	// Duration 0 sends until ctx is done.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	st, err := Send(ctx, a, addrOf(b), SendConfig{Audio: &Audio{}})
	if !errors.Is(err, context.DeadlineExceeded) || st.Audio.Packets < 2 || st.Audio.Packets > 10 {
		t.Errorf("Send = %+v, %v", st, err)
	}
	// A closed conn ends it with net.ErrClosed.
	a.Close()
	if _, err := Send(context.Background(), a, addrOf(b), SendConfig{Audio: &Audio{}, Duration: time.Second}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("closed conn: %v", err)
	}
}

func TestSendConfigErrors(t *testing.T) {
	a := listenLoopback(t)
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	for name, tc := range map[string]struct {
		dst netip.AddrPort
		cfg SendConfig
	}{
		"no destination":     {netip.AddrPort{}, SendConfig{Audio: &Audio{}}},
		"port 0":             {netip.MustParseAddrPort("127.0.0.1:0"), SendConfig{Audio: &Audio{}}},
		"no stream":          {dst, SendConfig{}},
		"negative duration":  {dst, SendConfig{Audio: &Audio{}, Duration: -1}},
		"tiny audio payload": {dst, SendConfig{Audio: &Audio{PayloadSize: ProbeLen - 1}}},
		"huge audio payload": {dst, SendConfig{Audio: &Audio{PayloadSize: 70000}}},
		"audio PT 128":       {dst, SendConfig{Audio: &Audio{PayloadType: 128}}},
		"tiny video packets": {dst, SendConfig{Video: &Video{MaxPayload: 2*ProbeLen - 1}}},
		"variation 1":        {dst, SendConfig{Video: &Video{Variation: 1}}},
		"negative fps":       {dst, SendConfig{Video: &Video{FPS: -1}}},
		"frames too big":     {dst, SendConfig{Video: &Video{KeyFrameSize: 1 << 30}}},
		"shared SSRC":        {dst, SendConfig{Audio: &Audio{Start: Start{SSRC: 7}}, Video: &Video{Start: Start{SSRC: 7}}}},
	} {
		if _, err := Send(context.Background(), a, tc.dst, tc.cfg); !errors.Is(err, ErrSendConfig) {
			t.Errorf("%s: err = %v, want ErrSendConfig", name, err)
		}
	}
}

// Frame sizes follow the model: the key frames and deltas within ±20 % of
// their nominal sizes, the same for the same SSRC.
func TestVideoFrameSizes(t *testing.T) {
	sizes := func(ssrc uint32) []int {
		var st StreamStats
		s, err := newVideoStream(Video{Start: Start{SSRC: ssrc}}, &st, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		var out []int
		for k := range uint64(100) {
			out = append(out, s.frameSize(k))
		}
		return out
	}
	a, b := sizes(1), sizes(1)
	for k, n := range a {
		nominal := DefaultDeltaFrameSize
		if k%DefaultVideoFPS == 0 {
			nominal = DefaultKeyFrameSize
		}
		if float64(n) < 0.8*float64(nominal) || float64(n) > 1.2*float64(nominal) || n != b[k] {
			t.Errorf("frame %d: %d octets (again: %d), nominal %d", k, n, b[k], nominal)
		}
	}
	if c := sizes(2); c[1] == a[1] && c[2] == a[2] && c[3] == a[3] {
		t.Error("two SSRCs, same frame sizes")
	}
}
