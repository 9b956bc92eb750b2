//go:build !linux

package udp

import "net"

// platform is the portable path: one datagram per system call.
type platform struct{}

func (*platform) init(*net.UDPConn) {}

func (*platform) batchSize() int { return 1 }

func (*platform) offload() (gso, gro bool) { return false, false }

func (*platform) readBatch(c *net.UDPConn, msgs []Message) (int, error) {
	n, from, err := c.ReadFromUDPAddrPort(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N, msgs[0].Addr = n, unmap(from)
	return 1, nil
}

func (*platform) writeBatch(c *net.UDPConn, msgs []Message) (int, error) {
	return writeEach(c, msgs)
}
