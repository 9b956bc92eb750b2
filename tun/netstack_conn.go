package tun

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// listenBacklog matches the usual Linux somaxconn.
const listenBacklog = 4096

// ListenUDP opens a UDP socket bound to laddr. An unspecified address
// (0.0.0.0 or ::) binds every address of that family, port 0 picks a free
// port. The socket may send to broadcast addresses (SO_BROADCAST is on), so
// ListenUDP(0.0.0.0:68) is a DHCP client socket.
//
// The returned conn's LocalAddr is fixed at creation; it also has
// ReadFromUDPAddrPort and WriteToUDPAddrPort methods (see UDPAddrPortConn).
func (d *Netstack) ListenUDP(laddr netip.AddrPort) (net.PacketConn, error) {
	return d.openUDP(laddr, netip.AddrPort{})
}

// DialUDP opens a UDP socket bound to laddr (zero value: any address, a
// free port) and connected to raddr. Its LocalAddr and RemoteAddr are fixed
// at creation.
func (d *Netstack) DialUDP(laddr, raddr netip.AddrPort) (net.Conn, error) {
	if !raddr.IsValid() || raddr.Port() == 0 {
		return nil, &net.OpError{Op: "dial", Net: "udp", Addr: udpAddr(raddr), Err: errInvalidAddr}
	}
	return d.openUDP(laddr, raddr)
}

// UDPAddrPortConn is implemented by the UDP conns of a Netstack: netip
// forms of ReadFrom and WriteTo, for callers that keep addresses as
// netip.AddrPort (the data path does; see STYLE.md).
type UDPAddrPortConn interface {
	net.PacketConn
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

var _ UDPAddrPortConn = (*udpConn)(nil)
var _ net.Conn = (*udpConn)(nil)

func (d *Netstack) openUDP(laddr, raddr netip.AddrPort) (*udpConn, error) {
	proto, err := familyOf("udp", laddr, raddr)
	if err != nil {
		return nil, err
	}
	wq := new(waiter.Queue)
	ep, terr := d.s.NewEndpoint(udp.ProtocolNumber, proto, wq)
	if terr != nil {
		return nil, d.opError("listen", "udp", laddr, raddr, terr)
	}
	ep.SocketOptions().SetBroadcast(true)
	if laddr.Addr().IsValid() || laddr.Port() != 0 {
		if terr := ep.Bind(fullAddr(laddr)); terr != nil {
			ep.Close()
			return nil, d.opError("listen", "udp", laddr, raddr, terr)
		}
	}
	if raddr.IsValid() {
		if terr := ep.Connect(fullAddr(raddr)); terr != nil {
			ep.Close()
			return nil, d.opError("dial", "udp", laddr, raddr, terr)
		}
	} else if !laddr.Addr().IsValid() && laddr.Port() == 0 {
		// Unbound and unconnected: bind a free port now so that
		// LocalAddr is meaningful from the start.
		if terr := ep.Bind(tcpip.FullAddress{}); terr != nil {
			ep.Close()
			return nil, d.opError("listen", "udp", laddr, raddr, terr)
		}
	}
	l, r := endpointAddrs(ep, proto)
	c := &udpConn{c: gonet.NewUDPConn(wq, ep), d: d, laddr: udpAddr(l)}
	if raddr.IsValid() {
		c.raddr = udpAddr(r)
	}
	return c, nil
}

// udpConn wraps gonet.UDPConn: cached addresses, netip methods, and closed
// errors that match net.ErrClosed (gonet returns io.EOF after Close, which
// sipgo logs as a failure).
type udpConn struct {
	c      *gonet.UDPConn
	d      *Netstack
	laddr  *net.UDPAddr
	raddr  *net.UDPAddr // nil unless connected
	closed atomic.Bool
}

func (c *udpConn) err(op string, addr net.Addr, err error) error {
	if err == nil {
		return nil
	}
	if c.closed.Load() || c.d.closed.Load() || errors.Is(err, io.EOF) {
		return &net.OpError{Op: op, Net: "udp", Source: c.laddr, Addr: addr, Err: net.ErrClosed}
	}
	return err
}

func (c *udpConn) Read(b []byte) (int, error) {
	n, err := c.c.Read(b)
	return n, c.err("read", c.RemoteAddr(), err)
}

func (c *udpConn) Write(b []byte) (int, error) {
	if c.raddr == nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.laddr, Err: syscall.EDESTADDRREQ}
	}
	n, err := c.c.Write(b)
	return n, c.err("write", c.raddr, err)
}

func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.c.ReadFrom(b)
	if err != nil {
		return 0, nil, c.err("read", nil, err)
	}
	return n, a, nil
}

func (c *udpConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	n, a, err := c.c.ReadFrom(b)
	if err != nil {
		return 0, netip.AddrPort{}, c.err("read", nil, err)
	}
	ap, _ := addrPortOf(a)
	return n, ap, nil
}

func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ap, ok := addrPortOf(addr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.laddr, Addr: addr, Err: errInvalidAddr}
	}
	return c.WriteToUDPAddrPort(b, ap)
}

func (c *udpConn) WriteToUDPAddrPort(b []byte, ap netip.AddrPort) (int, error) {
	if !ap.IsValid() {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.laddr, Err: errInvalidAddr}
	}
	// gonet converts with tcpip.AddrFromSlice, so an IPv4 address must be
	// given as 4 bytes, never in its 16-byte mapped form.
	ua := &net.UDPAddr{IP: ap.Addr().Unmap().AsSlice(), Port: int(ap.Port())}
	n, err := c.c.WriteTo(b, ua)
	return n, c.err("write", ua, err)
}

func (c *udpConn) Close() error {
	if c.closed.Swap(true) {
		return &net.OpError{Op: "close", Net: "udp", Source: c.laddr, Err: net.ErrClosed}
	}
	return c.c.Close()
}

func (c *udpConn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr returns the connected peer, or nil for a listening socket (as
// *net.UDPConn does).
func (c *udpConn) RemoteAddr() net.Addr {
	if c.raddr == nil {
		return nil
	}
	return c.raddr
}

func (c *udpConn) SetDeadline(t time.Time) error      { return c.c.SetDeadline(t) }
func (c *udpConn) SetReadDeadline(t time.Time) error  { return c.c.SetReadDeadline(t) }
func (c *udpConn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// ListenTCP opens a TCP listener on laddr (unspecified address: every
// address of the family). SO_REUSEADDR is set, so a listener can be
// reopened while old connections from its port sit in TIME_WAIT. Accepted
// conns behave as those from DialTCP.
func (d *Netstack) ListenTCP(laddr netip.AddrPort) (net.Listener, error) {
	proto, err := familyOf("tcp", laddr, netip.AddrPort{})
	if err != nil {
		return nil, err
	}
	wq := new(waiter.Queue)
	ep, terr := d.s.NewEndpoint(tcp.ProtocolNumber, proto, wq)
	if terr != nil {
		return nil, d.opError("listen", "tcp", laddr, netip.AddrPort{}, terr)
	}
	ep.SocketOptions().SetReuseAddress(true)
	if terr := ep.Bind(fullAddr(laddr)); terr != nil {
		ep.Close()
		return nil, d.opError("listen", "tcp", laddr, netip.AddrPort{}, terr)
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, d.opError("listen", "tcp", laddr, netip.AddrPort{}, terr)
	}
	l, _ := endpointAddrs(ep, proto)
	return &tcpListener{d: d, ep: ep, wq: wq, addr: tcpAddr(l), done: make(chan struct{})}, nil
}

// DialTCP connects to raddr from laddr. With a zero laddr the stack picks
// the address and a free port. With a port in laddr the socket has
// SO_REUSEADDR and SO_REUSEPORT set before bind, so several connections can
// leave from one port (33.203 port-c towards several peers). Re-dialing the
// very same 4-tuple while its previous connection sits in TIME_WAIT on this
// stack also works: the TIME_WAIT endpoint is dropped first, as Linux does
// with net.ipv4.tcp_tw_reuse (gVisor does it only for ephemeral ports).
// ctx bounds the handshake only.
func (d *Netstack) DialTCP(ctx context.Context, laddr, raddr netip.AddrPort) (net.Conn, error) {
	if !raddr.IsValid() || raddr.Port() == 0 || raddr.Addr().Unmap().IsUnspecified() {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: tcpAddr(raddr), Err: errInvalidAddr}
	}
	proto, err := familyOf("tcp", laddr, raddr)
	if err != nil {
		return nil, err
	}
	c, terr, err := d.dialTCP(ctx, laddr, raddr, proto)
	if _, conflict := terr.(*tcpip.ErrBadLocalAddress); conflict && laddr.Port() != 0 && d.reapTimeWait(laddr, raddr, proto) {
		c, terr, err = d.dialTCP(ctx, laddr, raddr, proto)
	}
	if terr != nil {
		return nil, d.opError("dial", "tcp", laddr, raddr, terr)
	}
	return c, err
}

// dialTCP makes one attempt. A gVisor error is returned as terr so that
// DialTCP can tell a 4-tuple conflict from other failures; err carries a
// context error.
func (d *Netstack) dialTCP(ctx context.Context, laddr, raddr netip.AddrPort, proto tcpip.NetworkProtocolNumber) (net.Conn, tcpip.Error, error) {
	wq := new(waiter.Queue)
	ep, terr := d.s.NewEndpoint(tcp.ProtocolNumber, proto, wq)
	if terr != nil {
		return nil, terr, nil
	}
	if laddr.Addr().IsValid() || laddr.Port() != 0 {
		ep.SocketOptions().SetReuseAddress(true)
		ep.SocketOptions().SetReusePort(true)
		if terr := ep.Bind(fullAddr(laddr)); terr != nil {
			ep.Close()
			return nil, terr, nil
		}
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	terr = ep.Connect(fullAddr(raddr))
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, nil, &net.OpError{Op: "dial", Net: "tcp", Source: tcpAddr(laddr), Addr: tcpAddr(raddr), Err: ctx.Err()}
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, terr, nil
	}
	return newTCPConn(d, wq, ep, proto), nil, nil
}

// reapTimeWait aborts the endpoint holding laddr->raddr if it is in
// TIME_WAIT, and reports whether it did.
func (d *Netstack) reapTimeWait(laddr, raddr netip.AddrPort, proto tcpip.NetworkProtocolNumber) bool {
	local, remote := fullAddr(laddr).Addr, fullAddr(raddr).Addr
	if local.BitLen() == 0 {
		r, terr := d.s.FindRoute(0, tcpip.Address{}, remote, proto, false)
		if terr != nil {
			return false
		}
		local = r.LocalAddress()
		r.Release()
	}
	id := stack.TransportEndpointID{LocalPort: laddr.Port(), LocalAddress: local, RemotePort: raddr.Port(), RemoteAddress: remote}
	ep, ok := d.s.FindTransportEndpoint(proto, tcp.ProtocolNumber, id, nicID).(*tcp.Endpoint)
	if !ok || ep.EndpointState() != tcp.StateTimeWait {
		return false
	}
	ep.Abort()
	return true
}

// tcpConn wraps gonet.TCPConn: LocalAddr and RemoteAddr are cached at
// creation (gonet returns nil once the endpoint leaves the connected
// states, and sipgo then dereferences nil), and errors after Close match
// net.ErrClosed.
type tcpConn struct {
	c      *gonet.TCPConn
	d      *Netstack
	laddr  *net.TCPAddr
	raddr  *net.TCPAddr
	closed atomic.Bool
}

var _ net.Conn = (*tcpConn)(nil)

func newTCPConn(d *Netstack, wq *waiter.Queue, ep tcpip.Endpoint, proto tcpip.NetworkProtocolNumber) *tcpConn {
	l, r := endpointAddrs(ep, proto)
	return &tcpConn{c: gonet.NewTCPConn(wq, ep), d: d, laddr: tcpAddr(l), raddr: tcpAddr(r)}
}

func (c *tcpConn) err(op string, err error) error {
	if err == nil {
		return nil
	}
	if c.closed.Load() || c.d.closed.Load() {
		return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: net.ErrClosed}
	}
	return err
}

func (c *tcpConn) Read(b []byte) (int, error) {
	n, err := c.c.Read(b)
	if err == io.EOF && !c.closed.Load() {
		return n, io.EOF // the peer's FIN, as *net.TCPConn reports it
	}
	return n, c.err("read", err)
}

func (c *tcpConn) Write(b []byte) (int, error) {
	n, err := c.c.Write(b)
	return n, c.err("write", err)
}

func (c *tcpConn) Close() error {
	if c.closed.Swap(true) {
		return &net.OpError{Op: "close", Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: net.ErrClosed}
	}
	return c.c.Close()
}

// CloseWrite shuts down the sending side (sends FIN), as *net.TCPConn.
func (c *tcpConn) CloseWrite() error { return c.err("close", c.c.CloseWrite()) }

// CloseRead shuts down the receiving side, as *net.TCPConn.
func (c *tcpConn) CloseRead() error { return c.err("close", c.c.CloseRead()) }

func (c *tcpConn) LocalAddr() net.Addr                { return c.laddr }
func (c *tcpConn) RemoteAddr() net.Addr               { return c.raddr }
func (c *tcpConn) SetDeadline(t time.Time) error      { return c.c.SetDeadline(t) }
func (c *tcpConn) SetReadDeadline(t time.Time) error  { return c.c.SetReadDeadline(t) }
func (c *tcpConn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// tcpListener is a net.Listener on a gVisor endpoint. Its Accept is our
// own (not gonet's) so that the accepted endpoint's addresses can be read
// from its connection identity, which survives a reset racing the accept.
type tcpListener struct {
	d         *Netstack
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	addr      *net.TCPAddr
	done      chan struct{}
	closeOnce sync.Once
	closed    atomic.Bool
}

var _ net.Listener = (*tcpListener)(nil)

func (l *tcpListener) Accept() (net.Conn, error) {
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	l.wq.EventRegister(&entry)
	defer l.wq.EventUnregister(&entry)
	for {
		if l.closed.Load() || l.d.closed.Load() {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
		}
		ep, wq, terr := l.ep.Accept(nil)
		if terr == nil {
			return newTCPConn(l.d, wq, ep, l.ep.Info().(*stack.TransportEndpointInfo).NetProto), nil
		}
		if _, block := terr.(*tcpip.ErrWouldBlock); !block {
			if l.closed.Load() || l.d.closed.Load() {
				return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
			}
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: tcpipError(terr)}
		}
		select {
		case <-notify:
		case <-l.done:
		}
	}
}

func (l *tcpListener) Close() error {
	if l.closed.Swap(true) {
		return &net.OpError{Op: "close", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
	}
	l.closeOnce.Do(func() { close(l.done) })
	l.ep.Close()
	return nil
}

func (l *tcpListener) Addr() net.Addr { return l.addr }

// familyOf picks the network protocol for a socket from its addresses and
// rejects a local/remote family mismatch.
func familyOf(network string, laddr, raddr netip.AddrPort) (tcpip.NetworkProtocolNumber, error) {
	l, r := laddr.Addr().Unmap(), raddr.Addr().Unmap()
	switch {
	case l.IsValid() && r.IsValid() && l.Is4() != r.Is4():
		return 0, &net.OpError{Op: "dial", Net: network, Source: udpOrTCP(network, laddr), Addr: udpOrTCP(network, raddr), Err: errInvalidAddr}
	case r.IsValid():
		return protoOf(r), nil
	case l.IsValid():
		return protoOf(l), nil
	}
	return ipv4.ProtocolNumber, nil
}

func udpOrTCP(network string, ap netip.AddrPort) net.Addr {
	if network == "udp" {
		return udpAddr(ap)
	}
	return tcpAddr(ap)
}

// fullAddr converts to gVisor's form: IPv4 as 4 bytes, the unspecified
// address as the empty address (bind to all), NIC left to routing.
func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	a := ap.Addr().Unmap()
	fa := tcpip.FullAddress{Port: ap.Port()}
	if a.IsValid() && !a.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	return fa
}

// endpointAddrs reads the local and remote address of ep from its
// connection identity. An unbound local address is reported as the
// unspecified address of the socket's family.
func endpointAddrs(ep tcpip.Endpoint, proto tcpip.NetworkProtocolNumber) (local, remote netip.AddrPort) {
	info, ok := ep.Info().(*stack.TransportEndpointInfo)
	if !ok {
		return
	}
	conv := func(a tcpip.Address, port uint16) netip.AddrPort {
		ip, ok := netip.AddrFromSlice(a.AsSlice())
		if !ok {
			if proto == ipv4.ProtocolNumber {
				ip = netip.IPv4Unspecified()
			} else {
				ip = netip.IPv6Unspecified()
			}
		}
		return netip.AddrPortFrom(ip, port)
	}
	return conv(info.ID.LocalAddress, info.ID.LocalPort), conv(info.ID.RemoteAddress, info.ID.RemotePort)
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch v := a.(type) {
	case *net.UDPAddr:
		if v == nil {
			return netip.AddrPort{}, false
		}
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
	case *net.TCPAddr:
		if v == nil {
			return netip.AddrPort{}, false
		}
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
	}
	return netip.AddrPort{}, false
}

func udpAddr(ap netip.AddrPort) *net.UDPAddr {
	return &net.UDPAddr{IP: ap.Addr().Unmap().AsSlice(), Port: int(ap.Port())}
}

func tcpAddr(ap netip.AddrPort) *net.TCPAddr {
	return &net.TCPAddr{IP: ap.Addr().Unmap().AsSlice(), Port: int(ap.Port())}
}

func (d *Netstack) opError(op, network string, laddr, raddr netip.AddrPort, terr tcpip.Error) error {
	var err error = tcpipError(terr)
	if d.closed.Load() {
		err = net.ErrClosed
	}
	oe := &net.OpError{Op: op, Net: network, Err: err}
	if laddr.IsValid() || laddr.Port() != 0 {
		oe.Source = udpOrTCP(network, laddr)
	}
	if raddr.IsValid() {
		oe.Addr = udpOrTCP(network, raddr)
	} else if op == "listen" {
		oe.Addr = udpOrTCP(network, laddr)
		oe.Source = nil
	}
	return oe
}

// tcpipError maps the gVisor errors a caller may want to test for to the
// syscall errors *net.TCPConn would give, so errors.Is works the same on
// either stack; the rest keep gVisor's text.
func tcpipError(terr tcpip.Error) error {
	switch terr.(type) {
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrPortInUse:
		return syscall.EADDRINUSE
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrClosedForSend, *tcpip.ErrClosedForReceive:
		return net.ErrClosed
	}
	return errors.New(terr.String())
}
