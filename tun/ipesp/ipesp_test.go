package ipesp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/imsec/imsec/tun/udp"
)

// TestListenWithoutPrivilege: a refused raw socket is ErrNoPrivilege, with
// a message that names the capability, so callers can fall back.
func TestListenWithoutPrivilege(t *testing.T) {
	old := listenPacket
	t.Cleanup(func() { listenPacket = old })
	listenPacket = func(network, address string) (net.PacketConn, error) {
		return nil, &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("socket", syscall.EPERM)}
	}
	_, err := Listen(netip.IPv4Unspecified())
	if !errors.Is(err, ErrNoPrivilege) || !bytes.Contains([]byte(err.Error()), []byte("CAP_NET_RAW")) {
		t.Fatalf("err = %v", err)
	}
	listenPacket = func(network, address string) (net.PacketConn, error) {
		return nil, &net.OpError{Op: "listen", Net: network, Err: os.NewSyscallError("socket", syscall.EPROTONOSUPPORT)}
	}
	if _, err := Listen(netip.IPv6Unspecified()); err == nil || errors.Is(err, ErrNoPrivilege) {
		t.Fatalf("other failure: %v", err)
	}
}

// TestLoopback sends ESP-shaped payloads between two raw sockets on
// loopback (root only), IPv4 and IPv6.
func TestLoopback(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1"} {
		addr := netip.MustParseAddr(a)
		c, err := Listen(addr)
		if errors.Is(err, ErrNoPrivilege) {
			t.Skipf("needs CAP_NET_RAW: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.LocalAddr().Port() != 0 || c.LocalAddr().Addr() != addr {
			t.Fatalf("local %v", c.LocalAddr())
		}
		// An SPI no kernel SA uses, then data.
		pkt := []byte{0xfe, 0xed, 0x00, 0x01, 0, 0, 0, 1, 'h', 'e', 'l', 'l', 'o'}
		if n, err := c.WriteBatch([]udp.Message{{Buf: pkt, N: len(pkt), Addr: netip.AddrPortFrom(addr, 4500)}}); n != 1 || err != nil {
			t.Fatalf("write %d %v", n, err)
		}
		got := make([]udp.Message, 1)
		got[0].Buf = make([]byte, 2000)
		deadline := time.Now().Add(5 * time.Second)
		c.c.SetReadDeadline(deadline)
		for {
			n, err := c.ReadBatch(got)
			if err != nil {
				t.Fatalf("%s: read: %v", a, err)
			}
			if n == 1 && bytes.Equal(got[0].Buf[:got[0].N], pkt) {
				break // other ESP on the host may arrive too
			}
		}
		if got[0].Addr != netip.AddrPortFrom(addr, 0) {
			t.Fatalf("%s: from %v", a, got[0].Addr)
		}
	}
}
