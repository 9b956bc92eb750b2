//go:build !linux

package rawudp

import (
	"net"
	"net/netip"
	"time"
)

// raw is never made here: Conn uses the net package's calls.
type raw struct{}

func newRaw(*net.UDPConn) *raw { return nil }

func (*raw) stamp() bool { return false }

func (*raw) read([]byte) (int, netip.AddrPort, time.Time, error) { panic("rawudp: no raw calls here") }

func (*raw) write([]byte, netip.AddrPort) (int, bool, error) { panic("rawudp: no raw calls here") }
