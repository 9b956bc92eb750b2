package media

import (
	"encoding/binary"
	"errors"
)

// RTP constants of RFC 3550 §5.1 and the payload types and clock rates this
// package uses (RFC 3551 §6, and our SDP's dynamic type for video).
const (
	// RTPVersion is the only version RFC 3550 defines.
	RTPVersion = 2
	// HeaderLen is the fixed RTP header: V/P/X/CC, M/PT, sequence number,
	// timestamp, SSRC. CSRCs and a header extension follow it when CC or X
	// say so.
	HeaderLen = 12

	// PayloadTypePCMU is G.711 mu-law, 8000 Hz (RFC 3551 §6, Table 4): the
	// audio stream's type.
	PayloadTypePCMU = 0
	// PayloadTypeVideo is the dynamic payload type our SDP maps to
	// H264/90000 (a=rtpmap:96): the video stream's type.
	PayloadTypeVideo = 96

	// ClockRateAudio is the RTP clock of PCMU (RFC 3551 §4.5.14).
	ClockRateAudio = 8000
	// ClockRateVideo is the RTP clock of every video payload format
	// (RFC 3551 §5, RFC 6184 §8.2.1 for H.264).
	ClockRateVideo = 90000
)

// Errors of ParseRTP. They are preallocated: the input is whatever arrived
// on a socket.
var (
	ErrRTPShort   = errors.New("media: RTP packet truncated")
	ErrRTPVersion = errors.New("media: not RTP version 2")
	ErrRTPPadding = errors.New("media: bad RTP padding")
)

// Header is an RTP fixed header (RFC 3550 §5.1). AppendRTP writes V=2 and
// no padding, extension or CSRC; ParseRTP reports what it found and skips
// the CSRC list and the extension.
type Header struct {
	Marker      bool
	PayloadType uint8 // 7 bits
	Seq         uint16
	Timestamp   uint32
	SSRC        uint32

	// Set by ParseRTP, ignored by AppendRTP.
	Padding   bool  // P: the payload ended in padding, now removed
	Extension bool  // X: a header extension was skipped
	CSRCCount uint8 // CC: this many CSRCs were skipped
}

// AppendRTP appends a 12-octet RTP header (version 2, no padding, no
// extension, no CSRC) and payload to b.
func AppendRTP(b []byte, h Header, payload []byte) []byte {
	m := h.PayloadType & 0x7f
	if h.Marker {
		m |= 0x80
	}
	b = append(b, RTPVersion<<6, m)
	b = binary.BigEndian.AppendUint16(b, h.Seq)
	b = binary.BigEndian.AppendUint32(b, h.Timestamp)
	b = binary.BigEndian.AppendUint32(b, h.SSRC)
	return append(b, payload...)
}

// ParseRTP parses an RTP packet without copying or allocating: the payload
// is a sub-slice of b, after the CSRC list and the header extension and
// before any padding.
func ParseRTP(b []byte) (Header, []byte, error) {
	if len(b) < HeaderLen {
		return Header{}, nil, ErrRTPShort
	}
	if b[0]>>6 != RTPVersion {
		return Header{}, nil, ErrRTPVersion
	}
	h := Header{
		Padding:     b[0]&0x20 != 0,
		Extension:   b[0]&0x10 != 0,
		CSRCCount:   b[0] & 0x0f,
		Marker:      b[1]&0x80 != 0,
		PayloadType: b[1] & 0x7f,
		Seq:         binary.BigEndian.Uint16(b[2:]),
		Timestamp:   binary.BigEndian.Uint32(b[4:]),
		SSRC:        binary.BigEndian.Uint32(b[8:]),
	}
	n := HeaderLen + 4*int(h.CSRCCount)
	if h.Extension {
		// RFC 3550 §5.3.1: 16 bits defined by profile, 16 bits length in
		// 32-bit words, not counting this 4-octet header.
		if len(b) < n+4 {
			return Header{}, nil, ErrRTPShort
		}
		n += 4 + 4*int(binary.BigEndian.Uint16(b[n+2:]))
	}
	if len(b) < n {
		return Header{}, nil, ErrRTPShort
	}
	p := b[n:]
	if h.Padding {
		// The last octet counts the padding octets, itself included.
		if len(p) == 0 || p[len(p)-1] == 0 || int(p[len(p)-1]) > len(p) {
			return Header{}, nil, ErrRTPPadding
		}
		p = p[:len(p)-int(p[len(p)-1])]
	}
	return h, p, nil
}
