// Package rawudp reads and writes a UDP socket's datagrams. On Linux it
// makes recvfrom and sendto as raw system calls (RawSyscall6), still
// non-blocking and still waited on by the runtime's poller through
// syscall.RawConn; elsewhere it uses the net package's calls.
//
// Why: the net package's calls tell the scheduler that the thread may block
// (entersyscall). At thousands of calls a second that keeps the runtime's
// monitor thread polling and handing Ps between threads, and a send or
// receive on a non-blocking UDP socket never blocks (docs/architecture.md,
// "System calls and request goroutines"). The P-CSCF's unprotected SIP
// socket and the load generator's UEs read and write this way; tun/udp
// does the same for recvmmsg and sendmmsg.
package rawudp

import (
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/imsec/imsec/internal/sockdrops"
)

// Conn is a UDP socket whose datagram reads and writes go through raw
// system calls where the platform has them. Its other methods are the
// net.UDPConn's. It is safe for concurrent use.
type Conn struct {
	*net.UDPConn
	raw *raw // nil: the net package's calls

	received atomic.Int64 // Unix ns: the kernel's receive time of the last datagram read (stamped sockets)
}

// New wraps c.
func New(c *net.UDPConn) *Conn { return &Conn{UDPConn: c, raw: newRaw(c)} }

// ReadFromUDPAddrPort reads one datagram into b, as net.UDPConn's does.
func (c *Conn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	if c.raw == nil {
		return c.UDPConn.ReadFromUDPAddrPort(b)
	}
	n, from, at, err := c.raw.read(b)
	if err != nil {
		return 0, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Source: c.LocalAddr(), Err: err}
	}
	if !at.IsZero() {
		c.received.Store(at.UnixNano())
	}
	return n, from, nil
}

// StampReceived asks the kernel for each datagram's receive time (Linux:
// SO_TIMESTAMPNS), which Received then reports; false where the platform
// or the socket cannot. Call it before the first read. How long a
// datagram waited in the socket's buffer is the plainest measure of a
// reader falling behind: the buffer holds seconds of requests before it
// drops any.
func (c *Conn) StampReceived() bool { return c.raw != nil && c.raw.stamp() }

// Drops is how many datagrams the kernel dropped at the socket since it
// was opened, mostly for a full receive buffer; ok is false where the
// system does not say (Linux does).
func (c *Conn) Drops() (n uint64, ok bool) { return sockdrops.Of(c.UDPConn) }

// Received is the kernel's receive time of the datagram last read, on a
// stamped socket (zero before one, or unstamped). With one reading
// goroutine, that goroutine sees its own last datagram's.
func (c *Conn) Received() time.Time {
	ns := c.received.Load()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// WriteToUDPAddrPort sends b to to, as net.UDPConn's does.
func (c *Conn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	if c.raw == nil {
		return c.UDPConn.WriteToUDPAddrPort(b, to)
	}
	n, ok, err := c.raw.write(b, to)
	if !ok {
		// A zone, or an IPv6 peer of an IPv4 socket: the net package's
		// call has the answer.
		return c.UDPConn.WriteToUDPAddrPort(b, to)
	}
	if err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: net.UDPAddrFromAddrPort(to), Err: err}
	}
	return n, nil
}

// ReadFrom is ReadFromUDPAddrPort for net.PacketConn.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// WriteTo is WriteToUDPAddrPort for net.PacketConn; addr is a
// *net.UDPAddr.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return c.UDPConn.WriteTo(b, addr)
	}
	return c.WriteToUDPAddrPort(b, ua.AddrPort())
}
