// Package ipesp is the plain ESP socket: ESP carried directly in IP
// (protocol 50, RFC 4303 §2) through a raw IP socket, with the batch API of
// the ESP-in-UDP socket (tun/udp) so that a tun.Pump can use either.
//
// A raw socket needs privilege: CAP_NET_RAW on Linux (root elsewhere).
// Listen says so in its error (ErrNoPrivilege) so that a caller can fall
// back to ESP in UDP (RFC 3948), which needs none.
//
// Every ESP packet for the host reaches the socket, whatever its SPI: the
// kernel's own IPsec (XFRM) may consume packets of SAs it holds as well,
// so a host that runs both must keep their SPIs apart. Addresses carry
// port 0: an IP protocol has no ports.
package ipesp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/imsec/imsec/tun/udp"
)

// Protocol is ESP's IP protocol number (RFC 4303 §2, IANA).
const Protocol = 50

// ErrNoPrivilege is (wrapped in) Listen's error when the system refuses a
// raw socket to this process.
var ErrNoPrivilege = errors.New("ipesp: plain ESP (IP protocol 50) needs a raw socket, which needs CAP_NET_RAW (or root); without it use ESP in UDP (mod=UDP-enc-tun)")

// Conn is a raw ESP socket. One goroutine may ReadBatch while others
// WriteBatch; Close unblocks a pending ReadBatch, which then returns an
// error matching net.ErrClosed.
type Conn struct {
	c     *net.IPConn
	local netip.AddrPort
}

// listenPacket opens the socket; tests replace it to simulate a refusal.
var listenPacket = net.ListenPacket

// Listen opens a raw ESP socket bound to addr (the unspecified address:
// every local address of its family). An IPv4 address (or 0.0.0.0) gives an
// IPv4 socket, any other an IPv6 one.
func Listen(addr netip.Addr) (*Conn, error) {
	addr = addr.Unmap()
	network := "ip4:50"
	if addr.Is6() {
		network = "ip6:50"
	}
	host := ""
	if addr.IsValid() && !addr.IsUnspecified() {
		host = addr.String()
	}
	pc, err := listenPacket(network, host)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("%w: %v", ErrNoPrivilege, err)
		}
		return nil, fmt.Errorf("ipesp: listen %s %s: %w", network, host, err)
	}
	c, ok := pc.(*net.IPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("ipesp: listen %s: not an IP socket", network)
	}
	local := addr
	if ia, ok := c.LocalAddr().(*net.IPAddr); ok {
		if a, ok := netip.AddrFromSlice(ia.IP); ok {
			local = a.Unmap()
		}
	}
	if !local.IsValid() {
		local = netip.IPv4Unspecified()
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	return &Conn{c: c, local: netip.AddrPortFrom(local, 0)}, nil
}

// LocalAddr returns the bound address, with port 0.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// BatchSize is the most packets one ReadBatch returns: one.
func (c *Conn) BatchSize() int { return 1 }

// Close closes the socket.
func (c *Conn) Close() error { return c.c.Close() }

// ReadBatch blocks until an ESP packet arrives and fills msgs[0] with it,
// from its SPI on (the IP header is not included), and its source with
// port 0.
func (c *Conn) ReadBatch(msgs []udp.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, errors.New("ipesp: ReadBatch with no messages")
	}
	for {
		n, from, err := c.c.ReadFrom(msgs[0].Buf)
		if err != nil {
			return 0, err
		}
		ia, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		a, ok := netip.AddrFromSlice(ia.IP)
		if !ok {
			continue
		}
		msgs[0].N = n
		msgs[0].Addr = netip.AddrPortFrom(a.Unmap(), 0)
		return 1, nil
	}
}

// WriteBatch sends each message's Buf[:N] as the payload of an IP packet
// of protocol 50 to its Addr (the port is ignored). A packet the system
// refuses is skipped and reported in the error after the rest are sent.
func (c *Conn) WriteBatch(msgs []udp.Message) (int, error) {
	sent := 0
	var first error
	for i := range msgs {
		a := msgs[i].Addr.Addr()
		if _, err := c.c.WriteToIP(msgs[i].Buf[:msgs[i].N], &net.IPAddr{IP: a.AsSlice(), Zone: a.Zone()}); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		sent++
	}
	return sent, first
}
