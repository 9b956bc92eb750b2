package sip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/imsec/imsec/internal/rawudp"
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

// bindAttempts bounds how often listenUDPAndTCP draws a new port number
// when the one the UDP socket got is taken for TCP.
const bindAttempts = 64

// listenUDPAndTCP binds UDP and TCP on one port of ap's address. With port
// 0 the kernel picks the UDP port; if that number is taken for TCP (other
// processes hold ephemeral TCP ports), both are given back and a new
// number is drawn, up to bindAttempts times.
// sipReadBuffer is the unprotected UDP socket's receive buffer.
const sipReadBuffer = 4 << 20

func listenUDPAndTCP(ap netip.AddrPort) (net.PacketConn, net.Listener, error) {
	return hostListeners{}.udpAndTCP(ap)
}

// hostListeners opens host sockets; tests replace the two functions.
type hostListeners struct {
	udp func(netip.AddrPort) (net.PacketConn, error)
	tcp func(netip.AddrPort) (net.Listener, error)
}

func (h hostListeners) udpAndTCP(ap netip.AddrPort) (net.PacketConn, net.Listener, error) {
	if h.udp == nil {
		h.udp = func(a netip.AddrPort) (net.PacketConn, error) {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
			if err == nil {
				// A registration burst must not overflow the default
				// (~200 KiB, a hundred REGISTERs): the kernel caps this
				// at net.core.rmem_max, and a smaller buffer still works.
				_ = c.SetReadBuffer(sipReadBuffer)
				return rawudp.New(c), nil
			}
			return nil, err
		}
	}
	if h.tcp == nil {
		h.tcp = func(a netip.AddrPort) (net.Listener, error) { return net.ListenTCP("tcp", net.TCPAddrFromAddrPort(a)) }
	}
	for attempt := 0; ; attempt++ {
		pc, err := h.udp(ap)
		if err != nil {
			return nil, nil, fmt.Errorf("sip: unprotected UDP %v: %w", ap, err)
		}
		tcpAddr := netip.AddrPortFrom(ap.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port))
		ln, err := h.tcp(tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if ap.Port() != 0 || attempt+1 >= bindAttempts {
			return nil, nil, fmt.Errorf("sip: unprotected TCP %v: %w", tcpAddr, err)
		}
	}
}
