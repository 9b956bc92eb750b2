package sockdrops

import (
	"net"
	"testing"
	"time"
)

// TestOf: a socket with a small receive buffer that nobody reads drops
// what does not fit, and Of counts exactly the datagrams that were sent
// and not received.
func TestOf(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if n, ok := Of(c); !ok || n != 0 {
		t.Fatalf("a new socket: %d drops, %v", n, ok)
	}
	src, err := net.DialUDP("udp4", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const sent = 200
	payload := make([]byte, 1000)
	for range sent {
		if _, err := src.Write(payload); err != nil {
			t.Fatal(err)
		}
	}
	dropped, ok := Of(c)
	if !ok || dropped == 0 {
		t.Fatalf("%d datagrams into a 4 KiB buffer: %d drops, %v", sent, dropped, ok)
	}
	// Everything not dropped is in the buffer (loopback delivers within
	// the send): read it all.
	if err := c.SetReadDeadline(timeNowPlus()); err != nil {
		t.Fatal(err)
	}
	got := 0
	buf := make([]byte, 2000)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
		got++
	}
	if uint64(got)+dropped != sent {
		t.Fatalf("received %d and dropped %d of %d", got, dropped, sent)
	}
	if _, ok := Of(nil); ok {
		t.Fatal("Of(nil) answered")
	}
}

func timeNowPlus() time.Time { return time.Now().Add(200 * time.Millisecond) }
