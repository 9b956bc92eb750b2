// Package udp is the ESP-in-UDP socket (RFC 3948, port 4500 by default) the
// data plane sends and receives on, in batches: on Linux with recvmmsg and
// sendmmsg, UDP segmentation offload on send and receive offload (udp(7):
// UDP_SEGMENT, UDP_GRO) and no allocation per datagram; elsewhere one
// datagram per system call behind the same API.
package udp

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/imsec/imsec/internal/sockdrops"
)

// Message is one datagram. For ReadBatch, Buf is the space to fill and the
// call sets N and Addr (the source); for WriteBatch, Buf[:N] is sent to Addr.
type Message struct {
	Buf  []byte
	N    int
	Addr netip.AddrPort
}

// DefaultBatch is how many datagrams a Conn moves per call where the
// platform batches (wireguard-go uses 128; ESP packets near the MTU make a
// batch of 64 about 90 KiB).
const DefaultBatch = 64

// socketBuffer is the send and receive buffer asked of the kernel (capped
// by net.core.rmem_max and wmem_max unless the process may exceed them).
const socketBuffer = 4 << 20

// Conn is a UDP socket with batch reads and writes. One goroutine may
// ReadBatch while others WriteBatch; Close unblocks a pending ReadBatch,
// which then returns an error matching net.ErrClosed.
type Conn struct {
	local  netip.AddrPort
	remote netip.AddrPort // set by Dial
	plat   platform
}

// Listen binds a UDP socket to addr (port 0 picks a free port). The IPv6
// wildcard [::] is dual-stack: it receives IPv4 as well (from IPv4-mapped
// sources, which ReadBatch reports as IPv4) and sends to either family;
// any other address is that family's alone.
func Listen(addr netip.AddrPort) (*Conn, error) {
	network := "udp4"
	switch a := addr.Addr(); {
	case a == netip.IPv6Unspecified():
		network = "udp" // Go leaves IPV6_V6ONLY off for a wildcard on "udp"
	case a.Is6() && !a.Is4In6():
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, err
	}
	return newConn(c, netip.AddrPort{})
}

// Dial binds a UDP socket to local (port 0 picks a free port) and connects
// it to remote. The kernel then keeps the route instead of looking it up
// for each datagram sent, finds the socket for each datagram received
// without a route lookup (early demux), and drops datagrams from any other
// source. WriteBatch to remote sends without an address; to another
// address it fails where the system refuses that (everywhere but Linux).
// It suits an end with one peer at a fixed address.
func Dial(local, remote netip.AddrPort) (*Conn, error) {
	network := "udp4"
	if remote.Addr().Is6() && !remote.Addr().Is4In6() {
		network = "udp6"
	}
	var la *net.UDPAddr
	if local.IsValid() {
		la = net.UDPAddrFromAddrPort(local)
	}
	c, err := net.DialUDP(network, la, net.UDPAddrFromAddrPort(remote))
	if err != nil {
		return nil, err
	}
	return newConn(c, unmap(remote))
}

// newConn makes a Conn of c, which it then owns (closing it on failure).
func newConn(c *net.UDPConn, remote netip.AddrPort) (*Conn, error) {
	u := &Conn{local: c.LocalAddr().(*net.UDPAddr).AddrPort(), remote: remote}
	// Room for bursts: ESP at line rate overflows the default buffers.
	_ = c.SetReadBuffer(socketBuffer)
	_ = c.SetWriteBuffer(socketBuffer)
	if err := u.plat.init(c, remote); err != nil {
		c.Close()
		return nil, err
	}
	return u, nil
}

// LocalAddr returns the bound address.
func (u *Conn) LocalAddr() netip.AddrPort { return u.local }

// RemoteAddr returns the address Dial connected to, or the zero value.
func (u *Conn) RemoteAddr() netip.AddrPort { return u.remote }

// BatchSize is the most datagrams one ReadBatch returns.
func (u *Conn) BatchSize() int { return u.plat.batchSize() }

// Offload reports whether the socket uses UDP segmentation offload on
// send (gso) and receive offload (gro) now. Both are Linux features; gso
// turns itself off if the kernel refuses it.
func (u *Conn) Offload() (gso, gro bool) { return u.plat.offload() }

// Close closes the socket.
func (u *Conn) Close() error { return u.plat.close() }

// Drops is how many datagrams the kernel dropped at the socket since it
// was opened, mostly for a full receive buffer; ok is false where the
// system does not say (Linux does).
func (u *Conn) Drops() (n uint64, ok bool) { return sockdrops.Of(u.plat.conn()) }

// SetQuiet takes the socket out of the runtime's poller (Linux), or puts
// it back. A socket in the poller wakes a thread at each datagram that
// arrives, even while nobody waits to read it; a quiet one wakes nobody
// until it is read, so a reader that sleeps between reads lets datagrams
// gather for free (tun coalesces many idle peers' NAT keepalives so). A
// ReadBatch on an empty quiet socket holds its thread in the kernel
// (ppoll) instead of parking its goroutine, which costs the data path's
// throughput: keep a busy socket polled. Only the reading goroutine may
// call it. Elsewhere than Linux it does nothing.
func (u *Conn) SetQuiet(quiet bool) error { return u.plat.setQuiet(quiet) }

// SetReadDeadline sets the time after which ReadBatch fails with an error
// matching os.ErrDeadlineExceeded; the zero time means none. Only the
// reading goroutine may call it on Linux, where a ReadBatch already waiting
// on a quiet socket (SetQuiet) keeps the deadline it began waiting with.
func (u *Conn) SetReadDeadline(t time.Time) error { return u.plat.setReadDeadline(t) }

// StampReceived asks the kernel for the receive time of the datagrams
// ReadBatch returns (Linux: SO_TIMESTAMPNS), which Received then reports;
// false where the platform cannot. Call it before the first ReadBatch.
func (u *Conn) StampReceived() bool { return u.plat.stamp() }

// Received is the kernel's receive time of the first datagram of the
// last batch ReadBatch took from the socket, the one that waited longest
// in its buffer (zero before a batch, or without StampReceived). Only
// the reading goroutine may call it.
func (u *Conn) Received() time.Time { return u.plat.received() }

// ReadBatch blocks until at least one datagram arrives, then fills up to
// len(msgs) of them.
func (u *Conn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, errors.New("udp: ReadBatch with no messages")
	}
	return u.plat.readBatch(msgs)
}

// WriteBatch sends msgs in order and returns how many were sent. A datagram
// the kernel refuses (no route, message too long) is skipped and reported
// in the error after the rest are sent.
func (u *Conn) WriteBatch(msgs []Message) (int, error) {
	return u.plat.writeBatch(msgs)
}

// unmap turns an IPv4-mapped IPv6 address into IPv4.
func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
