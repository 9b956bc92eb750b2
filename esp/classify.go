package esp

import "encoding/binary"

// Kind is what a datagram received on the UDP encapsulation port is
// (RFC 3948 §2).
type Kind uint8

const (
	// KindInvalid is too short to be ESP (fewer than 8 octets and not a
	// keepalive), or carries an SPI from the reserved range 1..255
	// (RFC 4303 §2.1: IANA reserves them, no SA may use them). Drop and count.
	KindInvalid Kind = iota
	// KindESP is a UDP-encapsulated ESP packet: at least SPI and sequence
	// number, SPI ≥ 256 (RFC 3948 §2.1). Hand it to the SA with that SPI.
	KindESP
	// KindKeepalive is a NAT-keepalive: exactly the single octet 0xFF
	// (RFC 3948 §2.3). It is not ESP and must not count as SA liveness.
	KindKeepalive
	// KindNonESP starts with the 4-octet zero Non-ESP Marker (RFC 3948 §2.2):
	// IKE. We run no IKE, so the caller counts it and drops it.
	KindNonESP
)

func (k Kind) String() string {
	switch k {
	case KindESP:
		return "esp"
	case KindKeepalive:
		return "keepalive"
	case KindNonESP:
		return "non-esp"
	}
	return "invalid"
}

// Classify tells what the payload b of a datagram received on the UDP
// encapsulation port is. It looks at no more than the first eight octets
// and never fails.
func Classify(b []byte) Kind {
	switch {
	case len(b) == 1 && b[0] == NATKeepalive:
		return KindKeepalive
	case len(b) >= NonESPMarkerLen && binary.BigEndian.Uint32(b) == 0:
		return KindNonESP
	case len(b) < ESPHeaderLen:
		return KindInvalid
	case binary.BigEndian.Uint32(b) <= SPIReservedMax:
		return KindInvalid
	}
	return KindESP
}

// Keepalive returns a new RFC 3948 §2.3 NAT-keepalive payload (the octet 0xFF).
func Keepalive() []byte { return []byte{NATKeepalive} }
