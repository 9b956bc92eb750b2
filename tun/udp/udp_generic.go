//go:build !linux

package udp

import (
	"net"
	"net/netip"
	"time"
)

// platform is the portable path: one datagram per system call.
type platform struct {
	remote netip.AddrPort // of a connected socket
}

func (p *platform) init(_ *net.UDPConn, remote netip.AddrPort) { p.remote = remote }

func (*platform) batchSize() int { return 1 }

func (*platform) stamp() bool { return false }

func (*platform) received() time.Time { return time.Time{} }

func (*platform) offload() (gso, gro bool) { return false, false }

func (*platform) readBatch(c *net.UDPConn, msgs []Message) (int, error) {
	n, from, err := c.ReadFromUDPAddrPort(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N, msgs[0].Addr = n, unmap(from)
	return 1, nil
}

func (p *platform) writeBatch(c *net.UDPConn, msgs []Message) (int, error) {
	return writeEach(c, p.remote, msgs)
}
