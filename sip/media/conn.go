package media

import (
	"errors"
	"net"
	"net/netip"
)

// AddrPortConn is the optional ability of a net.PacketConn to read and
// write with netip.AddrPort addresses, without allocating a net.Addr per
// datagram. *net.UDPConn has it, and so have the UDP conns of tun.Netstack
// (tun.UDPAddrPortConn). Other conns work through ReadFrom and WriteTo.
type AddrPortConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

var _ AddrPortConn = (*net.UDPConn)(nil)

// errNotUDP is returned for a datagram whose source is not an IP address
// and port (a conn of another kind).
var errNotUDP = errors.New("media: packet source is not a UDP address")

// packetConn reads and writes one net.PacketConn with netip addresses,
// through AddrPortConn when the conn has it. Addresses it returns are
// unmapped (an IPv4-mapped IPv6 source of a dual-stack socket reads as the
// IPv4 address).
type packetConn struct {
	net.PacketConn
	ap AddrPortConn // nil: fall back to ReadFrom/WriteTo
}

func newPacketConn(c net.PacketConn) packetConn {
	ap, _ := c.(AddrPortConn)
	return packetConn{PacketConn: c, ap: ap}
}

func (c packetConn) read(b []byte) (int, netip.AddrPort, error) {
	if c.ap != nil {
		n, from, err := c.ap.ReadFromUDPAddrPort(b)
		return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
	}
	n, addr, err := c.ReadFrom(b)
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	from, ok := addrPortOf(addr)
	if !ok {
		return n, netip.AddrPort{}, errNotUDP
	}
	return n, from, nil
}

func (c packetConn) write(b []byte, to netip.AddrPort) (int, error) {
	if c.ap != nil {
		return c.ap.WriteToUDPAddrPort(b, to)
	}
	return c.WriteTo(b, net.UDPAddrFromAddrPort(to))
}

func (c packetConn) localAddrPort() netip.AddrPort {
	ap, _ := addrPortOf(c.LocalAddr())
	return ap
}

// addrPortOf converts a conn address to netip, unmapped.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case nil:
		return netip.AddrPort{}, false
	default:
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.AddrPort{}, false
		}
	}
	if !ap.Addr().IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
