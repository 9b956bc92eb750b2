package rawudp

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestRawUDP: the raw socket reads and writes what net.UDPConn would, over
// IPv4 and a dual-stack IPv6 socket (an IPv4 peer v4-mapped), honours read
// deadlines and ends a blocked read on Close with net.ErrClosed.
func TestRawUDP(t *testing.T) {
	for _, c := range []struct{ name, listen, peer string }{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0"},
		{"dual-stack, IPv4 peer", "[::]:0", "127.0.0.1:0"},
		{"ipv6", "[::1]:0", "[::1]:0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			lc, err := net.ListenUDP("udp", mustUDPAddr(t, c.listen))
			if err != nil {
				t.Skipf("no %s socket here: %v", c.name, err)
			}
			pc := New(lc)
			if pc.raw == nil {
				t.Fatal("New made no raw calls")
			}
			defer pc.Close()
			peer, err := net.ListenUDP("udp", mustUDPAddr(t, c.peer))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			port := pc.LocalAddr().(*net.UDPAddr).Port
			to := &net.UDPAddr{IP: peer.LocalAddr().(*net.UDPAddr).IP, Port: port}

			msg := []byte("REGISTER sip:a.example SIP/2.0\r\n\r\n")
			if _, err := peer.WriteTo(msg, to); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := pc.ReadFrom(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("ReadFrom: %q, %v", buf[:n], err)
			}
			src := from.(*net.UDPAddr)
			if src.Port != peer.LocalAddr().(*net.UDPAddr).Port || !src.IP.Equal(peer.LocalAddr().(*net.UDPAddr).IP) {
				t.Fatalf("source %v, want %v", src, peer.LocalAddr())
			}
			// The answer goes back to the address ReadFrom gave.
			if _, err := pc.WriteTo([]byte("SIP/2.0 200 OK\r\n\r\n"), from); err != nil {
				t.Fatal(err)
			}
			_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, _, err := peer.ReadFrom(buf); err != nil || string(buf[:n]) != "SIP/2.0 200 OK\r\n\r\n" {
				t.Fatalf("peer read %q, %v", buf[:n], err)
			}

			// A deadline ends a read with nothing to read.
			_ = pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, _, err := pc.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read past its deadline: %v", err)
			}
			// Close ends a blocked read.
			_ = pc.SetReadDeadline(time.Time{})
			done := make(chan error, 1)
			go func() { _, _, err := pc.ReadFrom(buf); done <- err }()
			time.AfterFunc(20*time.Millisecond, func() { pc.Close() })
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("read after Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not end a blocked read")
			}
		})
	}
}

func mustUDPAddr(t *testing.T, s string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
