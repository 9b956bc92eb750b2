package sip

import (
	"context"
	"net"
	"net/netip"
	"syscall"
)

// innerNet opens sockets on the inner side of a tunnel: on the netstack
// (*tun.Netstack implements it), or on the host when the inner side is a
// kernel TUN (hostNet).
type innerNet interface {
	ListenUDP(laddr netip.AddrPort) (net.PacketConn, error)
	ListenTCP(laddr netip.AddrPort) (net.Listener, error)
	DialTCP(ctx context.Context, laddr, raddr netip.AddrPort) (net.Conn, error)
}

// hostNet opens host sockets bound to the inner address a kernel TUN holds.
type hostNet struct{}

func (hostNet) ListenUDP(laddr netip.AddrPort) (net.PacketConn, error) {
	return net.ListenUDP("udp", net.UDPAddrFromAddrPort(laddr))
}

func (hostNet) ListenTCP(laddr netip.AddrPort) (net.Listener, error) {
	lc := net.ListenConfig{Control: reuseAddr}
	return lc.Listen(context.Background(), "tcp", laddr.String())
}

func (hostNet) DialTCP(ctx context.Context, laddr, raddr netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(laddr), Control: reuseAddr}
	return d.DialContext(ctx, "tcp", raddr.String())
}

// reuseAddr lets several connections leave from one protected client port.
func reuseAddr(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = setReuseAddr(fd) })
	if err != nil {
		return err
	}
	return serr
}
