package udptest_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/udp"
	"github.com/imsec/imsec/tun/udptest"
)

// A Conn is what the ESP pump sends and receives on.
var _ tun.PacketConn = (*udptest.Conn)(nil)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func msgs(n, size int) []udp.Message {
	m := make([]udp.Message, n)
	for i := range m {
		m[i].Buf = make([]byte, size)
	}
	return m
}

func readOne(t *testing.T, c *udptest.Conn) (string, netip.AddrPort) {
	t.Helper()
	type r struct {
		s    string
		from netip.AddrPort
		err  error
	}
	ch := make(chan r, 1)
	go func() {
		b := make([]byte, 2000)
		n, from, err := c.ReadFromUDPAddrPort(b)
		ch <- r{string(b[:n]), from, err}
	}()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatal(got.err)
		}
		return got.s, got.from
	case <-time.After(5 * time.Second):
		c.Close() // releases the reader
		t.Fatal("no datagram")
	}
	panic("unreachable")
}

func TestPairBatches(t *testing.T) {
	a, b := udptest.Pair()
	defer a.Close()
	defer b.Close()
	out := make([]udp.Message, 10)
	for i := range out {
		out[i] = udp.Message{Buf: []byte(fmt.Sprintf("esp-%d", i)), N: 5, Addr: b.LocalAddr()}
	}
	if n, err := a.WriteBatch(out); n != len(out) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	in := msgs(b.BatchSize(), 100)
	n, err := b.ReadBatch(in)
	if err != nil || n != len(out) {
		t.Fatalf("ReadBatch = %d, %v; want all %d queued datagrams in one batch", n, err, len(out))
	}
	for i := range n {
		if got := string(in[i].Buf[:in[i].N]); got != fmt.Sprintf("esp-%d", i)[:5] || in[i].Addr != a.LocalAddr() {
			t.Errorf("datagram %d = %q from %v", i, got, in[i].Addr)
		}
	}
	// The sender's buffers are copied: changing them later changes nothing.
	buf := []byte("hello")
	a.WriteToUDPAddrPort(buf, b.LocalAddr())
	copy(buf, "XXXXX")
	if s, _ := readOne(t, b); s != "hello" {
		t.Errorf("got %q", s)
	}
	// Truncation to the reader's buffer, as UDP does.
	a.WriteToUDPAddrPort([]byte("0123456789"), b.LocalAddr())
	small := []udp.Message{{Buf: make([]byte, 4)}}
	if n, err := b.ReadBatch(small); n != 1 || err != nil || string(small[0].Buf[:small[0].N]) != "0123" {
		t.Errorf("truncated read = %d %v %q", n, err, small[0].Buf[:small[0].N])
	}
}

func TestListen(t *testing.T) {
	n := udptest.NewNetwork()
	srv, err := n.Listen(netip.MustParseAddrPort("0.0.0.0:5060"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := n.Listen(netip.MustParseAddrPort("198.51.100.2:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if cli.LocalAddr().Port() < 49152 {
		t.Errorf("ephemeral port %v", cli.LocalAddr())
	}
	if _, err := n.Listen(cli.LocalAddr()); !errors.Is(err, udptest.ErrAddrInUse) {
		t.Errorf("second Listen on %v: %v", cli.LocalAddr(), err)
	}
	if _, err := n.Listen(netip.AddrPort{}); err == nil {
		t.Error("Listen on the zero address succeeded")
	}
	// The wildcard listener receives for any address.
	cli.WriteToUDPAddrPort([]byte("to any"), netip.MustParseAddrPort("203.0.113.9:5060"))
	if s, from := readOne(t, srv); s != "to any" || from != cli.LocalAddr() {
		t.Errorf("got %q from %v", s, from)
	}
	// Nobody at the destination: lost and counted, not an error.
	if _, err := cli.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("203.0.113.9:9")); err != nil {
		t.Error(err)
	}
	if s := n.Stats(); s.Unroutable != 1 || s.Delivered != 1 || s.Sent != 2 {
		t.Errorf("stats %+v", s)
	}
	if _, err := cli.WriteBatch([]udp.Message{{Buf: []byte("x"), N: 2, Addr: srv.LocalAddr()}}); err == nil {
		t.Error("WriteBatch with N > len(Buf) succeeded")
	}
}

func TestClose(t *testing.T) {
	a, b := udptest.Pair()
	errc := make(chan error, 1)
	go func() {
		_, err := b.ReadBatch(msgs(1, 10))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("blocked ReadBatch after Close: %v", err)
	}
	if _, err := b.WriteToUDPAddrPort([]byte("x"), a.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Datagrams to a closed Conn are unroutable, not queued.
	a.WriteToUDPAddrPort([]byte("x"), b.LocalAddr())
	a.Close()
	if _, err := a.ReadBatch(nil); err == nil {
		t.Error("ReadBatch(nil) succeeded")
	}
}

func TestDropAndDelay(t *testing.T) {
	n := udptest.NewNetwork()
	a, _ := n.Listen(netip.MustParseAddrPort("198.51.100.1:4500"))
	b, _ := n.Listen(netip.MustParseAddrPort("203.0.113.1:4500"))
	defer a.Close()
	defer b.Close()

	var seen atomic.Int32
	n.SetDrop(func(d udptest.Datagram) bool {
		seen.Add(1)
		return string(d.Data) == "drop me"
	})
	for _, s := range []string{"drop me", "keep me"} {
		a.WriteToUDPAddrPort([]byte(s), b.LocalAddr())
	}
	if s, _ := readOne(t, b); s != "keep me" {
		t.Errorf("got %q", s)
	}
	if seen.Load() != 2 || n.Stats().Dropped != 1 {
		t.Errorf("hook saw %d, stats %+v", seen.Load(), n.Stats())
	}
	n.SetDrop(nil)

	// Hold the first datagram back: the second overtakes it.
	n.SetDelay(func(d udptest.Datagram) time.Duration {
		if string(d.Data) == "first" {
			return 30 * time.Millisecond
		}
		return 0
	})
	a.WriteToUDPAddrPort([]byte("first"), b.LocalAddr())
	a.WriteToUDPAddrPort([]byte("second"), b.LocalAddr())
	if s, _ := readOne(t, b); s != "second" {
		t.Errorf("first delivered %q, want the undelayed one", s)
	}
	if s, _ := readOne(t, b); s != "first" {
		t.Errorf("then %q", s)
	}
	n.SetDelay(nil)
}

// A UE behind a NAT talks to a P-CSCF; the NAT then rebinds, and the
// P-CSCF sees a new source port (what RFC 3948 peers must follow).
func TestNATRebind(t *testing.T) {
	n := udptest.NewNetwork()
	inside := netip.MustParseAddr("100.64.1.2") // RFC 6598 shared address space
	public := netip.MustParseAddr("198.51.100.7")
	nat, err := n.AddNAT(inside, public)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddNAT(inside, netip.MustParseAddr("198.51.100.8")); err == nil {
		t.Error("a second NAT for the same inside address was accepted")
	}
	ue, _ := n.Listen(netip.AddrPortFrom(inside, 4500))
	pc, _ := n.Listen(netip.MustParseAddrPort("203.0.113.1:4500"))
	defer ue.Close()
	defer pc.Close()

	var hookFrom netip.AddrPort
	n.SetDrop(func(d udptest.Datagram) bool {
		if d.To == pc.LocalAddr() {
			hookFrom = d.From
		}
		return false
	})

	ue.WriteToUDPAddrPort([]byte("REGISTER"), pc.LocalAddr())
	_, from1 := readOne(t, pc)
	if from1.Addr() != public {
		t.Fatalf("P-CSCF saw %v, want the public address %v", from1, public)
	}
	if hookFrom != from1 {
		t.Errorf("hook saw %v, want the translated %v", hookFrom, from1)
	}
	if m, ok := nat.Public(ue.LocalAddr()); !ok || m != from1 {
		t.Errorf("Public = %v %v", m, ok)
	}
	pc.WriteToUDPAddrPort([]byte("401"), from1)
	if s, from := readOne(t, ue); s != "401" || from != pc.LocalAddr() {
		t.Fatalf("UE got %q from %v", s, from)
	}

	nat.Rebind()
	if _, ok := nat.Public(ue.LocalAddr()); ok {
		t.Error("mapping survived Rebind")
	}
	before := n.Stats().Unroutable
	pc.WriteToUDPAddrPort([]byte("to the old port"), from1)
	if n.Stats().Unroutable != before+1 {
		t.Error("a datagram to a forgotten mapping was not lost")
	}
	ue.WriteToUDPAddrPort([]byte("REGISTER again"), pc.LocalAddr())
	_, from2 := readOne(t, pc)
	if from2.Addr() != public || from2.Port() == from1.Port() {
		t.Fatalf("after Rebind the P-CSCF saw %v, want %v with a new port", from2, public)
	}
	pc.WriteToUDPAddrPort([]byte("200"), from2)
	if s, _ := readOne(t, ue); s != "200" {
		t.Fatalf("UE got %q", s)
	}
}
