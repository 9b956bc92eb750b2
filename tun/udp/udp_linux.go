//go:build linux

package udp

import (
	"errors"
	"net"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// platform batches with recvmmsg/sendmmsg through x/net.
type platform struct {
	v4   *ipv4.PacketConn
	v6   *ipv6.PacketConn
	rmsg []ipv4.Message // ipv4.Message and ipv6.Message are the same type
	wmu  sync.Mutex     // WriteBatch may be called from several goroutines
	wmsg []ipv4.Message
}

func (p *platform) init(c *net.UDPConn) {
	if c.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
		p.v4 = ipv4.NewPacketConn(c)
	} else {
		p.v6 = ipv6.NewPacketConn(c)
	}
	p.rmsg = make([]ipv4.Message, DefaultBatch)
	p.wmsg = make([]ipv4.Message, DefaultBatch)
	for i := range p.rmsg {
		p.rmsg[i].Buffers = make([][]byte, 1)
		p.wmsg[i].Buffers = make([][]byte, 1)
	}
}

func (p *platform) batchSize() int { return DefaultBatch }

func (p *platform) readBatch(c *net.UDPConn, msgs []Message) (int, error) {
	k := min(len(msgs), len(p.rmsg))
	rm := p.rmsg[:k]
	for i := range rm {
		rm[i].Buffers[0] = msgs[i].Buf
		rm[i].N, rm[i].Addr = 0, nil
	}
	var n int
	var err error
	if p.v4 != nil {
		n, err = p.v4.ReadBatch(rm, 0)
	} else {
		n, err = p.v6.ReadBatch(rm, 0)
	}
	if err != nil {
		return 0, err
	}
	for i := range n {
		msgs[i].N = rm[i].N
		if ua, ok := rm[i].Addr.(*net.UDPAddr); ok {
			msgs[i].Addr = unmap(ua.AddrPort())
		}
	}
	return n, nil
}

func (p *platform) writeBatch(c *net.UDPConn, msgs []Message) (int, error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	sent := 0
	var first error
	for len(msgs) > 0 {
		k := min(len(msgs), len(p.wmsg))
		wm := p.wmsg[:k]
		for i := range wm {
			wm[i].Buffers[0] = msgs[i].Buf[:msgs[i].N]
			wm[i].Addr = net.UDPAddrFromAddrPort(msgs[i].Addr) // allocates: an address cache is the next step
		}
		var n int
		var err error
		if p.v4 != nil {
			n, err = p.v4.WriteBatch(wm, 0)
		} else {
			n, err = p.v6.WriteBatch(wm, 0)
		}
		if errors.Is(err, net.ErrClosed) {
			return sent + n, err
		}
		sent += n
		msgs = msgs[n:]
		if n < k {
			// sendmmsg stops at the first datagram the kernel refuses: send
			// that one alone to learn why, then carry on with the rest.
			if _, err := c.WriteToUDPAddrPort(msgs[0].Buf[:msgs[0].N], msgs[0].Addr); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return sent, err
				}
				if first == nil {
					first = err
				}
			} else {
				sent++
			}
			msgs = msgs[1:]
		}
	}
	return sent, first
}
