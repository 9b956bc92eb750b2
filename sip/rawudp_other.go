//go:build !linux

package sip

import "net"

// newRawUDP returns c: raw system calls for the unprotected SIP socket are
// Linux only (rawudp_linux.go).
func newRawUDP(c *net.UDPConn) net.PacketConn { return c }
