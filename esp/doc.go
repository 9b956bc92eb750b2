// Package esp implements the IP Encapsulating Security Payload as specified
// in RFC 4303, in place and without allocating per packet, together with
// the RFC 3948 classification of datagrams received on the UDP
// encapsulation port (ESP, NAT-keepalive, non-ESP).
//
// It is a leaf package: no sockets, no goroutines, no logging, no clock.
//
// # Security associations
//
// An SA direction is built from a Config with NewOutbound or NewInbound.
// Algorithms are named as TS 33.203 and RFC 3329 name them: encryption
// null (RFC 2410), aes-cbc (RFC 3602), des-ede3-cbc (RFC 2451, for interop
// only) and aes-gcm (RFC 4106, 16-octet ICV, key material = AES key ||
// 4-octet salt); integrity hmac-sha-1-96 (RFC 2404), hmac-md5-96
// (RFC 2403), hmac-sha-256-128 (RFC 4868), and null, which is allowed only
// with aes-gcm. Constructors check key lengths and combinations and return
// descriptive errors.
//
// Seal and Open are safe for concurrent use on the same SA. The sequence
// number is an atomic counter. The replay window's pre-crypto check reads
// it without locking; the update after the ICV takes a small mutex once per
// packet and has the last word. The mutable per-packet crypto state (HMAC,
// the 3DES CBC mode) comes from a per-SA sync.Pool, so the steady state
// allocates nothing; AES-CBC runs on esp/internal/aescbc, which holds no
// per-call state and decrypts eight blocks at a time with AES-NI, and
// AES-GCM on crypto/cipher.
//
// # Packet layout and buffers
//
// Seal works in place on buf[off:off+n]. It needs HeaderLen() (at most
// HeaderRoom = 24) bytes before off for SPI, sequence number and IV, and
// Overhead(n)-HeaderLen() (at most TailRoom = 33) bytes after the payload
// for padding, pad length, next header and ICV. Overhead and MaxPayload
// give exact figures for MTU arithmetic. Open decrypts in place and returns
// the inner payload as a sub-slice of the packet.
//
// # IVs
//
// A CBC IV must be unpredictable (RFC 3602 §3). Rather than reading
// crypto/rand per packet, each outbound SA draws a random AES-128 key from
// crypto/rand when it is created and uses AES under that key over the
// 64-bit sequence number as the IV: distinct for each packet because the
// sequence number is, and unpredictable without the key. For 3DES the first
// 8 octets are used.
//
// For aes-gcm the nonce is salt || IV and the 8-octet explicit IV must never
// repeat under a key (RFC 4106 §3.1). A bare counter would be unique within
// one SA, but TS 33.203 gives all the SAs of a registration the same keys
// and each starts at sequence number 1, so two SAs sharing a key would
// repeat nonces. The IV is therefore the 64-bit sequence number XORed with
// a random 64-bit mask drawn per SA: still unique within the SA (a
// bijection of the counter), and two SAs collide only if their masks agree
// in the high 32 bits (about 2^-32 per pair).
//
// # Sequence numbers
//
// The first packet has sequence number 1. Without ESN, Seal refuses to wrap
// the 32-bit counter and returns ErrSeqExhausted (RFC 4303 §3.3.3): the SA
// needs rekeying. With ESN (RFC 4303 §2.2.1) the high 32 bits are appended
// to the ICV input (HMAC) or put in the AAD (GCM, RFC 4106 §5) but never
// sent; the receiver infers them as in RFC 4303 Appendix A2.2. We do not do
// the Appendix A3 resynchronisation after a run of ICV failures.
//
// # Receive processing
//
// Open checks, in this order: the length (ErrShort, ErrBadLength) and SPI
// (ErrUnknownSPI); the replay window, before any crypto (ErrReplay); the
// ICV, in constant time, before decrypting (ErrAuth); then decrypts,
// checks the padding, which must be 1, 2, 3, ... as RFC 4303 §2.4 says a
// receiver SHOULD (any length up to 255 is accepted, ErrBadPadding
// otherwise), checks the Next Header (tunnel mode: 4 with an IPv4 inner
// packet or 41 with IPv6, ErrBadNextHeader otherwise), and only then marks
// the sequence number in the window. Dummy packets (Next Header 59) are
// authenticated, mark the window and return ErrDummy.
//
// The window defaults to 1024 packets (Config.ReplayWindow) and is a ring
// of 64-bit words as in RFC 6479, so moving it costs at most one word
// clear per 64 sequence numbers.
//
// # Errors
//
// Per-packet failures are preallocated *Error sentinels; ReasonOf maps
// them to a small integer for drop counters without allocating. Setup
// errors are descriptive.
//
// # UDP encapsulation
//
// Classify sorts a datagram received on port 4500 (RFC 3948): ESP,
// a NAT-keepalive (exactly one 0xFF octet: not ESP, and it must not count
// as SA liveness), non-ESP (the 4-octet zero marker: IKE, which we do not
// run) or invalid (shorter than 8 octets, or an SPI in the reserved range
// 1..255 of RFC 4303 §2.1).
//
// # Interoperability
//
// The tests check our packets against implementations we did not write:
// tshark (Wireshark's ESP dissector on libgcrypt) decrypts and
// authenticates what Seal produces for every algorithm pair, with the SAs
// taken from a KeyLog file, and scapy's SecurityAssociation seals packets
// that Open must decrypt byte for byte (AES-GCM also with ESN; scapy's
// HMACs ignore ESN). Known-answer tests cover RFC 3602 §4 (including its
// ESP packets), the AES-GCM ESP packets of draft-mcgrew-gcm-test-01,
// RFC 2202 and RFC 4231.
//
// # Key log
//
// KeyLog writes SA keys as lines of Wireshark's esp_sa UAT so captures can
// be decrypted; it is off unless created. Wireshark (4.0) has no ESN
// support, so the ICVs of ESN SAs do not check there.
package esp
