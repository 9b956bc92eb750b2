package media

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"
)

// Defaults of the synthetic streams (see Audio and Video).
const (
	DefaultAudioPayload    = 160                   // octets: 20 ms of PCMU
	DefaultAudioInterval   = 20 * time.Millisecond // packetisation time
	DefaultVideoFPS        = 25
	DefaultVideoMaxPayload = 1200 // octets of RTP payload per packet
	DefaultKeyFrameSize    = 8000 // octets
	DefaultDeltaFrameSize  = 1500 // octets
	DefaultFrameVariation  = 0.2  // frame sizes vary by up to ±20 %
)

const (
	minVideoMaxPayload      = 2 * ProbeLen
	maxPayload              = 65000 // leaves room for RTP, UDP and IP headers in 64 KiB
	maxPacketsPerFrame      = math.MaxUint16
	filler             byte = 0xff // payload after the probe (PCMU silence)
)

// Start fixes where a stream's numbering begins. The zero value draws the
// SSRC, the first sequence number and the first timestamp at random, as
// RFC 3550 §5.1 asks.
type Start struct {
	SSRC           uint32 // 0: random
	Fixed          bool   // use FirstSeq and FirstTimestamp, not random ones
	FirstSeq       uint16
	FirstTimestamp uint32
}

// Audio is an audio-like stream: one packet of PayloadSize octets every
// Interval, RTP timestamps advancing by Interval at ClockRate, marker on
// the first packet (the start of a talkspurt, RFC 3551 §4.1). Zero fields
// take the defaults: 160 octets every 20 ms, PT 0 (PCMU) at 8000 Hz.
type Audio struct {
	PayloadSize int           // octets, >= ProbeLen
	Interval    time.Duration //
	PayloadType uint8         // 0 is PCMU, which is also the default
	ClockRate   uint32        // Hz
	Start       Start
}

// Video is a video-like stream, frames at FPS of two sizes: a key frame of
// about KeyFrameSize octets every KeyFrameInterval frames (the first frame
// is one), delta frames of about DeltaFrameSize in between, each size drawn
// uniformly within ±Variation of its nominal value (a generator seeded with
// the SSRC, so a stream is reproducible). A frame is cut into the fewest
// packets of at most MaxPayload octets, of near-equal sizes, sent back to
// back; they share the frame's RTP timestamp and the last has the marker
// bit (RFC 6184 §5.1). Zero fields take the defaults: 25 fps, a key frame
// of 8000 octets every second, deltas of 1500, ±20 %, 1200 octets per
// packet, PT 96 at 90000 Hz. That is about 1.5 packets per delta frame and
// 350 kbit/s.
type Video struct {
	FPS              int
	KeyFrameSize     int     // octets
	DeltaFrameSize   int     // octets
	KeyFrameInterval int     // frames; 0: FPS (one key frame a second)
	Variation        float64 // fraction; 0: DefaultFrameVariation; negative: exact sizes
	MaxPayload       int     // octets of RTP payload per packet, >= 2*ProbeLen
	PayloadType      uint8   // 0: PayloadTypeVideo (96)
	ClockRate        uint32  // Hz
	Start            Start
}

// SendConfig says what Send sends. At least one of Audio and Video is set.
type SendConfig struct {
	Audio    *Audio        // nil: no audio stream
	Video    *Video        // nil: no video stream
	Duration time.Duration // how long to send; 0: until ctx is done
	// Now stamps the probes; nil: the media clock Now.
	Now func() int64
}

// StreamStats counts what Send sent on one stream.
type StreamStats struct {
	SSRC        uint32 `json:"ssrc"`
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`        // RTP octets (header and payload)
	Frames      uint64 `json:"frames"`       // frames sent (audio: one per packet)
	WriteErrors uint64 `json:"write_errors"` // writes that failed; the packet counts neither in Packets nor Bytes
}

// SendStats is the result of Send.
type SendStats struct {
	Audio StreamStats `json:"audio"`
	Video StreamStats `json:"video"`
}

// ErrSendConfig is wrapped by the errors of Send for a configuration it
// cannot use.
var ErrSendConfig = errors.New("media: bad send configuration")

// stream is one stream's state in Send.
type stream struct {
	kind   Kind
	pt     uint8
	ssrc   uint32
	seq    uint16
	ts0    uint32
	tsStep func(k uint64) uint32        // timestamp of frame k, relative to ts0
	offset func(k uint64) time.Duration // send time of frame k, relative to start
	start  time.Time
	next   time.Time // start + offset(k)
	k      uint64    // next frame number
	done   bool
	stats  *StreamStats

	// audio
	size int
	// video
	v   Video
	rng *rand.Rand
}

// Send sends the configured streams from conn to dst until cfg.Duration
// has passed or ctx is done, pacing each stream on its own schedule: frame
// k leaves at start + k×interval, so the number of frames is exactly
// ⌈Duration / interval⌉ and a late wake-up sends what is due at once
// instead of dropping ticks. It runs in the caller's goroutine and uses one
// buffer for every packet.
//
// A failed write is counted (StreamStats.WriteErrors) and sending goes on,
// except on a closed conn (net.ErrClosed), which ends Send with that error.
// Send returns ctx.Err() if ctx ended it, nil if the duration did.
func Send(ctx context.Context, conn net.PacketConn, dst netip.AddrPort, cfg SendConfig) (SendStats, error) {
	var st SendStats
	if !dst.IsValid() || dst.Port() == 0 {
		return st, fmt.Errorf("%w: destination %v", ErrSendConfig, dst)
	}
	if cfg.Audio == nil && cfg.Video == nil {
		return st, fmt.Errorf("%w: neither audio nor video", ErrSendConfig)
	}
	if cfg.Duration < 0 {
		return st, fmt.Errorf("%w: negative duration", ErrSendConfig)
	}
	now := cfg.Now
	if now == nil {
		now = Now
	}
	start := time.Now()
	var streams []*stream
	bufLen := 0
	if cfg.Audio != nil {
		s, err := newAudioStream(*cfg.Audio, &st.Audio, start)
		if err != nil {
			return st, err
		}
		streams = append(streams, s)
		bufLen = max(bufLen, s.size)
	}
	if cfg.Video != nil {
		s, err := newVideoStream(*cfg.Video, &st.Video, start)
		if err != nil {
			return st, err
		}
		streams = append(streams, s)
		bufLen = max(bufLen, s.v.MaxPayload)
	}
	if len(streams) == 2 && streams[0].ssrc == streams[1].ssrc {
		return st, fmt.Errorf("%w: audio and video share SSRC %#x", ErrSendConfig, streams[0].ssrc)
	}
	pc := newPacketConn(conn)
	buf := make([]byte, HeaderLen+bufLen)
	// Filler once: each packet rewrites only its header and probe.
	for i := range buf {
		buf[i] = filler
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		t := time.Now()
		next := time.Time{}
		for _, s := range streams {
			for !s.done && !s.next.After(t) {
				if cfg.Duration > 0 && s.offset(s.k) >= cfg.Duration {
					s.done = true
					break
				}
				if err := s.sendFrame(pc, dst, buf, now); err != nil {
					return st, err
				}
			}
			if !s.done && (next.IsZero() || s.next.Before(next)) {
				next = s.next
			}
		}
		if next.IsZero() {
			return st, nil
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-timer.C:
		}
	}
}

func newStart(s Start) (ssrc uint32, seq uint16, ts uint32) {
	ssrc, seq, ts = s.SSRC, s.FirstSeq, s.FirstTimestamp
	for ssrc == 0 {
		ssrc = rand.Uint32()
	}
	if !s.Fixed {
		seq, ts = uint16(rand.Uint32()), rand.Uint32()
	}
	return ssrc, seq, ts
}

func newAudioStream(a Audio, stats *StreamStats, start time.Time) (*stream, error) {
	if a.PayloadSize == 0 {
		a.PayloadSize = DefaultAudioPayload
	}
	if a.Interval == 0 {
		a.Interval = DefaultAudioInterval
	}
	if a.ClockRate == 0 {
		a.ClockRate = ClockRateAudio
	}
	if a.PayloadSize < ProbeLen || a.PayloadSize > maxPayload {
		return nil, fmt.Errorf("%w: audio payload of %d octets (want %d to %d)", ErrSendConfig, a.PayloadSize, ProbeLen, maxPayload)
	}
	if a.Interval < 0 {
		return nil, fmt.Errorf("%w: negative audio interval", ErrSendConfig)
	}
	if a.PayloadType > 127 {
		return nil, fmt.Errorf("%w: payload type %d", ErrSendConfig, a.PayloadType)
	}
	ssrc, seq, ts := newStart(a.Start)
	stats.SSRC = ssrc
	rate, interval := uint64(a.ClockRate), uint64(a.Interval)
	return &stream{
		kind: KindAudio, pt: a.PayloadType, ssrc: ssrc, seq: seq, ts0: ts,
		tsStep: func(k uint64) uint32 { return uint32(k * interval * rate / uint64(time.Second)) },
		offset: func(k uint64) time.Duration { return time.Duration(k) * a.Interval },
		start:  start, next: start, stats: stats, size: a.PayloadSize,
	}, nil
}

func newVideoStream(v Video, stats *StreamStats, start time.Time) (*stream, error) {
	if v.FPS == 0 {
		v.FPS = DefaultVideoFPS
	}
	if v.KeyFrameSize == 0 {
		v.KeyFrameSize = DefaultKeyFrameSize
	}
	if v.DeltaFrameSize == 0 {
		v.DeltaFrameSize = DefaultDeltaFrameSize
	}
	if v.KeyFrameInterval == 0 {
		v.KeyFrameInterval = v.FPS
	}
	if v.Variation == 0 {
		v.Variation = DefaultFrameVariation
	} else if v.Variation < 0 {
		v.Variation = 0
	}
	if v.MaxPayload == 0 {
		v.MaxPayload = DefaultVideoMaxPayload
	}
	if v.PayloadType == 0 {
		v.PayloadType = PayloadTypeVideo
	}
	if v.ClockRate == 0 {
		v.ClockRate = ClockRateVideo
	}
	switch {
	case v.FPS < 0 || v.FPS > 1000:
		return nil, fmt.Errorf("%w: %d frames per second", ErrSendConfig, v.FPS)
	case v.KeyFrameInterval < 0:
		return nil, fmt.Errorf("%w: key frame interval %d", ErrSendConfig, v.KeyFrameInterval)
	case v.Variation >= 1 || math.IsNaN(v.Variation):
		return nil, fmt.Errorf("%w: frame size variation %v (want < 1)", ErrSendConfig, v.Variation)
	case v.MaxPayload < minVideoMaxPayload || v.MaxPayload > maxPayload:
		return nil, fmt.Errorf("%w: video packets of %d octets (want %d to %d)", ErrSendConfig, v.MaxPayload, minVideoMaxPayload, maxPayload)
	case v.KeyFrameSize < 0 || v.DeltaFrameSize < 0:
		return nil, fmt.Errorf("%w: negative frame size", ErrSendConfig)
	case int64(max(v.KeyFrameSize, v.DeltaFrameSize))*2 > int64(v.MaxPayload)*maxPacketsPerFrame:
		return nil, fmt.Errorf("%w: frames too large for %d packets of %d octets", ErrSendConfig, maxPacketsPerFrame, v.MaxPayload)
	case v.PayloadType > 127:
		return nil, fmt.Errorf("%w: payload type %d", ErrSendConfig, v.PayloadType)
	}
	ssrc, seq, ts := newStart(v.Start)
	stats.SSRC = ssrc
	rate, fps := uint64(v.ClockRate), uint64(v.FPS)
	return &stream{
		kind: KindVideo, pt: v.PayloadType, ssrc: ssrc, seq: seq, ts0: ts,
		tsStep: func(k uint64) uint32 { return uint32(k * rate / fps) },
		offset: func(k uint64) time.Duration { return time.Duration(k) * time.Second / time.Duration(fps) },
		start:  start, next: start, stats: stats,
		v: v, rng: rand.New(rand.NewPCG(uint64(ssrc), 0x696d736563)),
	}, nil
}

// frameSize is the payload size of video frame k (see Video).
func (s *stream) frameSize(k uint64) int {
	nominal := s.v.DeltaFrameSize
	if s.v.KeyFrameInterval > 0 && k%uint64(s.v.KeyFrameInterval) == 0 {
		nominal = s.v.KeyFrameSize
	}
	f := float64(nominal) * (1 + s.v.Variation*(2*s.rng.Float64()-1))
	return max(int(math.Round(f)), ProbeLen)
}

// sendFrame sends frame s.k and schedules the next.
func (s *stream) sendFrame(pc packetConn, dst netip.AddrPort, buf []byte, now func() int64) error {
	h := Header{PayloadType: s.pt, SSRC: s.ssrc, Timestamp: s.ts0 + s.tsStep(s.k)}
	sizes, n := s.size, 1
	if s.kind == KindVideo {
		total := s.frameSize(s.k)
		n = (total + s.v.MaxPayload - 1) / s.v.MaxPayload
		sizes = total
	} else {
		h.Marker = s.k == 0
	}
	for i := range n {
		size := sizes / n
		if i < sizes%n {
			size++
		}
		if s.kind == KindVideo {
			h.Marker = i == n-1
		}
		h.Seq = s.seq
		s.seq++
		AppendRTP(buf[:0], h, nil)
		AppendProbe(buf[HeaderLen:HeaderLen], Probe{Kind: s.kind, SendTime: now(), Frame: uint32(s.k), Index: uint16(i), Count: uint16(n)})
		pkt := buf[:HeaderLen+size]
		if _, err := pc.write(pkt, dst); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			s.stats.WriteErrors++
			continue
		}
		s.stats.Packets++
		s.stats.Bytes += uint64(len(pkt))
	}
	s.stats.Frames++
	s.k++
	s.next = s.start.Add(s.offset(s.k))
	return nil
}
