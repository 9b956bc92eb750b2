package rawudp

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
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

// TestStampReceived: a stamped socket reports when the kernel received the
// datagram it last read, not when it was read: a datagram left waiting in
// the buffer shows its wait. The stamped read returns the same bytes and
// source as the plain one, over IPv4 and IPv6.
func TestStampReceived(t *testing.T) {
	if got := unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))); got > stampSpace {
		t.Fatalf("stampSpace %d < CmsgSpace(timespec) %d", stampSpace, got)
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			lc, err := net.ListenUDP("udp", mustUDPAddr(t, addr))
			if err != nil {
				t.Skipf("no socket for %s here: %v", addr, err)
			}
			pc := New(lc)
			defer pc.Close()
			if !pc.Received().IsZero() {
				t.Fatal("Received before any read")
			}
			if !pc.StampReceived() {
				t.Fatal("StampReceived refused on Linux")
			}
			peer, err := net.ListenUDP("udp", mustUDPAddr(t, addr))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			buf := make([]byte, 2048)
			// The kernel turns receive stamps on for the whole stack a
			// moment after the first socket asks (a deferred static key);
			// until then it stamps at the read. Probe until it is on.
			for start := time.Now(); ; {
				if time.Since(start) > 5*time.Second {
					t.Fatal("the kernel never stamped a datagram on receive")
				}
				if _, err := peer.WriteTo([]byte("probe"), pc.LocalAddr()); err != nil {
					t.Fatal(err)
				}
				time.Sleep(5 * time.Millisecond)
				_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := pc.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatal(err)
				}
				if time.Since(pc.Received()) >= 5*time.Millisecond {
					break
				}
			}
			before := time.Now()
			msg := []byte("REGISTER sip:a.example SIP/2.0\r\n\r\n")
			if _, err := peer.WriteTo(msg, pc.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			// Let it wait in the buffer: Received must tell the wait, so
			// it must be nearer the send than the read.
			time.Sleep(50 * time.Millisecond)
			_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			read := time.Now()
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("read %q, %v", buf[:n], err)
			}
			if want := peer.LocalAddr().(*net.UDPAddr).AddrPort(); from.Port() != want.Port() || from.Addr().Unmap() != want.Addr().Unmap() {
				t.Fatalf("source %v, want %v", from, want)
			}
			at := pc.Received()
			// The kernel's clock is the wall clock: allow it a millisecond
			// of skew against Go's reading of it.
			if at.Before(before.Add(-time.Millisecond)) || at.After(sent.Add(time.Millisecond)) {
				t.Fatalf("received at %v, want between %v and %v (read at %v)", at, before, sent, read)
			}
			if read.Sub(at) < 50*time.Millisecond {
				t.Fatalf("wait %v, want at least the 50 ms it was left", read.Sub(at))
			}
		})
	}
}
