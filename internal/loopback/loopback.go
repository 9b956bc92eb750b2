// Package loopback gives tests a loopback address of their own.
//
// A test that must bind a fixed port (SIPp's 5060, a P-CSCF restarted on
// the ports it had, Kamailio's 5060 and 3869, two tunnel ends that need
// each other's address before either binds) binds it on an address from
// Random: on Linux all of 127.0.0.0/8 is the loopback interface, and no
// other process holds ports there, so no port is picked, closed and bound
// again.
package loopback

import (
	"crypto/rand"
	"net/netip"
)

// Random returns a random address in 127.1.0.1 .. 127.254.255.254: never
// 127.0.0.x, where other programs listen.
func Random() netip.Addr {
	var b [3]byte
	rand.Read(b[:])
	return netip.AddrFrom4([4]byte{127, 1 + b[0]%254, b[1], 1 + b[2]%254})
}
