package sip

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestListenUDPAndTCPRetries: a P-CSCF asked for port 0 whose UDP port
// number is taken for TCP draws a new number (and closes the UDP socket it
// gives up); asked for a fixed port, it reports the collision.
func TestListenUDPAndTCPRetries(t *testing.T) {
	var opened, closed int
	var ports []int
	h := hostListeners{
		udp: func(a netip.AddrPort) (net.PacketConn, error) {
			pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
			if err == nil {
				opened++
				ports = append(ports, pc.LocalAddr().(*net.UDPAddr).Port)
				return closeCounter{pc, &closed}, nil
			}
			return nil, err
		},
	}
	taken := 3 // the first three numbers are "held by others" for TCP
	h.tcp = func(a netip.AddrPort) (net.Listener, error) {
		if taken > 0 {
			taken--
			return nil, &net.OpError{Op: "listen", Net: "tcp", Err: syscall.EADDRINUSE}
		}
		return net.ListenTCP("tcp", net.TCPAddrFromAddrPort(a))
	}
	pc, ln, err := h.udpAndTCP(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer ln.Close()
	// Three refusals were injected; on a busy host the real bind after them
	// may collide too, and is retried the same way.
	if closed < 3 || opened != closed+1 {
		t.Fatalf("opened %d UDP sockets and closed %d, want at least 4 and 3, all but the last closed", opened, closed)
	}
	if u, tc := pc.LocalAddr().(*net.UDPAddr).Port, ln.Addr().(*net.TCPAddr).Port; u != tc || u != ports[len(ports)-1] {
		t.Fatalf("UDP port %d, TCP port %d", u, tc)
	}

	// A fixed port is not redrawn (the UDP socket is a stand-in: no port
	// is bound twice here).
	taken, opened, closed = 1, 0, 0
	h.udp = func(a netip.AddrPort) (net.PacketConn, error) {
		opened++
		return closeCounter{fixedPC{net.UDPAddrFromAddrPort(a)}, &closed}, nil
	}
	_, _, err = h.udpAndTCP(netip.MustParseAddrPort("127.0.0.1:5060"))
	if !errors.Is(err, syscall.EADDRINUSE) || opened != 1 || closed != 1 {
		t.Fatalf("fixed port: err %v, opened %d, closed %d", err, opened, closed)
	}
}

type closeCounter struct {
	net.PacketConn
	n *int
}

func (c closeCounter) Close() error { *c.n++; return c.PacketConn.Close() }

// fixedPC is a PacketConn that only has an address.
type fixedPC struct{ addr *net.UDPAddr }

func (fixedPC) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (fixedPC) WriteTo([]byte, net.Addr) (int, error)  { return 0, net.ErrClosed }
func (fixedPC) Close() error                           { return nil }
func (p fixedPC) LocalAddr() net.Addr                  { return p.addr }
func (fixedPC) SetDeadline(time.Time) error            { return nil }
func (fixedPC) SetReadDeadline(time.Time) error        { return nil }
func (fixedPC) SetWriteDeadline(time.Time) error       { return nil }
