package udp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

func listen(t *testing.T) *Conn {
	t.Helper()
	c, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestBatchRoundTrip(t *testing.T) {
	a, b := listen(t), listen(t)
	const total = 200
	out := make([]Message, total)
	for i := range out {
		p := []byte(fmt.Sprintf("datagram %03d", i))
		out[i] = Message{Buf: p, N: len(p), Addr: b.LocalAddr()}
	}
	if n, err := a.WriteBatch(out); n != total || err != nil {
		t.Fatalf("wrote %d: %v", n, err)
	}
	in := make([]Message, a.BatchSize())
	for i := range in {
		in[i].Buf = make([]byte, 2048)
	}
	got := 0
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got < total {
		n, err := b.ReadBatch(in)
		if err != nil {
			t.Fatalf("after %d: %v", got, err)
		}
		for _, m := range in[:n] {
			want := fmt.Sprintf("datagram %03d", got)
			if !bytes.Equal(m.Buf[:m.N], []byte(want)) || m.Addr != a.LocalAddr() {
				t.Fatalf("got %q from %v, want %q from %v", m.Buf[:m.N], m.Addr, want, a.LocalAddr())
			}
			got++
		}
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	c := listen(t)
	done := make(chan error)
	go func() {
		_, err := c.ReadBatch([]Message{{Buf: make([]byte, 100)}})
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("err %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("ReadBatch did not return after Close")
	}
}

func TestBadDestinationDoesNotLoseBatch(t *testing.T) {
	a, b := listen(t), listen(t)
	msgs := []Message{
		{Buf: []byte("one"), N: 3, Addr: b.LocalAddr()},
		{Buf: []byte("bad"), N: 3, Addr: netip.MustParseAddrPort("[2001:db8::1]:9")}, // v6 on a v4 socket
		{Buf: []byte("two"), N: 3, Addr: b.LocalAddr()},
	}
	n, err := a.WriteBatch(msgs)
	if n != 2 || err == nil {
		t.Fatalf("n %d err %v", n, err)
	}
	buf := make([]Message, 4)
	for i := range buf {
		buf[i].Buf = make([]byte, 64)
	}
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	var got []string
	for len(got) < 2 {
		k, err := b.ReadBatch(buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range buf[:k] {
			got = append(got, string(m.Buf[:m.N]))
		}
	}
	if got[0] != "one" || got[1] != "two" {
		t.Fatalf("%v", got)
	}
}

// TestDialConnected: a connected Conn sends batches to its peer without an
// address, receives the peer's datagrams with the peer as source, and is
// not reached by a third socket.
func TestDialConnected(t *testing.T) {
	peer := listen(t)
	c, err := Dial(netip.MustParseAddrPort("127.0.0.1:0"), peer.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RemoteAddr() != peer.LocalAddr() {
		t.Fatalf("RemoteAddr %v, want %v", c.RemoteAddr(), peer.LocalAddr())
	}
	const total = 100
	out := make([]Message, total)
	for i := range out {
		p := []byte(fmt.Sprintf("connected %03d", i))
		out[i] = Message{Buf: p, N: len(p), Addr: peer.LocalAddr()}
	}
	if n, err := c.WriteBatch(out); n != total || err != nil {
		t.Fatalf("wrote %d: %v", n, err)
	}
	in := make([]Message, peer.BatchSize())
	for i := range in {
		in[i].Buf = make([]byte, 100)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < total; {
		n, err := peer.ReadBatch(in)
		if err != nil {
			t.Fatalf("after %d: %v", got, err)
		}
		for _, m := range in[:n] {
			if want := fmt.Sprintf("connected %03d", got); string(m.Buf[:m.N]) != want || m.Addr != c.LocalAddr() {
				t.Fatalf("got %q from %v, want %q from %v", m.Buf[:m.N], m.Addr, want, c.LocalAddr())
			}
			got++
		}
	}
	// A third socket's datagram is dropped by the kernel; the peer's arrives.
	other := listen(t)
	other.WriteBatch([]Message{{Buf: []byte("intruder"), N: 8, Addr: c.LocalAddr()}})
	peer.WriteBatch([]Message{{Buf: []byte("peer"), N: 4, Addr: c.LocalAddr()}})
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.ReadBatch(in[:1])
	if n != 1 || err != nil || string(in[0].Buf[:in[0].N]) != "peer" || in[0].Addr != peer.LocalAddr() {
		t.Fatalf("n %d err %v: %q from %v", n, err, in[0].Buf[:in[0].N], in[0].Addr)
	}
}
