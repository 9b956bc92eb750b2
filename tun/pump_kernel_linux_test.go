//go:build linux

package tun_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/udp"
)

// Two pumps on kernel TUNs in two network namespaces joined by a veth
// pair: the kernels' own stacks ping and move TCP through ESP-in-UDP.
// Outer addresses (the veth) are from 198.51.100.0/24 (RFC 5737), inner
// ones (the TUNs) from 100.64.0.0/10 (RFC 6598). Everything lives in the
// test's namespaces and goes with them.

// kernelEnd is one side: its namespace, TUN, socket and pump.
type kernelEnd struct {
	ns           *netns
	outer, inner netip.Addr
	k            *tun.Kernel
	pump         *tun.Pump
	peer         *tun.Peer
}

// nsRun runs a command inside the namespace (a child forked from the
// namespace's locked thread inherits it).
func (n *netns) run(t *testing.T, args ...string) {
	t.Helper()
	var out []byte
	var err error
	n.do(func() { out, err = exec.Command(args[0], args[1:]...).CombinedOutput() })
	if err != nil {
		t.Fatalf("%v: %v %s", args, err, bytes.TrimSpace(out))
	}
}

// vethNamespaces makes two namespaces joined by a veth pair with
// 198.51.100.1/24 in a and 198.51.100.2/24 in b, loopbacks up.
func vethNamespaces(t *testing.T) (a, b *netns) {
	t.Helper()
	a, b = newNetns(t), newNetns(t) // skip unless root
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not installed; CI installs it")
	}
	var tidB int
	b.do(func() { tidB = unix.Gettid() })
	// Created in a; its peer end goes straight into b's namespace (the
	// kernel finds a namespace by any task id, threads included).
	a.run(t, "ip", "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b", "netns", strconv.Itoa(tidB))
	a.run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "veth-a")
	a.run(t, "ip", "link", "set", "veth-a", "up")
	a.run(t, "ip", "link", "set", "lo", "up")
	b.run(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "veth-b")
	b.run(t, "ip", "link", "set", "veth-b", "up")
	b.run(t, "ip", "link", "set", "lo", "up")
	return a, b
}

// newKernelEnd creates, inside ns, a TUN with inner/24 and a pump on
// outer:4500 whose peer is peerOuter:4500 with the whole inner /24 routed
// to it.
func newKernelEnd(t *testing.T, ns *netns, outer, inner, peerOuter netip.Addr, out *esp.Outbound, in *esp.Inbound) *kernelEnd {
	t.Helper()
	e := &kernelEnd{ns: ns, outer: outer, inner: inner}
	var conn *udp.Conn
	var err error
	ns.do(func() {
		if e.k, err = tun.CreateKernel("imsec%d", tun.InnerMTUFor(1500, out)); err != nil {
			return
		}
		if err = e.k.AddAddress(netip.PrefixFrom(inner, 24)); err != nil {
			return
		}
		if err = e.k.SetUp(); err != nil {
			return
		}
		conn, err = udp.Listen(netip.AddrPortFrom(outer, 4500))
	})
	if err != nil {
		if e.k != nil {
			e.k.Close()
		}
		t.Fatal(err)
	}
	if e.pump, err = tun.NewPump(tun.Config{Device: e.k, Conn: conn}); err != nil {
		e.k.Close()
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { e.pump.Close() })
	net24 := []netip.Prefix{netip.PrefixFrom(inner, 24).Masked()}
	if e.peer, err = e.pump.AddPeer(tun.PeerConfig{Name: "peer", Endpoint: netip.AddrPortFrom(peerOuter, 4500), Allowed: net24, Routes: net24}); err != nil {
		t.Fatal(err)
	}
	if err := e.pump.AddInbound(e.peer, in); err != nil {
		t.Fatal(err)
	}
	e.peer.SetOutbound(out)
	return e
}

func kernelSA(t *testing.T, spi esp.SPI, ealg esp.EncAlg, alg esp.AuthAlg) (*esp.Outbound, *esp.Inbound) {
	t.Helper()
	c := esp.Config{SPI: spi, Mode: esp.Tunnel, Encryption: ealg, Integrity: alg,
		EncKey: make([]byte, esp.EncKeyLen(ealg)[0]), AuthKey: make([]byte, esp.AuthKeyLen(alg))}
	rand.Read(c.EncKey)
	rand.Read(c.AuthKey)
	o, err := esp.NewOutbound(c)
	fakeMust(t, err)
	in, err := esp.NewInbound(c)
	fakeMust(t, err)
	return o, in
}

// TestPumpKernelNamespaces: the two kernels ping each other's TUN address
// and move 4 MiB of TCP each way through the pumps, which are the only
// path between the inner addresses.
func TestPumpKernelNamespaces(t *testing.T) {
	for _, c := range []struct {
		e esp.EncAlg
		a esp.AuthAlg
	}{
		{esp.EncAESCBC, esp.AuthHMACSHA196},
		{esp.EncAESGCM, esp.AuthNull},
	} {
		t.Run(fmt.Sprintf("%s/%s", c.e, c.a), func(t *testing.T) { pumpKernelPair(t, c.e, c.a) })
	}
}

func pumpKernelPair(t *testing.T, ealg esp.EncAlg, alg esp.AuthAlg) {
	noLeaks(t)
	nsA, nsB := vethNamespaces(t)
	abOut, abIn := kernelSA(t, 0x1001, ealg, alg)
	baOut, baIn := kernelSA(t, 0x2001, ealg, alg)
	outerA, outerB := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	innerA, innerB := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	a := newKernelEnd(t, nsA, outerA, innerA, outerB, abOut, baIn)
	b := newKernelEnd(t, nsB, outerB, innerB, outerA, baOut, abIn)
	t.Logf("A: %s MTU %d batch %d; B: %s MTU %d batch %d", a.k.Name(), a.k.MTU(), a.k.BatchSize(), b.k.Name(), b.k.MTU(), b.k.BatchSize())

	t.Run("ping both ways", func(t *testing.T) {
		for i, x := range []struct {
			from *kernelEnd
			to   netip.Addr
		}{{a, innerB}, {b, innerA}} {
			var c net.PacketConn
			var err error
			x.from.ns.do(func() { c, err = net.ListenPacket("ip4:icmp", x.from.inner.String()) })
			if err != nil {
				t.Fatal(err)
			}
			for seq := range 3 {
				if err := kernelPing(c, x.to, uint16(10*i+seq+1)); err != nil {
					t.Errorf("ping %v from %v: %v", x.to, x.from.inner, err)
				}
			}
			c.Close()
		}
	})

	t.Run("tcp both ways", func(t *testing.T) {
		var l net.Listener
		var err error
		nsB.do(func() { l, err = net.Listen("tcp4", netip.AddrPortFrom(innerB, 7000).String()) })
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var c net.Conn
		nsA.do(func() { c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(innerB, 7000).String(), 10*time.Second) })
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != innerA {
			t.Fatalf("A's kernel dials from %v, not its TUN address", got)
		}
		tcpEcho(t, l, c, 4<<20, 30*time.Second, "through the tunnel")
	})

	// Let the last segments (FIN, final ACKs) land, then every ESP packet
	// one side sent must have been opened by the other.
	ca, cb := a.pump.Counters(), b.pump.Counters()
	for end := time.Now().Add(2 * time.Second); (ca.TxPackets != cb.RxPackets || cb.TxPackets != ca.RxPackets) && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
		ca, cb = a.pump.Counters(), b.pump.Counters()
	}
	t.Logf("A %+v\nB %+v", ca, cb)
	for name, c := range map[string]tun.Counters{"A": ca, "B": cb} {
		// Each side sent and received the 4 MiB through ESP.
		if c.TxBytes < 4<<20 || c.RxBytes < 4<<20 {
			t.Errorf("%s carried %d bytes out and %d in through ESP, want at least 4 MiB each", name, c.TxBytes, c.RxBytes)
		}
		if len(c.Drops) != 0 || c.Spoofed != 0 || c.SendErrors != 0 || c.DeviceErrors != 0 {
			t.Errorf("%s dropped: %+v", name, c)
		}
	}
	if ca.TxPackets != cb.RxPackets || cb.TxPackets != ca.RxPackets {
		t.Errorf("ESP lost on a veth: A sent %d, B got %d; B sent %d, A got %d", ca.TxPackets, cb.RxPackets, cb.TxPackets, ca.RxPackets)
	}
}
