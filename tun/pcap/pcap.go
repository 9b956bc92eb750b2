// Package pcap writes UDP datagrams to a classic libpcap capture file
// ("PCAP Capture File Format", draft-ietf-opsawg-pcap) so that Wireshark and
// tshark can dissect what an ESP-in-UDP socket sent and received, and, with
// the esp_sa key log, decrypt it. Tap wraps a tun.PacketConn to record its
// traffic. For stream protocols (a Diameter capture in a test) it also
// writes TCP segments (RFC 9293) whose sequence numbers the caller keeps.
//
// The file uses link type LINKTYPE_RAW (101: each record is a bare IPv4 or
// IPv6 packet, told apart by its version nibble; there is no link-layer
// header to invent) and microsecond timestamps (magic 0xa1b2c3d4, written
// little-endian). Each datagram becomes one IPv4 (RFC 791) packet, or IPv6
// (RFC 8200) if either address is IPv6, carrying one UDP (RFC 768) datagram
// with correct lengths and checksums: header checksum, UDP checksum over the
// pseudo-header, TTL / hop limit 64, DF set, IP ID 0 (RFC 6864 §4.1 allows
// any ID on an atomic datagram). Nothing is fragmented or truncated: the
// whole packet is recorded.
//
// This package is pure Go and imports tun only for the PacketConn interface;
// tun must never import it.
package pcap

import (
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imsec/imsec/internal/inet"
)

// File format constants ("PCAP Capture File Format", §4 and §5; link types
// from the tcpdump.org LINKTYPE registry).
const (
	magicMicroseconds = 0xa1b2c3d4
	versionMajor      = 2
	versionMinor      = 4
	// LinkTypeRaw is LINKTYPE_RAW: records begin with an IPv4 or IPv6 header.
	LinkTypeRaw = 101
	// SnapLen is the snapshot length written in the file header; it is more
	// than the largest packet this package writes (IPv6: 40 + 65535).
	SnapLen = 262144

	fileHeaderLen   = 24
	recordHeaderLen = 16
)

// IP and UDP header constants (RFC 791, RFC 8200, RFC 768).
const (
	ipv4HeaderLen = 20
	udpHeaderLen  = 8
	tcpHeaderLen  = 20
	protoTCP      = 6
	tcpWindow     = 0xffff

	// MaxPayload4 is the largest UDP payload an IPv4 packet holds (total
	// length is 16 bits).
	MaxPayload4 = 0xffff - ipv4HeaderLen - udpHeaderLen
	// MaxPayload6 is the largest UDP payload in IPv6 without a jumbogram
	// (the UDP length is 16 bits).
	MaxPayload6 = 0xffff - udpHeaderLen
)

// Errors. ErrTooLarge is returned for a datagram that does not fit in one
// IP packet; it is not sticky. A failed write to the underlying writer is.
var (
	ErrTooLarge = inet.ErrTooLarge
	ErrClosed   = errors.New("pcap: writer closed")
)

// Options configure a Writer. The zero value is the documented default.
type Options struct {
	// Now stamps each record; default time.Now.
	Now func() time.Time
}

// Writer writes a capture file. It is safe for concurrent use: each record
// is assembled in a buffer owned by the Writer and handed to the underlying
// io.Writer in one Write call, under a mutex, so records never interleave.
// After the underlying writer fails once, every later call returns that
// error (the file would be corrupt past a torn record). Wrap a file in a
// bufio.Writer for speed and flush it after the last record.
type Writer struct {
	now func() time.Time

	mu     sync.Mutex
	w      io.Writer
	buf    []byte
	err    error
	closed bool

	records atomic.Uint64
	bytes   atomic.Uint64
}

// NewWriter writes the file header to w and returns a Writer for records.
func NewWriter(w io.Writer, opt Options) (*Writer, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	var h [fileHeaderLen]byte
	binary.LittleEndian.PutUint32(h[0:], magicMicroseconds)
	binary.LittleEndian.PutUint16(h[4:], versionMajor)
	binary.LittleEndian.PutUint16(h[6:], versionMinor)
	// h[8:16]: thiszone and sigfigs, both 0.
	binary.LittleEndian.PutUint32(h[16:], SnapLen)
	binary.LittleEndian.PutUint32(h[20:], LinkTypeRaw)
	if _, err := w.Write(h[:]); err != nil {
		return nil, err
	}
	return &Writer{now: opt.Now, w: w, buf: make([]byte, 0, 2048)}, nil
}

// WriteUDP records one datagram from src to dst, stamped with Options.Now.
// See AppendUDP for how the addresses become an IP header.
func (w *Writer) WriteUDP(src, dst netip.AddrPort, payload []byte) error {
	return w.WriteUDPAt(w.now(), src, dst, payload)
}

// WriteUDPAt records one datagram with the given timestamp. Times before
// 1970 are written as 0; the format's seconds are 32 bits.
func (w *Writer) WriteUDPAt(t time.Time, src, dst netip.AddrPort, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.ready(); err != nil {
		return err
	}
	b, err := AppendUDP(w.buf[:recordHeaderLen], src, dst, payload)
	if err != nil {
		return err
	}
	return w.flush(t, b)
}

// WriteTCP records one TCP segment from src to dst, stamped with
// Options.Now. See AppendTCP for the header it gets.
func (w *Writer) WriteTCP(src, dst netip.AddrPort, seg TCPSegment, payload []byte) error {
	return w.WriteTCPAt(w.now(), src, dst, seg, payload)
}

// WriteTCPAt records one TCP segment with the given timestamp.
func (w *Writer) WriteTCPAt(t time.Time, src, dst netip.AddrPort, seg TCPSegment, payload []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.ready(); err != nil {
		return err
	}
	b, err := AppendTCP(w.buf[:recordHeaderLen], src, dst, seg, payload)
	if err != nil {
		return err
	}
	return w.flush(t, b)
}

// ready reports why no record may be written, if so; w.mu is held.
func (w *Writer) ready() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return ErrClosed
	}
	return nil
}

// flush fills in the record header at the start of b (a packet follows it)
// and writes the record; w.mu is held.
func (w *Writer) flush(t time.Time, b []byte) error {
	n := len(b) - recordHeaderLen
	var sec, usec uint32
	if us := t.UnixMicro(); us > 0 {
		sec, usec = uint32(us/1e6), uint32(us%1e6)
	}
	binary.LittleEndian.PutUint32(b[0:], sec)
	binary.LittleEndian.PutUint32(b[4:], usec)
	binary.LittleEndian.PutUint32(b[8:], uint32(n))  // captured length
	binary.LittleEndian.PutUint32(b[12:], uint32(n)) // original length
	w.buf = b[:0]
	if _, err := w.w.Write(b); err != nil {
		w.err = err
		return err
	}
	w.records.Add(1)
	w.bytes.Add(uint64(n))
	return nil
}

// Records is how many packets have been written.
func (w *Writer) Records() uint64 { return w.records.Load() }

// Err is the error that stopped the Writer, or nil.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close stops the Writer: later records get ErrClosed (taps count them as
// failed and carry on). It does not close the underlying writer, and it
// returns the Writer's sticky error, if any.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return w.err
}

// AppendUDP appends to b an IP packet carrying one UDP datagram from src to
// dst with payload, and returns the extended slice (it allocates only if b
// lacks room). IPv4-mapped IPv6 addresses are unmapped first; the packet is
// IPv4 when both addresses then are IPv4, else IPv6 (an IPv4 address
// becomes IPv4-mapped). An invalid (zero) address is written as the
// unspecified address of the family chosen: that is what a tap records for
// a socket bound to 0.0.0.0 or ::, whose local address is not known.
// Payloads above MaxPayload4 (IPv4) or MaxPayload6 (IPv6) give ErrTooLarge
// and b unchanged.
func AppendUDP(b []byte, src, dst netip.AddrPort, payload []byte) ([]byte, error) {
	return inet.AppendUDP(b, src, dst, payload)
}

// TCPFlags are the control bits of a TCP header (RFC 9293 §3.1).
type TCPFlags uint8

// TCP control bits.
const (
	TCPFin TCPFlags = 0x01
	TCPSyn TCPFlags = 0x02
	TCPRst TCPFlags = 0x04
	TCPPsh TCPFlags = 0x08
	TCPAck TCPFlags = 0x10
)

// TCPSegment is what a TCP header says besides the ports: sequence and
// acknowledgment numbers and control bits. The caller keeps the numbers
// consistent (a SYN or FIN takes one sequence number, data its length);
// this package does not track connections.
type TCPSegment struct {
	Seq, Ack uint32
	Flags    TCPFlags
}

// AppendTCP appends to b an IP packet carrying one TCP segment (RFC 9293)
// from src to dst with payload, and returns the extended slice. The header
// has no options (data offset 5), window 65535, urgent pointer 0 and a
// correct checksum over the pseudo-header. Addresses are handled as in
// AppendUDP; a payload too large for one IP packet gives ErrTooLarge and b
// unchanged.
func AppendTCP(b []byte, src, dst netip.AddrPort, seg TCPSegment, payload []byte) ([]byte, error) {
	b, h, acc, err := inet.AppendIP(b, protoTCP, src.Addr(), dst.Addr(), tcpHeaderLen+len(payload))
	if err != nil {
		return b, err
	}
	binary.BigEndian.PutUint16(h[0:], src.Port())
	binary.BigEndian.PutUint16(h[2:], dst.Port())
	binary.BigEndian.PutUint32(h[4:], seg.Seq)
	binary.BigEndian.PutUint32(h[8:], seg.Ack)
	h[12] = tcpHeaderLen / 4 << 4
	h[13] = byte(seg.Flags)
	binary.BigEndian.PutUint16(h[14:], tcpWindow)
	clear(h[16:20]) // checksum, urgent pointer
	copy(h[tcpHeaderLen:], payload)
	binary.BigEndian.PutUint16(h[16:], inet.Checksum(inet.Sum(acc, h)))
	return b, nil
}
