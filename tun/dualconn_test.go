package tun

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/imsec/imsec/tun/udp"
	"github.com/imsec/imsec/tun/udptest"
)

// portZeroConn stands in for a raw ESP socket on an in-memory network: it
// is reached at port 0 (an IP protocol has no ports) and sends to port
// 0's stand-in, rawPort, on the other side.
type portZeroConn struct{ c *udptest.Conn }

const rawPort = 50

func (p portZeroConn) ReadBatch(msgs []udp.Message) (int, error) {
	n, err := p.c.ReadBatch(msgs)
	for i := range n {
		msgs[i].Addr = netip.AddrPortFrom(msgs[i].Addr.Addr(), 0)
	}
	return n, err
}

func (p portZeroConn) WriteBatch(msgs []udp.Message) (int, error) {
	out := make([]udp.Message, len(msgs))
	for i, m := range msgs {
		if m.Addr.Port() != 0 {
			return 0, errors.New("plain ESP to a port")
		}
		out[i] = udp.Message{Buf: m.Buf, N: m.N, Addr: netip.AddrPortFrom(m.Addr.Addr(), rawPort)}
	}
	return p.c.WriteBatch(out)
}

func (p portZeroConn) BatchSize() int { return p.c.BatchSize() }
func (p portZeroConn) LocalAddr() netip.AddrPort {
	return netip.AddrPortFrom(p.c.LocalAddr().Addr(), 0)
}
func (p portZeroConn) Close() error { return p.c.Close() }

func TestDualConnRoutesByPort(t *testing.T) {
	n := udptest.NewNetwork()
	me := netip.MustParseAddr("203.0.113.1")
	far := netip.MustParseAddr("203.0.113.2")
	u, err := n.Listen(netip.AddrPortFrom(me, 4500))
	must(t, err)
	r, err := n.Listen(netip.AddrPortFrom(me, rawPort))
	must(t, err)
	d := NewDualConn(u, portZeroConn{r})
	defer d.Close()
	farUDP, err := n.Listen(netip.AddrPortFrom(far, 4500))
	must(t, err)
	farRaw, err := n.Listen(netip.AddrPortFrom(far, rawPort))
	must(t, err)

	// Out: port 4500 by UDP, port 0 by the plain socket; a keepalive to a
	// plain peer is not sent.
	msgs := []udp.Message{
		{Buf: []byte("udp1"), N: 4, Addr: netip.AddrPortFrom(far, 4500)},
		{Buf: []byte("raw1"), N: 4, Addr: netip.AddrPortFrom(far, 0)},
		{Buf: []byte{0xff}, N: 1, Addr: netip.AddrPortFrom(far, 0)},
	}
	if k, err := d.WriteBatch(msgs[:2]); k != 2 || err != nil {
		t.Fatalf("write %d %v", k, err)
	}
	if k, err := d.WriteBatch(msgs[2:]); k != 1 || err != nil {
		t.Fatalf("keepalive %d %v", k, err)
	}
	read := func(c *udptest.Conn) string {
		m := []udp.Message{{Buf: make([]byte, 100)}}
		if _, err := c.ReadBatch(m); err != nil {
			t.Fatal(err)
		}
		return string(m[0].Buf[:m[0].N])
	}
	if got := read(farUDP); got != "udp1" {
		t.Fatalf("UDP peer got %q", got)
	}
	if got := read(farRaw); got != "raw1" {
		t.Fatalf("plain peer got %q", got)
	}
	// In: from both, the plain one with port 0.
	farUDP.WriteBatch([]udp.Message{{Buf: []byte("a"), N: 1, Addr: netip.AddrPortFrom(me, 4500)}})
	farRaw.WriteBatch([]udp.Message{{Buf: []byte("b"), N: 1, Addr: netip.AddrPortFrom(me, rawPort)}})
	seen := map[string]netip.AddrPort{}
	for len(seen) < 2 {
		m := []udp.Message{{Buf: make([]byte, 100)}}
		k, err := d.ReadBatch(m)
		if err != nil || k != 1 {
			t.Fatalf("read %d %v", k, err)
		}
		seen[string(m[0].Buf[:m[0].N])] = m[0].Addr
	}
	if seen["a"] != netip.AddrPortFrom(far, 4500) || seen["b"] != netip.AddrPortFrom(far, 0) {
		t.Fatalf("sources %v", seen)
	}
	// Close unblocks a reader and is final.
	errc := make(chan error, 1)
	go func() {
		_, err := d.ReadBatch([]udp.Message{{Buf: make([]byte, 10)}})
		errc <- err
	}()
	must(t, d.Close())
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}
