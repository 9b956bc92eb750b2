package esp

// Constants under the names their specifications give them (STYLE #9).
// Implementation choices (default window, room constants) live in esp.go.

// IANA protocol numbers (Assigned Internet Protocol Numbers registry).
const (
	// ProtoESP is the IP protocol number of ESP (RFC 4303 §2).
	ProtoESP = 50
	// NextHeaderIPv4 is the Next Header value of a tunnel-mode IPv4 inner packet ("IP-in-IP", RFC 4303 §2.6).
	NextHeaderIPv4 = 4
	// NextHeaderIPv6 is the Next Header value of a tunnel-mode IPv6 inner packet (RFC 4303 §2.6).
	NextHeaderIPv6 = 41
	// NextHeaderNone ("No Next Header", 59) marks a dummy packet that a receiver
	// MUST be prepared to discard (RFC 4303 §2.6).
	NextHeaderNone = 59
)

// RFC 4303 packet layout.
const (
	// SPILen and SeqLen are the SPI and Sequence Number fields (RFC 4303 §2.1, §2.2).
	SPILen = 4
	SeqLen = 4
	// ESPHeaderLen is SPI + Sequence Number, the part every ESP packet starts with.
	ESPHeaderLen = SPILen + SeqLen
	// TrailerLen is the Pad Length and Next Header octets (RFC 4303 §2.5, §2.6).
	TrailerLen = 2
	// PadAlign is the 4-octet alignment RFC 4303 §2.4 requires of the
	// ciphertext (Pad Length and Next Header right-aligned in a 4-octet word).
	PadAlign = 4
	// MaxPadLen is the largest Padding field (RFC 4303 §2.4: "0 to 255 bytes").
	MaxPadLen = 255
	// SPIReservedMax is the top of the SPI range 1..255 that RFC 4303 §2.1
	// reserves to IANA; 0 is reserved for local use and never sent on the wire.
	SPIReservedMax = 255
	// ESNHighLen is the size of the implicit high-order 32 bits of an extended
	// sequence number appended to the ICV input (RFC 4303 §2.2.1).
	ESNHighLen = 4
)

// Algorithm parameters.
const (
	// AESBlockSize is the AES block and CBC IV size (RFC 3602 §2.1, §3).
	AESBlockSize = 16
	// DES3BlockSize is the 3DES block and IV size (RFC 2451 §2.3).
	DES3BlockSize = 8
	// DES3KeyLen is the 3DES-EDE key: three 64-bit DES keys (RFC 2451 §2.2).
	DES3KeyLen = 24
	// GCMSaltLen is the salt at the end of the AES-GCM keying material (RFC 4106 §8.1).
	GCMSaltLen = 4
	// GCMIVLen is the explicit IV carried in each packet (RFC 4106 §3.1).
	GCMIVLen = 8
	// GCMICVLen is the ICV length we use: 16 octets, the one RFC 4106 §6 says MUST be supported.
	GCMICVLen = 16
	// HMACSHA196KeyLen is the HMAC-SHA-1-96 key (RFC 2404 §3: 160 bits).
	HMACSHA196KeyLen = 20
	// HMACMD596KeyLen is the HMAC-MD5-96 key (RFC 2403 §3: 128 bits).
	HMACMD596KeyLen = 16
	// HMACSHA256128KeyLen is the HMAC-SHA-256-128 key (RFC 4868 §2.1.1: 256 bits).
	HMACSHA256128KeyLen = 32
	// ICV96Len is the truncated ICV of HMAC-SHA-1-96 and HMAC-MD5-96 (RFC 2404 §2, RFC 2403 §2).
	ICV96Len = 12
	// ICV128Len is the truncated ICV of HMAC-SHA-256-128 (RFC 4868 §2.1.1).
	ICV128Len = 16
)

// RFC 3948 UDP encapsulation.
const (
	// UDPEncapPort is the IKE NAT-traversal port that carries ESP-in-UDP (RFC 3948 §1, RFC 3947 §4).
	UDPEncapPort = 4500
	// NonESPMarkerLen is the 4 zero octets that precede IKE on port 4500 (RFC 3948 §2.2).
	NonESPMarkerLen = 4
	// NATKeepalive is the single octet of a NAT-keepalive packet (RFC 3948 §2.3).
	NATKeepalive = 0xFF
)
