package esp

// Error is a per-packet failure. The values are preallocated sentinels, so
// returning one never allocates and callers can compare with == or
// errors.Is and count drops by Reason.
type Error struct {
	msg    string
	reason Reason
}

func (e *Error) Error() string { return e.msg }

// Reason is the drop counter index of the error.
func (e *Error) Reason() Reason { return e.reason }

// Reason indexes a drop counter: one value per sentinel error, so a data
// plane can keep `var drops [esp.NumReasons]atomic.Uint64` and do
// `drops[esp.ReasonOf(err)].Add(1)` without allocating.
type Reason uint8

// Drop reasons, one per sentinel error. ReasonNone is a nil error and
// ReasonOther an error that is not one of ours.
const (
	ReasonNone Reason = iota
	ReasonShort
	ReasonBadLength
	ReasonUnknownSPI
	ReasonReplay
	ReasonAuth
	ReasonBadPadding
	ReasonBadNextHeader
	ReasonDummy
	ReasonSeqExhausted
	ReasonNoRoom
	ReasonNotIP
	ReasonOther
	NumReasons
)

var reasonNames = [NumReasons]string{
	ReasonNone:          "none",
	ReasonShort:         "short",
	ReasonBadLength:     "bad_length",
	ReasonUnknownSPI:    "unknown_spi",
	ReasonReplay:        "replay",
	ReasonAuth:          "auth",
	ReasonBadPadding:    "bad_padding",
	ReasonBadNextHeader: "bad_next_header",
	ReasonDummy:         "dummy",
	ReasonSeqExhausted:  "seq_exhausted",
	ReasonNoRoom:        "no_room",
	ReasonNotIP:         "not_ip",
	ReasonOther:         "other",
}

// String is a short snake_case name suitable for a metric label.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// ReasonOf maps an error returned by this package to its drop counter index.
func ReasonOf(err error) Reason {
	if err == nil {
		return ReasonNone
	}
	if e, ok := err.(*Error); ok {
		return e.reason
	}
	return ReasonOther
}

// Sentinel errors for per-packet failures (attacker-controlled input, or a
// per-packet condition of the sender). They never wrap anything.
var (
	// ErrShort: the packet is too short to hold the header, IV, trailer and ICV of its SA.
	ErrShort = &Error{"esp: packet too short", ReasonShort}
	// ErrBadLength: the ciphertext is not a whole number of cipher blocks.
	ErrBadLength = &Error{"esp: ciphertext not a multiple of the block size", ReasonBadLength}
	// ErrUnknownSPI: no inbound SA has the packet's SPI.
	ErrUnknownSPI = &Error{"esp: unknown SPI", ReasonUnknownSPI}
	// ErrReplay: the sequence number was seen already, is left of the window, or is zero.
	ErrReplay = &Error{"esp: replayed or too old sequence number", ReasonReplay}
	// ErrAuth: the ICV did not verify. Nothing was decrypted and the window did not move.
	ErrAuth = &Error{"esp: authentication failed", ReasonAuth}
	// ErrBadPadding: the decrypted padding is not 1, 2, 3, ... (RFC 4303 §2.4) or longer than the payload;
	// sealing, a SealJob.Pad that is negative, not a multiple of the alignment or over MaxPad.
	ErrBadPadding = &Error{"esp: bad padding", ReasonBadPadding}
	// ErrBadNextHeader: the Next Header does not fit the SA mode (tunnel mode
	// wants 4 or 41 and an inner packet of that IP version).
	ErrBadNextHeader = &Error{"esp: bad next header", ReasonBadNextHeader}
	// ErrDummy: an authentic dummy packet (Next Header 59, RFC 4303 §2.6) to be
	// discarded. The window has moved (the packet was genuine).
	ErrDummy = &Error{"esp: dummy packet", ReasonDummy}
	// ErrSeqExhausted: the 32-bit sequence number would wrap (RFC 4303 §3.3.3);
	// the SA needs rekeying.
	ErrSeqExhausted = &Error{"esp: sequence number exhausted, SA needs rekeying", ReasonSeqExhausted}
	// ErrNoRoom: Seal was given less headroom or tailroom than the SA needs.
	ErrNoRoom = &Error{"esp: not enough headroom or tailroom in buffer", ReasonNoRoom}
	// ErrNotIP: a tunnel-mode Seal got a payload that is not an IPv4 or IPv6 packet.
	ErrNotIP = &Error{"esp: tunnel-mode payload is not an IPv4 or IPv6 packet", ReasonNotIP}
)
