package media

import (
	"encoding/binary"
	"errors"
	"time"
)

// ProbeLen is the length of the probe that starts every payload Send
// writes:
//
//	0      2      3      4              12       16     18     20
//	+------+------+------+--------------+--------+------+------+
//	| "im" | kind |  0   |  send time   | frame  | index| count|
//	+------+------+------+--------------+--------+------+------+
//
// big-endian; send time in nanoseconds of the media clock (Now), frame the
// frame number in its stream (audio: the packet number), index and count
// the packet's place in its frame. The rest of the payload is filler.
const ProbeLen = 20

// probeMagic opens every probe, so a meter tells our payloads from others.
var probeMagic = [2]byte{'i', 'm'}

// Kind is the kind of stream a probe belongs to.
type Kind uint8

const (
	KindAudio Kind = 1 // one packet per frame; marker on the first packet (RFC 3551 §4.1)
	KindVideo Kind = 2 // frames of several packets; marker on the last one of each (RFC 6184 §5.1)
)

func (k Kind) String() string {
	switch k {
	case KindAudio:
		return "audio"
	case KindVideo:
		return "video"
	}
	return "unknown"
}

// Probe is the measurement header of a payload.
type Probe struct {
	Kind     Kind
	SendTime int64  // Now() when the packet was written
	Frame    uint32 // frame number in the stream
	Index    uint16 // packet's index in the frame, < Count
	Count    uint16 // packets in the frame, >= 1
}

// Errors of ParseProbe, preallocated.
var (
	ErrProbeShort = errors.New("media: payload shorter than a probe")
	ErrProbeMagic = errors.New("media: payload carries no probe")
	ErrProbeBad   = errors.New("media: inconsistent probe")
)

// AppendProbe appends the ProbeLen octets of p to b.
func AppendProbe(b []byte, p Probe) []byte {
	b = append(b, probeMagic[0], probeMagic[1], byte(p.Kind), 0)
	b = binary.BigEndian.AppendUint64(b, uint64(p.SendTime))
	b = binary.BigEndian.AppendUint32(b, p.Frame)
	b = binary.BigEndian.AppendUint16(b, p.Index)
	return binary.BigEndian.AppendUint16(b, p.Count)
}

// ParseProbe reads the probe at the start of an RTP payload. It does not
// allocate.
func ParseProbe(b []byte) (Probe, error) {
	if len(b) < ProbeLen {
		return Probe{}, ErrProbeShort
	}
	if b[0] != probeMagic[0] || b[1] != probeMagic[1] {
		return Probe{}, ErrProbeMagic
	}
	p := Probe{
		Kind:     Kind(b[2]),
		SendTime: int64(binary.BigEndian.Uint64(b[4:])),
		Frame:    binary.BigEndian.Uint32(b[12:]),
		Index:    binary.BigEndian.Uint16(b[16:]),
		Count:    binary.BigEndian.Uint16(b[18:]),
	}
	if (p.Kind != KindAudio && p.Kind != KindVideo) || b[3] != 0 || p.Count == 0 || p.Index >= p.Count {
		return Probe{}, ErrProbeBad
	}
	return p, nil
}

// epoch is the zero of the media clock, shared by every sender and meter of
// the process.
var epoch = time.Now()

// Now is the media clock: monotonic nanoseconds since an epoch taken when
// the process started. Send stamps it in every probe and a Meter reads it
// on arrival, so one-way delay is exact between a sender and a meter of
// the same process, and meaningless between two processes.
func Now() int64 { return int64(time.Since(epoch)) }
