//go:build !linux

package udp

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// platform is the portable path: one datagram per system call.
type platform struct {
	c      *net.UDPConn
	remote netip.AddrPort // of a connected socket
}

func (p *platform) init(c *net.UDPConn, remote netip.AddrPort) error {
	p.c, p.remote = c, remote
	return nil
}

func (p *platform) close() error { return p.c.Close() }

func (p *platform) conn() syscall.Conn { return p.c }

func (*platform) setQuiet(bool) error { return nil }

func (p *platform) setReadDeadline(t time.Time) error { return p.c.SetReadDeadline(t) }

func (*platform) batchSize() int { return 1 }

func (*platform) stamp() bool { return false }

func (*platform) received() time.Time { return time.Time{} }

func (*platform) offload() (gso, gro bool) { return false, false }

func (p *platform) readBatch(msgs []Message) (int, error) {
	n, from, err := p.c.ReadFromUDPAddrPort(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N, msgs[0].Addr = n, unmap(from)
	return 1, nil
}

func (p *platform) writeBatch(msgs []Message) (int, error) {
	return writeEach(p.c, p.remote, msgs)
}

// writeEach sends datagrams one by one, carrying on past per-datagram
// errors (the first is returned after the rest are sent). On a socket
// connected to remote, datagrams to remote go without an address.
func writeEach(c *net.UDPConn, remote netip.AddrPort, msgs []Message) (int, error) {
	sent := 0
	var first error
	for i := range msgs {
		var err error
		if remote.IsValid() && msgs[i].Addr == remote {
			_, err = c.Write(msgs[i].Buf[:msgs[i].N])
		} else {
			_, err = c.WriteToUDPAddrPort(msgs[i].Buf[:msgs[i].N], msgs[i].Addr)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return sent, err
			}
			if first == nil {
				first = err
			}
			continue
		}
		sent++
	}
	return sent, first
}
