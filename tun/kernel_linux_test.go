//go:build linux

package tun_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imsec/imsec/internal/inet"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
)

// netns is a fresh network namespace held by one locked OS thread; do runs
// functions on that thread. The namespace is unshared by the thread itself
// and disappears when the thread exits (the goroutine ends without
// UnlockOSThread, so the runtime terminates the thread) and the last socket
// or TUN opened in it is closed. Nothing is left on the host.
type netns struct {
	work chan func()
	done chan struct{}
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create a TUN in a new network namespace; CI runs this as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver: %v", err)
	}
	n := &netns{work: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		defer close(n.done)
		runtime.LockOSThread() // never unlocked: see netns
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for f := range n.work {
			f()
		}
	}()
	if err := <-errc; err != nil {
		<-n.done
		t.Fatalf("unshare(CLONE_NEWNET) as root: %v", err)
	}
	t.Cleanup(func() {
		close(n.work)
		<-n.done
	})
	return n
}

func (n *netns) do(f func()) {
	done := make(chan struct{})
	n.work <- func() { defer close(done); f() }
	<-done
}

// TestKernelTUN creates a kernel TUN in a fresh network namespace, gives it
// 198.51.100.1/24 and a route to 203.0.113.0/24 over netlink, and joins it
// with the trivial pump to a netstack holding 198.51.100.2 and 203.0.113.2.
// Then the kernel and the netstack ping each other, exchange UDP, and move
// TCP both ways (the kernel's segmentation offload splits into batches on
// Read; GRO coalesces on Write).
func TestKernelTUN(t *testing.T) {
	noLeaks(t)
	ns := newNetns(t)
	ctx := ctxT(t)
	kIP := netip.MustParseAddr("198.51.100.1")
	sIP := netip.MustParseAddr("198.51.100.2")
	sIP2 := netip.MustParseAddr("203.0.113.2")

	var k *tun.Kernel
	var err error
	ns.do(func() {
		if k, err = tun.CreateKernel("imsec%d", 1400); err != nil {
			return
		}
		if err = k.AddAddress(netip.PrefixFrom(kIP, 24)); err != nil {
			return
		}
		if err = k.SetUp(); err != nil {
			return
		}
		err = k.AddRoute(netip.MustParsePrefix("203.0.113.0/24"))
	})
	if err != nil {
		if k != nil {
			k.Close()
		}
		t.Fatal(err)
	}
	t.Logf("interface %s, MTU %d, batch %d", k.Name(), k.MTU(), k.BatchSize())
	if k.MTU() != 1400 {
		t.Errorf("MTU = %d, want 1400", k.MTU())
	}
	if _, err := net.InterfaceByName(k.Name()); err == nil {
		t.Errorf("%s is visible outside the test's namespace", k.Name())
	}
	// Caller mistakes are errors, not panics.
	if _, err := k.Read([][]byte{make([]byte, 100)}, []int{0}, 4); !errors.Is(err, tun.ErrOffset) {
		t.Errorf("Read with small offset: %v", err)
	}
	if err := k.AddAddress(netip.Prefix{}); err == nil {
		t.Error("AddAddress(zero) succeeded")
	}
	if err := k.AddAddress(netip.PrefixFrom(kIP, 24)); !errors.Is(err, unix.EEXIST) {
		t.Errorf("adding the address twice: %v, want EEXIST", err)
	}

	s, err := tun.NewNetstack(tun.NetstackOptions{MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(sIP, 24), netip.PrefixFrom(sIP2, 32)}})
	if err != nil {
		k.Close()
		t.Fatal(err)
	}
	pump := tuntest.Connect(k, s)
	defer func() {
		k.Close()
		s.Close()
		if err := pump.Wait(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("pump stopped with %v", err)
		}
		var gone error
		ns.do(func() { _, gone = net.InterfaceByName(k.Name()) })
		if gone == nil {
			t.Errorf("%s still exists after Close", k.Name())
		}
		if err := k.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := k.Write([][]byte{make([]byte, 100)}, tun.MinOffset); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close: %v", err)
		}
	}()

	t.Run("kernel pings netstack", func(t *testing.T) {
		var c net.PacketConn
		ns.do(func() { c, err = net.ListenPacket("ip4:icmp", kIP.String()) })
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i, dst := range []netip.Addr{sIP, sIP2} {
			if err := kernelPing(c, dst, uint16(i+1)); err != nil {
				t.Errorf("ping %v: %v", dst, err)
			}
		}
	})

	t.Run("netstack pings kernel", func(t *testing.T) {
		if _, err := s.Ping(ctx, kIP, 7, []byte("pinhole")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("udp", func(t *testing.T) {
		var kc net.PacketConn
		ns.do(func() { kc, err = net.ListenPacket("udp4", netip.AddrPortFrom(kIP, 5060).String()) })
		if err != nil {
			t.Fatal(err)
		}
		defer kc.Close()
		kc.SetDeadline(time.Now().Add(10 * time.Second))
		sc := mustUDP(t, s, ap(sIP, 41000))
		if _, err := sc.WriteToUDPAddrPort([]byte("REGISTER"), ap(kIP, 5060)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, from, err := kc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "REGISTER" || from.String() != "198.51.100.2:41000" {
			t.Fatalf("kernel got %q from %v (%v)", buf[:n], from, err)
		}
		if _, err := kc.WriteTo([]byte("200 OK"), from); err != nil {
			t.Fatal(err)
		}
		n, src, err := sc.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "200 OK" || src != ap(kIP, 5060) {
			t.Fatalf("netstack got %q from %v (%v)", buf[:n], src, err)
		}
	})

	t.Run("tcp both ways", func(t *testing.T) {
		var l net.Listener
		ns.do(func() { l, err = net.Listen("tcp4", netip.AddrPortFrom(kIP, 7000).String()) })
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		c, err := s.DialTCP(ctx, ap(sIP, 41001), ap(kIP, 7000))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		tcpEcho(t, l, c, 2<<20, 10*time.Second, "between the kernel and the netstack")
	})
	t.Run("mtu change is followed", func(t *testing.T) {
		if err := k.SetMTU(1300); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(5 * time.Second); k.MTU() != 1300; time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("MTU still %d after SetMTU(1300)", k.MTU())
			}
		}
		if err := k.SetMTU(100); err == nil {
			t.Error("SetMTU(100) succeeded")
		}
	})
	t.Logf("pump: %d packets kernel->netstack, %d netstack->kernel; kernel dropped %d", pump.AtoB.Load(), pump.BtoA.Load(), k.Dropped())
}

// kernelPing sends one ICMP echo request (RFC 792) on a raw socket and
// waits for the matching reply.
func kernelPing(c net.PacketConn, dst netip.Addr, seq uint16) error {
	const id = 0x1a5
	msg := []byte{8, 0, 0, 0, id >> 8, id & 0xff, byte(seq >> 8), byte(seq), 'i', 'm', 's', 'e', 'c'}
	binary.BigEndian.PutUint16(msg[2:], inet.Checksum(inet.Sum(0, msg)))
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		r := buf[:n]
		if from.String() == dst.String() && len(r) == len(msg) && r[0] == 0 &&
			binary.BigEndian.Uint16(r[4:]) == id && binary.BigEndian.Uint16(r[6:]) == seq &&
			bytes.Equal(r[8:], msg[8:]) && inet.Checksum(inet.Sum(0, r)) == 0 {
			return nil
		}
	}
}
