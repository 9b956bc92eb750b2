package tun

import (
	"errors"
	"net"
	"os"
)

// Device is a source and sink of whole IP packets (IPv4 or IPv6, no link
// header): a kernel TUN interface (Kernel) or an in-process TCP/IP stack
// (Netstack). The ESP pump reads plaintext packets from a Device, seals them
// in place and sends them; it opens received ESP packets in place and writes
// the inner packets back to the Device.
//
// Buffers and offset. Both Read and Write address packets at bufs[i][offset:]:
// the bytes before offset are headroom the caller keeps for the outer headers
// (UDP, ESP header, IV), the bytes after the packet are tailroom for padding,
// trailer and ICV. A Device may use the MinOffset bytes just before offset as
// scratch space for a platform header (the virtio-net header on Linux, the
// address-family word on macOS and the BSDs), so offset must be at least
// MinOffset; the caller must not rely on those bytes surviving a call. Each
// bufs[i] must hold offset+MTU() bytes.
//
// Ownership. The Device owns bufs only for the duration of a call: Read fills
// the buffers and returns; Write copies or consumes the packets before it
// returns and never retains bufs[i]. A kernel Device may reorder, coalesce or
// rewrite the bytes of the packets it is given to Write (GRO), so the caller
// must treat them as garbage afterwards.
//
// Concurrency. One goroutine may Read while another Writes. Read is not safe
// for concurrent use with itself, nor Write with itself.
//
// Close. Close stops the Device: a Read blocked inside the Device returns,
// and every Read and Write after Close returns an error for which
// errors.Is(err, net.ErrClosed) and errors.Is(err, os.ErrClosed) both hold
// (see ErrClosed). Close is idempotent: later calls return nil. Close
// releases every goroutine and file the Device started.
type Device interface {
	// Read reads one or more packets into bufs[i][offset:], sets sizes[i] to
	// the length of each and returns the number of packets read, at least 1
	// unless err != nil. It blocks until a packet is available or the Device
	// is closed. len(sizes) must be >= len(bufs), and len(bufs) should be
	// BatchSize(): a kernel Device with segmentation offload splits one large
	// segment into up to BatchSize() packets and fails if bufs is shorter.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)

	// Write writes the packets bufs[i][offset:] and returns how many were
	// accepted. A packet the Device cannot use (empty, not IPv4/IPv6) is
	// dropped and counted, not reported as an error, so one bad packet does
	// not fail the batch.
	Write(bufs [][]byte, offset int) (int, error)

	// MTU is the largest packet, in bytes, the Device reads or accepts.
	MTU() int

	// BatchSize is the most packets one Read returns and the number of
	// buffers a caller should pass. It does not change over the Device's
	// lifetime.
	BatchSize() int

	// Name is the interface name of a kernel Device, or a fixed descriptive
	// name for an in-process one.
	Name() string

	// Close stops the Device. See the type documentation.
	Close() error
}

// MinOffset is the smallest offset callers may pass to Device.Read and
// Device.Write: room for the 10-byte virtio-net header of a Linux TUN with
// offloads or the 4-byte address family of a macOS utun, rounded up to the
// 16 bytes wireguard-go reserves (MessageTransportHeaderSize).
const MinOffset = 16

// ErrClosed is returned by a Device after Close. It matches both
// net.ErrClosed and os.ErrClosed under errors.Is, because the Device sits
// between socket code (which tests net.ErrClosed) and file code (which tests
// os.ErrClosed).
var ErrClosed error = closedError{}

type closedError struct{}

func (closedError) Error() string { return "tun: device closed" }

func (closedError) Is(target error) bool {
	return target == net.ErrClosed || target == os.ErrClosed
}

// ErrOffset is returned by Read and Write for an offset below MinOffset or a
// buffer too small to hold offset+MTU bytes. It is a caller mistake, not a
// property of the traffic.
var ErrOffset = errors.New("tun: offset below MinOffset or buffer shorter than offset+MTU")
