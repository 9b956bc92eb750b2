//go:build !linux

package bench

import (
	"net"
	"net/netip"
)

// ueSocket is a UE's socket. Elsewhere than Linux the UE uses the net
// package's calls (register_io_linux.go has the raw ones).
type ueSocket struct {
	conn *net.UDPConn
}

func newUESocket(conn *net.UDPConn) ueSocket { return ueSocket{conn: conn} }

func (u *regUE) writeTo(b []byte, to netip.AddrPort) error {
	_, err := u.conn.WriteToUDPAddrPort(b, to)
	return err
}

func (u *regUE) readFrom(b []byte) (int, netip.AddrPort, error) {
	return u.conn.ReadFromUDPAddrPort(b)
}
