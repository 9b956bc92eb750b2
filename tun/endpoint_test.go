package tun_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
	"github.com/imsec/imsec/tun/udp"
	"github.com/imsec/imsec/tun/udptest"
)

// countingConn is a Wrap that counts the datagrams it reads and writes and
// whether it was closed.
type countingConn struct {
	tun.PacketConn
	in, out atomic.Uint64
	closed  atomic.Bool
}

func (c *countingConn) ReadBatch(msgs []udp.Message) (int, error) {
	n, err := c.PacketConn.ReadBatch(msgs)
	c.in.Add(uint64(max(n, 0)))
	return n, err
}

func (c *countingConn) WriteBatch(msgs []udp.Message) (int, error) {
	n, err := c.PacketConn.WriteBatch(msgs)
	c.out.Add(uint64(max(n, 0)))
	return n, err
}

// Close does not close the wrapped socket: the Endpoint must.
func (c *countingConn) Close() error { c.closed.Store(true); return nil }

// TestEndpointsExchangePackets: two endpoints on loopback UDP, each a
// socket, a wrapper (on A), a netstack, a pump and a peer, with SAs both
// ways, carry UDP between their netstacks; Close releases everything.
func TestEndpointsExchangePackets(t *testing.T) {
	noLeaks(t)
	innerA, innerB := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	all := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	var wrapA *countingConn
	a, err := tun.NewEndpoint(tun.EndpointConfig{
		Listen:   netip.MustParseAddrPort("127.0.0.1:0"),
		Wrap:     func(c tun.PacketConn) tun.PacketConn { wrapA = &countingConn{PacketConn: c}; return wrapA },
		Netstack: &tun.NetstackOptions{MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(innerA, 24)}, Name: "a"},
		Peer:     &tun.PeerConfig{Name: "b", Allowed: all, Routes: all}, // endpoint set below
	})
	fakeMust(t, err)
	defer a.Close()
	b, err := tun.NewEndpoint(tun.EndpointConfig{
		Listen:   netip.MustParseAddrPort("127.0.0.1:0"),
		Connect:  a.LocalAddr(),
		Netstack: &tun.NetstackOptions{MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(innerB, 24)}, Name: "b"},
		Pump:     tun.Config{BatchPad: -1},
		Peer:     &tun.PeerConfig{Name: "a", Endpoint: a.LocalAddr(), Allowed: all, Routes: all},
	})
	fakeMust(t, err)
	defer b.Close()
	a.Peer.SetEndpoint(b.LocalAddr())

	if a.Netstack == nil || a.Device != tun.Device(a.Netstack) || a.Kernel != nil || a.Peer.Name() != "b" || b.Peer.Endpoint() != a.LocalAddr() {
		t.Fatalf("endpoint fields: %+v", a)
	}
	if !a.LocalAddr().Addr().IsLoopback() || a.LocalAddr().Port() == 0 || a.LocalAddr() != a.Pump.LocalAddr() {
		t.Fatalf("LocalAddr %v", a.LocalAddr())
	}
	outAB, inAB := tun.SAPair(t, 0x1001, esp.EncAESCBC, esp.AuthHMACSHA196)
	outBA, inBA := tun.SAPair(t, 0x2001, esp.EncAESCBC, esp.AuthHMACSHA196)
	a.Peer.SetOutbound(outAB)
	b.Peer.SetOutbound(outBA)
	fakeMust(t, b.Pump.AddInbound(b.Peer, inAB))
	fakeMust(t, a.Pump.AddInbound(a.Peer, inBA))

	ca := mustUDP(t, a.Netstack, ap(innerA, 5060))
	cb := mustUDP(t, b.Netstack, ap(innerB, 5060))
	buf := make([]byte, 100)
	if _, err := ca.WriteToUDPAddrPort([]byte("REGISTER"), ap(innerB, 5060)); err != nil {
		t.Fatal(err)
	}
	if n, from, err := cb.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "REGISTER" || from != ap(innerA, 5060) {
		t.Fatalf("B got %q from %v (%v)", buf[:n], from, err)
	}
	if _, err := cb.WriteToUDPAddrPort([]byte("200 OK"), ap(innerA, 5060)); err != nil {
		t.Fatal(err)
	}
	if n, from, err := ca.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "200 OK" || from != ap(innerB, 5060) {
		t.Fatalf("A got %q from %v (%v)", buf[:n], from, err)
	}
	if got := a.Pump.Counters(); got.TxPackets != 1 || got.RxPackets != 1 || wrapA.out.Load() != 1 || wrapA.in.Load() != 1 {
		t.Fatalf("A counters %+v, wrapper out %d in %d", got, wrapA.out.Load(), wrapA.in.Load())
	}

	addrA := a.LocalAddr()
	fakeMust(t, a.Close())
	fakeMust(t, a.Close()) // idempotent
	if !wrapA.closed.Load() {
		t.Error("Close did not close the wrapper")
	}
	if _, err := a.Netstack.ListenUDP(ap(innerA, 5061)); err == nil {
		t.Error("the netstack is still open after Close")
	}
	// The socket under the wrapper, which does not close it, is closed.
	c, err := udp.Listen(addrA)
	fakeMust(t, err)
	c.Close()
}

// TestEndpointReadyConnAndDevice: a ready socket and device (in-memory
// fakes) become the Endpoint's, and its Close closes them.
func TestEndpointReadyConnAndDevice(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	conn, err := n.Listen(fakeUEOuter)
	fakeMust(t, err)
	dev := tuntest.NewChannelDevice(1400, 8, 8)
	e, err := tun.NewEndpoint(tun.EndpointConfig{Conn: conn, Device: dev})
	fakeMust(t, err)
	if e.Device != tun.Device(dev) || e.Netstack != nil || e.Kernel != nil || e.Peer != nil || e.LocalAddr() != fakeUEOuter {
		t.Fatalf("endpoint fields: %+v", e)
	}
	fakeMust(t, e.Close())
	if _, err := dev.Read([][]byte{make([]byte, 2000)}, []int{0}, tun.MinOffset); !errors.Is(err, net.ErrClosed) {
		t.Errorf("device Read after Close: %v", err)
	}
	if _, err := conn.WriteToUDPAddrPort([]byte{1}, fakeGWOuter); !errors.Is(err, net.ErrClosed) {
		t.Errorf("socket write after Close: %v", err)
	}
}

// openFDs counts the process's open files (-1 where /proc is missing).
func openFDs(t *testing.T) int {
	if runtime.GOOS != "linux" {
		return -1
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// TestEndpointErrorsReleaseEverything: whichever step fails, NewEndpoint
// returns an *EndpointError naming it, and has closed the socket it bound
// (the port can be bound again, no file is left open), the wrapper, the
// device it made or was given, and the Pump's goroutines (goleak).
func TestEndpointErrorsReleaseEverything(t *testing.T) {
	noLeaks(t)
	// A free port, bound by each NewEndpoint below.
	c, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	fakeMust(t, err)
	port := c.LocalAddr()
	c.Close()
	ns := func(mtu int) *tun.NetstackOptions { return &tun.NetstackOptions{MTU: mtu} }
	for _, tc := range []struct {
		name string
		cfg  tun.EndpointConfig
		step tun.EndpointStep
	}{
		{"no device", tun.EndpointConfig{Listen: port}, tun.StepConfig},
		{"two devices", tun.EndpointConfig{Listen: port, Netstack: ns(1400), Device: tuntest.NewChannelDevice(1400, 1, 1)}, tun.StepConfig},
		{"pump config sets Device", tun.EndpointConfig{Listen: port, Netstack: ns(1400), Pump: tun.Config{Device: tuntest.NewChannelDevice(1400, 1, 1)}}, tun.StepConfig},
		{"no socket", tun.EndpointConfig{Netstack: ns(1400)}, tun.StepConfig},
		{"Wrap returns nil", tun.EndpointConfig{Listen: port, Wrap: func(tun.PacketConn) tun.PacketConn { return nil }, Netstack: ns(1400)}, tun.StepConfig},
		{"bad netstack MTU after the socket", tun.EndpointConfig{Listen: port, Netstack: ns(100)}, tun.StepDevice},
		{"device MTU the pump refuses", tun.EndpointConfig{Listen: port, Netstack: ns(65535)}, tun.StepPump},
		{"bad peer route after the pump started", tun.EndpointConfig{Listen: port, Netstack: ns(1400),
			Wrap: func(c tun.PacketConn) tun.PacketConn { return &countingConn{PacketConn: c} },
			Peer: &tun.PeerConfig{Routes: []netip.Prefix{{}}}}, tun.StepPeer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			fds := openFDs(t)
			given, _ := tc.cfg.Device.(*tuntest.ChannelDevice)
			inPump := tc.cfg.Pump.Device
			e, err := tun.NewEndpoint(tc.cfg)
			var ee *tun.EndpointError
			if e != nil || !errors.As(err, &ee) || ee.Step != tc.step {
				t.Fatalf("NewEndpoint = %v, %v; want an EndpointError at step %v", e, err, tc.step)
			}
			t.Logf("%v", err)
			if got := openFDs(t); got != fds {
				t.Errorf("%d files open before, %d after", fds, got)
			}
			c, err := udp.Listen(port)
			if err != nil {
				t.Fatalf("port %v not released: %v", port, err)
			}
			c.Close()
			if given != nil {
				if _, err := given.Read([][]byte{make([]byte, 2000)}, []int{0}, tun.MinOffset); !errors.Is(err, net.ErrClosed) {
					t.Errorf("the given device is still open: %v", err)
				}
			}
			if inPump != nil {
				inPump.Close() // not the Endpoint's: a config mistake
			}
		})
	}

	// A socket that cannot be bound is a socket error, and the device
	// given with it is closed.
	busy, err := udp.Listen(port)
	fakeMust(t, err)
	defer busy.Close()
	dev := tuntest.NewChannelDevice(1400, 1, 1)
	_, err = tun.NewEndpoint(tun.EndpointConfig{Listen: port, Device: dev})
	var ee *tun.EndpointError
	if !errors.As(err, &ee) || ee.Step != tun.StepSocket || !errors.Is(err, ee.Err) {
		t.Fatalf("binding a busy port: %v", err)
	}
	if _, err := dev.Read([][]byte{make([]byte, 2000)}, []int{0}, tun.MinOffset); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the given device is still open: %v", err)
	}
}
