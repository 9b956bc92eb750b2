package media

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Sequence number rules of RFC 3550 Appendix A.1.
const (
	seqMod      = 1 << 16
	maxDropout  = 3000 // a jump forward of fewer than this many is loss, not a restart
	maxMisorder = 100  // a packet this many behind the highest is late, not a restart
	// dupWindow is how many sequence numbers behind the highest a Meter
	// remembers to tell duplicates from late packets.
	dupWindow = 1024

	// frameSlots is how many frames of a stream a Meter assembles at once.
	frameSlots = 64
)

// DefaultMaxDelaySamples bounds the one-way delays a Meter keeps per stream
// for its percentiles; past it, it keeps a uniform sample of them
// (reservoir sampling). Mean and max always cover every packet.
const DefaultMaxDelaySamples = 1 << 16

// MeterConfig configures a Meter. The zero value is ready to use.
type MeterConfig struct {
	// ClockRates maps payload types to RTP clock rates, for jitter;
	// Description.ClockRates gives them from an SDP. Missing types take
	// DefaultClockRate.
	ClockRates map[uint8]uint32
	// Now reads the arrival time on the media clock; nil: Now.
	Now func() int64
	// MaxDelaySamples: 0 is DefaultMaxDelaySamples.
	MaxDelaySamples int
}

// DefaultClockRate is the RTP clock rate of a static payload type of
// RFC 3551 §6 (Tables 4 and 5); for a dynamic type (96 to 127) and the
// unassigned ones it is 90000 Hz, the rate our SDP gives type 96.
func DefaultClockRate(pt uint8) uint32 {
	switch pt {
	case 0, 3, 4, 5, 7, 8, 9, 12, 13, 15, 18:
		return 8000 // PCMU, GSM, G723, DVI4/8000, LPC, PCMA, G722, QCELP, CN, G728, G729
	case 6:
		return 16000 // DVI4/16000
	case 10, 11:
		return 44100 // L16
	case 16:
		return 11025 // DVI4/11025
	case 17:
		return 22050 // DVI4/22050
	}
	return ClockRateVideo
}

// Meter measures the RTP streams it is given, per SSRC: packets, loss,
// duplicates and reordering from sequence numbers (RFC 3550 Appendix A.1
// and A.3, with wrap-around), interarrival jitter (Appendix A.8), one-way
// delay from the probes Send writes, and the assembly of video frames. It
// is safe for concurrent use: one goroutine may Run it while others call
// Report.
type Meter struct {
	now        func() int64
	rates      map[uint8]uint32
	maxSamples int

	mu        sync.Mutex
	streams   map[uint32]*streamMeter
	order     []*streamMeter // by first arrival
	malformed uint64
	total     uint64
}

// NewMeter returns a Meter with no streams yet.
func NewMeter(cfg MeterConfig) *Meter {
	m := &Meter{now: cfg.Now, rates: cfg.ClockRates, maxSamples: cfg.MaxDelaySamples, streams: map[uint32]*streamMeter{}}
	if m.now == nil {
		m.now = Now
	}
	if m.maxSamples <= 0 {
		m.maxSamples = DefaultMaxDelaySamples
	}
	return m
}

// Run reads datagrams from conn and observes each until ctx is done (it
// then returns ctx.Err() and leaves conn with a read deadline in the past)
// or conn is closed (nil). Other read errors end it too.
func (m *Meter) Run(ctx context.Context, conn net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	pc := newPacketConn(conn)
	buf := make([]byte, 64<<10)
	for {
		n, _, err := pc.read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if errors.Is(err, errNotUDP) {
				continue
			}
			return err
		}
		m.Observe(buf[:n], m.now())
	}
}

// Observe measures one datagram that arrived at arrival (media clock
// nanoseconds). It does not keep pkt. Datagrams that are not RTP version 2,
// and RTCP multiplexed on the port (RFC 5761 §4: payload types 72 to 76
// with the marker bit, i.e. packet types 200 to 204), count as malformed.
func (m *Meter) Observe(pkt []byte, arrival int64) {
	h, payload, err := ParseRTP(pkt)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil || (h.Marker && h.PayloadType >= 72 && h.PayloadType <= 76) {
		m.malformed++
		return
	}
	m.total++
	s := m.streams[h.SSRC]
	if s == nil {
		rate, ok := m.rates[h.PayloadType]
		if !ok || rate == 0 {
			rate = DefaultClockRate(h.PayloadType)
		}
		s = &streamMeter{ssrc: h.SSRC, pt: h.PayloadType, rate: rate, maxSamples: m.maxSamples,
			rng: rand.New(rand.NewPCG(uint64(h.SSRC), 1))}
		m.streams[h.SSRC] = s
		m.order = append(m.order, s)
	}
	s.observe(h, payload, len(pkt), arrival)
}

// Packets is how many RTP packets the Meter has observed, every stream
// together, duplicates included.
func (m *Meter) Packets() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total
}

// Drain waits until no packet has arrived for quiet (the peer's last
// packets in flight have landed), at most max, or until ctx ends. A call's
// end uses it before reading the Report: the media stops on both sides at
// about the same time, and packets still on the wire count.
func (m *Meter) Drain(ctx context.Context, quiet, max time.Duration) {
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	t := time.NewTimer(quiet)
	defer t.Stop()
	last := m.Packets()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			return
		case <-t.C:
			n := m.Packets()
			if n == last {
				return
			}
			last = n
			t.Reset(quiet)
		}
	}
}

// streamMeter is the state of one SSRC.
type streamMeter struct {
	ssrc       uint32
	pt         uint8
	rate       uint32
	kind       Kind
	maxSamples int

	packets, bytes    uint64
	unique            uint64 // packets that were not duplicates
	dups, reordered   uint64
	jumps, restarts   uint64
	first, last       int64 // arrival times
	noProbe, badProbe uint64

	// RFC 3550 A.1, without probation (our sources need no validation).
	started       bool
	maxSeq        uint16
	cycles        uint64 // count of wraps, times 2^16
	baseSeq       uint64 // extended sequence number of the first packet of this run
	badSeq        uint32 // seqMod+1 when no restart is pending
	expectedPrior uint64 // expected packets of runs before a restart

	// Duplicate window over extended sequence numbers.
	marked  bool
	highest int64
	window  [dupWindow / 64]uint64

	// RFC 3550 A.8.
	haveTransit bool
	prevArrival float64 // in RTP timestamp units
	prevTS      uint32
	jitter      float64 // in RTP timestamp units

	// One-way delay, nanoseconds.
	delays   []int64
	delayN   uint64
	delaySum float64
	delayMax int64
	rng      *rand.Rand

	frames                        [frameSlots]frameSlot
	framesComplete, framesDropped uint64
	markerErrors, frameMismatches uint64
}

type frameSlot struct {
	used       bool
	frame      uint32
	count, got uint16
}

func (s *streamMeter) observe(h Header, payload []byte, size int, arrival int64) {
	s.packets++
	s.bytes += uint64(size)
	if s.packets == 1 {
		s.first = arrival
	}
	s.last = arrival

	ext, ok := s.sequence(h.Seq)
	if !ok {
		s.jumps++
		return
	}
	dup, late := s.mark(ext)
	if dup {
		s.dups++
		return
	}
	if late {
		s.reordered++
	}
	s.unique++
	s.interarrival(h.Timestamp, arrival)

	p, err := ParseProbe(payload)
	switch {
	case errors.Is(err, ErrProbeShort) || errors.Is(err, ErrProbeMagic):
		s.noProbe++
		return
	case err != nil:
		s.badProbe++
		return
	}
	if s.kind == 0 {
		s.kind = p.Kind
	}
	s.delay(arrival - p.SendTime)
	s.frame(h, p)
}

// sequence follows update_seq of RFC 3550 A.1 and returns the packet's
// extended sequence number, or false for a jump that is neither loss nor
// lateness (the packet is not counted, as in A.1).
func (s *streamMeter) sequence(seq uint16) (int64, bool) {
	if !s.started {
		s.started = true
		s.restart(seq)
		return int64(s.baseSeq), true
	}
	udelta := seq - s.maxSeq
	switch {
	case udelta < maxDropout:
		// In order, with a permissible gap.
		if seq < s.maxSeq {
			s.cycles += seqMod
		}
		s.maxSeq = seq
		return int64(s.cycles + uint64(seq)), true
	case udelta <= seqMod-maxMisorder:
		// A very large jump. Two in a row mean the source restarted.
		if uint32(seq) == s.badSeq {
			s.expectedPrior += s.expected()
			s.restarts++
			s.restart(seq)
			return int64(s.baseSeq), true
		}
		s.badSeq = uint32(seq+1) & (seqMod - 1)
		return 0, false
	default:
		// Behind the highest: late or duplicate.
		return int64(s.cycles+uint64(s.maxSeq)) - int64(s.maxSeq-seq), true
	}
}

// restart starts a run of sequence numbers at seq (init_seq of A.1). The
// extended numbers of a new run continue above the old ones, so the
// duplicate window stays meaningful.
func (s *streamMeter) restart(seq uint16) {
	// The first run starts one cycle up, so that a packet from before the
	// first one (at most maxMisorder late) still has a positive number.
	base := uint64(seqMod)
	if s.restarts > 0 {
		base = (uint64(s.highest)/seqMod + 2) * seqMod
	}
	s.maxSeq = seq
	s.cycles = base
	s.baseSeq = base + uint64(seq)
	s.badSeq = seqMod + 1
}

// expected is A.3's expected count for the current run.
func (s *streamMeter) expected() uint64 {
	return s.cycles + uint64(s.maxSeq) - s.baseSeq + 1
}

// mark records ext in the duplicate window: dup if it was seen, late if it
// is below the highest seen.
func (s *streamMeter) mark(ext int64) (dup, late bool) {
	if !s.marked {
		s.marked = true
		s.highest = ext
		s.window = [dupWindow / 64]uint64{}
		s.setBit(ext)
		return false, false
	}
	if ext > s.highest {
		if ext-s.highest >= dupWindow {
			s.window = [dupWindow / 64]uint64{}
		} else {
			for e := s.highest + 1; e < ext; e++ {
				s.clearBit(e)
			}
		}
		s.highest = ext
		s.setBit(ext)
		return false, false
	}
	if s.highest-ext >= dupWindow {
		return false, true // too old to tell; call it late
	}
	if s.bit(ext) {
		return true, false
	}
	s.setBit(ext)
	return false, ext < s.highest
}

func (s *streamMeter) bit(e int64) bool { i := e % dupWindow; return s.window[i/64]&(1<<(i%64)) != 0 }
func (s *streamMeter) setBit(e int64)   { i := e % dupWindow; s.window[i/64] |= 1 << (i % 64) }
func (s *streamMeter) clearBit(e int64) { i := e % dupWindow; s.window[i/64] &^= 1 << (i % 64) }

// interarrival updates the jitter estimate of RFC 3550 A.8: with transit
// time arrival - timestamp (in timestamp units), D = the change in transit
// from the previous packet, J += (|D| - J) / 16. The timestamp difference
// is taken modulo 2^32, so a timestamp wrap is no jump.
func (s *streamMeter) interarrival(ts uint32, arrival int64) {
	a := float64(arrival) * float64(s.rate) / 1e9
	if s.haveTransit {
		d := (a - s.prevArrival) - float64(int32(ts-s.prevTS))
		s.jitter += (math.Abs(d) - s.jitter) / 16
	}
	s.haveTransit = true
	s.prevArrival, s.prevTS = a, ts
}

func (s *streamMeter) delay(d int64) {
	s.delayN++
	s.delaySum += float64(d)
	if s.delayN == 1 || d > s.delayMax {
		s.delayMax = d
	}
	if len(s.delays) < s.maxSamples {
		s.delays = append(s.delays, d)
		return
	}
	if j := s.rng.Uint64N(s.delayN); j < uint64(len(s.delays)) {
		s.delays[j] = d
	}
}

// frame assembles frames from their packets' probes: a frame is complete
// when Count distinct packets of it have arrived (duplicates never get
// here). A frame still incomplete when its slot is needed by a frame 64
// later is dropped. Video packets must carry the marker bit exactly on the
// last packet of a frame.
func (s *streamMeter) frame(h Header, p Probe) {
	if p.Kind == KindVideo && h.Marker != (p.Index == p.Count-1) {
		s.markerErrors++
	}
	sl := &s.frames[p.Frame%frameSlots]
	if !sl.used || sl.frame != p.Frame {
		if sl.used {
			s.framesDropped++
		}
		*sl = frameSlot{used: true, frame: p.Frame, count: p.Count}
	}
	if p.Count != sl.count {
		s.frameMismatches++
		return
	}
	sl.got++
	if sl.got == sl.count {
		s.framesComplete++
		sl.used = false
	}
}

// Report is a Meter's measurements.
type Report struct {
	Streams []StreamReport `json:"streams"` // in order of first arrival
	// Malformed counts datagrams that were not RTP (or were RTCP).
	Malformed uint64 `json:"malformed"`
}

// StreamReport is what a Meter measured on one SSRC.
type StreamReport struct {
	SSRC        uint32 `json:"ssrc"`
	Kind        string `json:"kind"` // from the probes: audio or video; empty if none had one
	PayloadType uint8  `json:"payload_type"`
	ClockRate   uint32 `json:"clock_rate"`

	Packets uint64 `json:"packets"` // every packet that arrived, duplicates included
	Bytes   uint64 `json:"bytes"`   // their RTP octets
	// Expected is the count RFC 3550 A.3 expects from the highest and
	// first sequence numbers of the stream (summed over source restarts).
	Expected uint64 `json:"expected"`
	// Lost is Expected less the packets that arrived, not counting
	// duplicates (A.3 counts them, and so can go negative); never below 0.
	Lost        uint64  `json:"lost"`
	LossPercent float64 `json:"loss_percent"`
	Duplicates  uint64  `json:"duplicates"`
	Reordered   uint64  `json:"reordered"` // arrived after a higher sequence number
	// Jumps counts packets dropped by A.1 as too far from the others to be
	// loss or lateness; Restarts, jumps confirmed by a second packet, which
	// start a new run of sequence numbers.
	Jumps    uint64 `json:"jumps"`
	Restarts uint64 `json:"restarts"`

	JitterMs float64    `json:"jitter_ms"` // RFC 3550 A.8, in milliseconds
	Delay    DelayStats `json:"delay"`

	FramesComplete   uint64 `json:"frames_complete"`
	FramesIncomplete uint64 `json:"frames_incomplete"` // dropped unfinished, or still unfinished at the report
	MarkerErrors     uint64 `json:"marker_errors"`
	// NoProbe counts packets without our probe (foreign payloads), BadProbe
	// packets whose probe is inconsistent (in itself, or with the other
	// packets of its frame); they feed neither delay nor frames (BadProbe
	// ones that only disagree with their frame do feed delay).
	NoProbe  uint64 `json:"no_probe"`
	BadProbe uint64 `json:"bad_probe"`

	DurationMs float64 `json:"duration_ms"` // first to last arrival
}

// DelayStats summarises one-way delays in milliseconds. Percentiles come
// from at most MaxDelaySamples samples (nearest rank).
type DelayStats struct {
	Samples uint64  `json:"samples"`
	MeanMs  float64 `json:"mean_ms"`
	P50Ms   float64 `json:"p50_ms"`
	P95Ms   float64 `json:"p95_ms"`
	MaxMs   float64 `json:"max_ms"`
}

// Report returns the measurements so far.
func (m *Meter) Report() Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := Report{Malformed: m.malformed, Streams: make([]StreamReport, 0, len(m.order))}
	for _, s := range m.order {
		r.Streams = append(r.Streams, s.report())
	}
	return r
}

func (s *streamMeter) report() StreamReport {
	r := StreamReport{
		SSRC: s.ssrc, Kind: s.kind.String(), PayloadType: s.pt, ClockRate: s.rate,
		Packets: s.packets, Bytes: s.bytes, Duplicates: s.dups, Reordered: s.reordered,
		Jumps: s.jumps, Restarts: s.restarts,
		JitterMs:       s.jitter / float64(s.rate) * 1000,
		FramesComplete: s.framesComplete, FramesIncomplete: s.framesDropped, MarkerErrors: s.markerErrors,
		NoProbe: s.noProbe, BadProbe: s.badProbe + s.frameMismatches,
		DurationMs: float64(s.last-s.first) / 1e6,
	}
	if s.kind == 0 {
		r.Kind = "" // no probe seen
	}
	if s.started {
		r.Expected = s.expectedPrior + s.expected()
	}
	if r.Expected > s.unique {
		r.Lost = r.Expected - s.unique
	}
	if r.Expected > 0 {
		r.LossPercent = 100 * float64(r.Lost) / float64(r.Expected)
	}
	for _, sl := range s.frames {
		if sl.used {
			r.FramesIncomplete++
		}
	}
	if s.delayN > 0 {
		sorted := slices.Clone(s.delays)
		slices.Sort(sorted)
		r.Delay = DelayStats{
			Samples: s.delayN,
			MeanMs:  s.delaySum / float64(s.delayN) / 1e6,
			P50Ms:   float64(percentile(sorted, 50)) / 1e6,
			P95Ms:   float64(percentile(sorted, 95)) / 1e6,
			MaxMs:   float64(s.delayMax) / 1e6,
		}
	}
	return r
}

// percentile is the nearest-rank percentile of sorted, which is not empty.
func percentile(sorted []int64, p int) int64 {
	rank := (p*len(sorted) + 99) / 100 // ⌈p/100 × n⌉
	return sorted[max(rank, 1)-1]
}

// Stream returns the report of one SSRC.
func (r Report) Stream(ssrc uint32) (StreamReport, bool) {
	i := slices.IndexFunc(r.Streams, func(s StreamReport) bool { return s.SSRC == ssrc })
	if i < 0 {
		return StreamReport{}, false
	}
	return r.Streams[i], true
}

// String is a short table, one line per stream:
//
//	ssrc        kind   pt  pkts  lost  loss%  dup  reord  jitter  delay mean/p50/p95/max  frames
//	0x1234abcd  audio  0   50    0     0.00   0    0      0.02ms  0.08/0.07/0.15/0.31ms   50/50
func (r Report) String() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ssrc\tkind\tpt\tpkts\tlost\tloss%\tdup\treord\tjitter\tdelay mean/p50/p95/max\tframes")
	streams := slices.Clone(r.Streams)
	slices.SortStableFunc(streams, func(a, b StreamReport) int { return cmp.Compare(a.Kind, b.Kind) })
	for _, s := range streams {
		kind := s.Kind
		if kind == "" {
			kind = "-"
		}
		fmt.Fprintf(w, "%#08x\t%s\t%d\t%d\t%d\t%.2f\t%d\t%d\t%.2fms\t%.2f/%.2f/%.2f/%.2fms\t%d/%d\n",
			s.SSRC, kind, s.PayloadType, s.Packets, s.Lost, s.LossPercent, s.Duplicates, s.Reordered, s.JitterMs,
			s.Delay.MeanMs, s.Delay.P50Ms, s.Delay.P95Ms, s.Delay.MaxMs,
			s.FramesComplete, s.FramesComplete+s.FramesIncomplete)
	}
	if r.Malformed > 0 {
		fmt.Fprintf(w, "malformed datagrams: %d\n", r.Malformed)
	}
	w.Flush()
	return b.String()
}
