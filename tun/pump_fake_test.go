package tun_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
	"github.com/imsec/imsec/tun/udptest"
)

// Pump tests on the in-memory fakes: channel devices (tuntest) and an
// in-memory UDP network with a NAT, loss and delay (udptest). Outer
// addresses are from RFC 5737, inner ones from RFC 6598.

var (
	fakeUEOuter = netip.MustParseAddrPort("198.51.100.10:4500") // behind the NAT when there is one
	fakeNATOut  = netip.MustParseAddr("203.0.113.10")
	fakeGWOuter = netip.MustParseAddrPort("203.0.113.1:4500")
	fakeUEInner = netip.MustParseAddr("100.64.0.2")
	fakeGWInner = netip.MustParseAddr("100.64.0.1")
)

// fakeSAs makes the two directions of an aes-cbc/hmac-sha-1-96 tunnel with
// random keys: UE->gateway (SPI 0x1001) and gateway->UE (SPI 0x2001).
func fakeSAs(t testing.TB) (ueOut *esp.Outbound, gwIn *esp.Inbound, gwOut *esp.Outbound, ueIn *esp.Inbound) {
	t.Helper()
	ueOut, gwIn = tun.SAPair(t, 0x1001, esp.EncAESCBC, esp.AuthHMACSHA196)
	gwOut, ueIn = tun.SAPair(t, 0x2001, esp.EncAESCBC, esp.AuthHMACSHA196)
	return
}

// fakeEnd is one pump with its device and socket.
type fakeEnd struct {
	dev  tun.Device
	conn *udptest.Conn
	pump *tun.Pump
	peer *tun.Peer // the far end
}

// fakeLink joins a UE and a gateway over net: the UE sends ESP to the
// gateway's socket with a default route; the gateway learns the UE's
// (public) endpoint from its first authenticated packet (FollowSource).
func fakeLink(t testing.TB, n *udptest.Network, ueDev, gwDev tun.Device) (ue, gw *fakeEnd) {
	t.Helper()
	return fakeLinkConfig(t, n, ueDev, gwDev, tun.Config{})
}

// fakeLinkConfig is fakeLink with the options of cfg for both pumps.
func fakeLinkConfig(t testing.TB, n *udptest.Network, ueDev, gwDev tun.Device, cfg tun.Config) (ue, gw *fakeEnd) {
	t.Helper()
	return fakeLinkWrapped(t, n, ueDev, gwDev, cfg, nil)
}

// fakeLinkWrapped is fakeLinkConfig with the gateway pump's socket seen
// through wrapGW (if not nil).
func fakeLinkWrapped(t testing.TB, n *udptest.Network, ueDev, gwDev tun.Device, cfg tun.Config, wrapGW func(tun.PacketConn) tun.PacketConn) (ue, gw *fakeEnd) {
	t.Helper()
	ue, gw = &fakeEnd{dev: ueDev}, &fakeEnd{dev: gwDev}
	var err error
	if ue.conn, err = n.Listen(fakeUEOuter); err != nil {
		t.Fatal(err)
	}
	if gw.conn, err = n.Listen(fakeGWOuter); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*fakeEnd{ue, gw} {
		c := cfg
		c.Device, c.Conn = e.dev, e.conn
		if e == gw && wrapGW != nil {
			c.Conn = wrapGW(e.conn)
		}
		if e.pump, err = tun.NewPump(c); err != nil {
			t.Fatal(err)
		}
		p := e.pump
		t.Cleanup(func() { p.Close() })
	}
	all := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	ueHost := []netip.Prefix{netip.PrefixFrom(fakeUEInner, 32)}
	if ue.peer, err = ue.pump.AddPeer(tun.PeerConfig{Name: "gateway", Endpoint: fakeGWOuter, Allowed: all, Routes: all}); err != nil {
		t.Fatal(err)
	}
	if gw.peer, err = gw.pump.AddPeer(tun.PeerConfig{Name: "ue", FollowSource: true, Allowed: ueHost, Routes: ueHost}); err != nil {
		t.Fatal(err)
	}
	ueOut, gwIn, gwOut, ueIn := fakeSAs(t)
	ue.peer.SetOutbound(ueOut)
	gw.peer.SetOutbound(gwOut)
	if err := gw.pump.AddInbound(gw.peer, gwIn); err != nil {
		t.Fatal(err)
	}
	if err := ue.pump.AddInbound(ue.peer, ueIn); err != nil {
		t.Fatal(err)
	}
	return ue, gw
}

func fakeMust(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fakeWait polls cond for up to 5 s.
func fakeWait(t testing.TB, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not reached in 5s")
		}
	}
}

func up(i int) []byte {
	return tuntest.UDPPacket(netip.AddrPortFrom(fakeUEInner, 5060), netip.AddrPortFrom(fakeGWInner, 5060), fmt.Appendf(nil, "up %d", i))
}

func down(i int) []byte {
	return tuntest.UDPPacket(netip.AddrPortFrom(fakeGWInner, 5060), netip.AddrPortFrom(fakeUEInner, 5060), fmt.Appendf(nil, "down %d", i))
}

// expectPacket waits for the next packet out of d and requires it to be want.
func expectPacket(t *testing.T, d *tuntest.ChannelDevice, want []byte) {
	t.Helper()
	select {
	case got := <-d.Outbound:
		if !bytes.Equal(got, want) {
			t.Fatalf("device got %q, want %q", got[28:], want[28:])
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("device did not get %q within 5s", want[28:])
	}
}

// TestFakeNATRebinding: the UE is behind a NAT that rebinds (forgets its
// mappings) twice: once while idle, after which the gateway's next packet is
// lost until the UE sends again, and once in the middle of a burst. The
// gateway follows each new public port, and nothing else is lost.
func TestFakeNATRebinding(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	nat, err := n.AddNAT(fakeUEOuter.Addr(), fakeNATOut)
	fakeMust(t, err)
	ueDev := tuntest.NewChannelDevice(1400, 8, 1024)
	gwDev := tuntest.NewChannelDevice(1400, 8, 1024)
	ue, gw := fakeLink(t, n, ueDev, gwDev)

	lockstep := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			ueDev.Inbound <- up(i)
			expectPacket(t, gwDev, up(i))
			gwDev.Inbound <- down(i)
			expectPacket(t, ueDev, down(i))
		}
	}
	public := func() netip.AddrPort {
		t.Helper()
		p, ok := nat.Public(fakeUEOuter)
		if !ok {
			t.Fatal("the NAT has no mapping for the UE")
		}
		return p
	}

	lockstep(0, 20)
	first := public()
	if got := gw.peer.Endpoint(); got != first || first.Addr() != fakeNATOut {
		t.Fatalf("gateway sends to %v, the UE is mapped to %v", got, first)
	}

	// Rebind while idle: the gateway still sends to the old port, which the
	// NAT no longer maps, so the packet is lost in the network.
	nat.Rebind()
	before := n.Stats().Unroutable
	gwDev.Inbound <- down(-1)
	fakeWait(t, func() bool { return n.Stats().Unroutable == before+1 })
	// The UE speaks first and the gateway follows it to the new port.
	lockstep(20, 40)
	second := public()
	if second == first || gw.peer.Endpoint() != second {
		t.Fatalf("after the rebinding the UE is at %v (was %v), the gateway sends to %v", second, first, gw.peer.Endpoint())
	}

	// Rebind in the middle of a burst from the UE: every packet arrives
	// (the NAT maps the UE afresh), then the gateway's burst goes to the
	// newest port.
	const burst = 200
	for i := range burst {
		if i == burst/2 {
			fakeWait(t, func() bool { return len(gwDev.Outbound) >= burst/4 }) // some went out under the old mapping
			nat.Rebind()
		}
		ueDev.Inbound <- up(1000 + i)
	}
	for i := range burst {
		expectPacket(t, gwDev, up(1000+i))
	}
	third := public()
	if third == second || gw.peer.Endpoint() != third {
		t.Fatalf("after the second rebinding the UE is at %v (was %v), the gateway sends to %v", third, second, gw.peer.Endpoint())
	}
	for i := range burst {
		gwDev.Inbound <- down(1000 + i)
	}
	for i := range burst {
		expectPacket(t, ueDev, down(1000+i))
	}
	if m := gw.peer.Counters().EndpointMoves; m != 3 { // unknown -> first -> second -> third
		t.Errorf("endpoint moved %d times, want 3", m)
	}
	if m := gw.pump.Counters().EndpointMoves; m != 3 { // the pump's total, what a monitor reads
		t.Errorf("the pump counted %d endpoint moves, want 3", m)
	}
	gc, uc := gw.pump.Counters(), ue.pump.Counters()
	if gc.RxPackets != 40+burst || uc.RxPackets != 40+burst || uc.TxPackets != 40+burst || gc.TxPackets != 41+burst {
		t.Errorf("gateway %+v\nUE %+v", gc, uc)
	}
	if len(gc.Drops)+len(uc.Drops) != 0 {
		t.Errorf("drops: gateway %v, UE %v", gc.Drops, uc.Drops)
	}
	select {
	case p := <-ueDev.Outbound:
		t.Errorf("the UE got %q after everything: the packet lost to the rebinding came back?", p[28:])
	default:
	}
}

// lossyNet makes n lose a fraction of datagrams and hold the others a
// random 0..maxDelay (so they overtake each other), deterministically
// from seed.
func lossyNet(n *udptest.Network, loss float64, maxDelay time.Duration, seed uint64) {
	var mu sync.Mutex
	rng := mrand.New(mrand.NewPCG(seed, seed^0x5eed))
	n.SetDrop(func(udptest.Datagram) bool {
		mu.Lock()
		defer mu.Unlock()
		return rng.Float64() < loss
	})
	n.SetDelay(func(udptest.Datagram) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return time.Duration(rng.Int64N(int64(maxDelay)))
	})
}

// TestFakeLossyNetworkDatagrams: through a network that loses 20% and
// reorders by up to 3 ms, every datagram is accounted for: lost in the
// network, delivered intact exactly once, or (delivered too late for the
// replay window) counted as a replay drop. Nothing is duplicated, nothing
// corrupted, and the pump drops nothing for any other reason.
func TestFakeLossyNetworkDatagrams(t *testing.T) {
	n := udptest.NewNetwork()
	lossyNet(n, 0.2, 3*time.Millisecond, 1)
	ueDev := tuntest.NewChannelDevice(1400, 8, 4096)
	gwDev := tuntest.NewChannelDevice(1400, 8, 4096)
	ue, gw := fakeLink(t, n, ueDev, gwDev)

	send := func(dev *tuntest.ChannelDevice, mk func(int) []byte, count int) {
		for i := range count {
			dev.Inbound <- mk(i)
			if i%64 == 63 {
				time.Sleep(time.Millisecond) // a pace the queues hold
			}
		}
	}
	// collect reads what comes out of dev until the network is quiet, and
	// checks each packet against mk.
	collect := func(name string, dev *tuntest.ChannelDevice, mk func(int) []byte, count int, p *tun.Pump) {
		t.Helper()
		fakeWait(t, func() bool { s := n.Stats(); return s.Sent == s.Dropped+s.Delivered+s.Unroutable+s.QueueFull })
		sentBefore := n.Stats().Sent
		seen := map[int]bool{}
		reordered := 0
		last := -1
		for {
			var pkt []byte
			select {
			case pkt = <-dev.Outbound:
			case <-time.After(200 * time.Millisecond):
			}
			if pkt == nil {
				break
			}
			var i int
			if _, err := fmt.Sscanf(string(pkt[28:]), name+" %d", &i); err != nil || i < 0 || i >= count || !bytes.Equal(pkt, mk(i)) {
				t.Fatalf("%s: corrupted or foreign packet %q", name, pkt)
			}
			if seen[i] {
				t.Fatalf("%s: packet %d delivered twice", name, i)
			}
			seen[i] = true
			if i < last {
				reordered++
			}
			last = max(last, i)
		}
		s := n.Stats()
		if s.Sent != sentBefore {
			t.Fatalf("%s: traffic still flowing", name)
		}
		c := p.Counters()
		replays := c.Drops["replay"]
		for r, v := range c.Drops {
			if r != "replay" {
				t.Errorf("%s: %d drops for %s", name, v, r)
			}
		}
		if uint64(len(seen)) != c.RxPackets || c.RxPackets+replays != s.Delivered || s.QueueFull+s.Unroutable != 0 {
			t.Errorf("%s: %d packets out of the device, pump counted %d in and %d replays, network %+v", name, len(seen), c.RxPackets, replays, s)
		}
		if s.Dropped == 0 || reordered == 0 || len(seen) < count/2 {
			t.Errorf("%s: the network was not lossy and reordering enough to test anything: %+v, %d reordered, %d of %d through", name, s, reordered, len(seen), count)
		}
		t.Logf("%s: %d sent, %d lost, %d delivered (%d reordered, %d too late for the window)", name, count, s.Dropped, s.Delivered, reordered, replays)
	}

	const count = 1500
	// UE -> gateway. The first delivered packet teaches the gateway the
	// UE's endpoint.
	send(ueDev, up, count)
	// A quiet network only means what was sent has arrived: on a busy host
	// the UE's pump may still be reading its device. Wait until it has
	// sent every packet.
	fakeWait(t, func() bool { return ue.pump.Counters().TxPackets >= count })
	collect("up", gwDev, up, count, gw.pump)
	// Gateway -> UE. Reset the network counters by using a fresh baseline.
	base := n.Stats()
	send(gwDev, down, count)
	fakeWait(t, func() bool { s := n.Stats(); return s.Sent-base.Sent == count && s.Sent == s.Dropped+s.Delivered })
	// The network's count moves when a datagram is handed to the UE's
	// socket; the pump's when it has read it: wait for the last ones.
	accounted := func() bool {
		uc := ue.pump.Counters()
		return uc.RxPackets+uc.Drops["replay"] == n.Stats().Delivered-base.Delivered
	}
	for end := time.Now().Add(5 * time.Second); !accounted() && time.Now().Before(end); time.Sleep(time.Millisecond) {
	}
	if uc := ue.pump.Counters(); uc.RxPackets+uc.Drops["replay"] != n.Stats().Delivered-base.Delivered {
		t.Fatalf("UE accounted %d + %d replays, network delivered %d", uc.RxPackets, uc.Drops["replay"], n.Stats().Delivered-base.Delivered)
	}
	got := 0
	for len(ueDev.Outbound) > 0 {
		pkt := <-ueDev.Outbound
		var i int
		if _, err := fmt.Sscanf(string(pkt[28:]), "down %d", &i); err != nil || !bytes.Equal(pkt, down(i)) {
			t.Fatalf("corrupted packet %q", pkt)
		}
		got++
	}
	if uint64(got) != ue.pump.Counters().RxPackets {
		t.Fatalf("UE device got %d, pump counted %d", got, ue.pump.Counters().RxPackets)
	}
}

// TestFakeLossyNetworkTCP: TCP between two netstacks through the pumps,
// over a network that loses 3% of datagrams and reorders them by up to
// 2 ms, delivers 1 MiB intact: TCP retransmits, and ESP (a fresh
// sequence number per retransmission, a replay window wide enough for the
// reordering) does not get in its way.
func TestFakeLossyNetworkTCP(t *testing.T) {
	n := udptest.NewNetwork()
	lossyNet(n, 0.03, 2*time.Millisecond, 2)
	ueNS, err := tun.NewNetstack(tun.NetstackOptions{MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(fakeUEInner, 24)}})
	fakeMust(t, err)
	gwNS, err := tun.NewNetstack(tun.NetstackOptions{MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(fakeGWInner, 24)}})
	fakeMust(t, err)
	ue, gw := fakeLink(t, n, ueNS, gwNS)

	ln, err := gwNS.ListenTCP(netip.AddrPortFrom(fakeGWInner, 9000))
	fakeMust(t, err)
	defer ln.Close()
	data := make([]byte, 1<<20)
	rand.Read(data)
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		io.Copy(h, c)
		got <- [32]byte(h.Sum(nil))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := ueNS.DialTCP(ctx, netip.AddrPortFrom(fakeUEInner, 0), netip.AddrPortFrom(fakeGWInner, 9000))
	fakeMust(t, err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	// A stall is failure: TCP must keep retransmitting until it is done.
	// With an RTO of at most a few seconds here, 5 s of silence is a stall.
	lastSent, lastChange := n.Stats().Sent, time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case s := <-got:
			if s != sha256.Sum256(data) {
				t.Fatal("TCP data corrupted through the lossy tunnel")
			}
			st := n.Stats()
			if st.Dropped == 0 {
				t.Fatal("nothing was lost: the test tested nothing")
			}
			t.Logf("network %+v; UE drops %v, gateway drops %v", st, ue.pump.Counters().Drops, gw.pump.Counters().Drops)
			return
		case <-tick.C:
		}
		if s := n.Stats().Sent; s != lastSent {
			lastSent, lastChange = s, time.Now()
			continue
		}
		if time.Since(lastChange) > 5*time.Second {
			t.Fatalf("TCP stalled: no datagram for 5 s and no retransmission (network %+v, UE pump %+v, gateway pump %+v, UE stack %+v, gateway stack %+v). "+
				"Without ESP (two netstacks on a lossy channel) the same happens while tun.tuneStack enables gVisor's RACK "+
				"loss detection (tcpip.TCPRACKLossDetection), and not with tcpip.TCPRecovery(0): gVisor issue #6113, "+
				"which Tailscale works around by turning RACK off (tailscale PR #14896); and, more rarely, with SACK on",
				n.Stats(), ue.pump.Counters(), gw.pump.Counters(), ueNS.Stats(), gwNS.Stats())
		}
	}
}

// TestFakePumpCloseStopsEverything: a pump closed while its socket reader
// waits, its device writer is blocked on a full device, and a Ping waits
// for a reply, returns promptly, unblocks the Ping, closes its device and
// socket, and leaves no goroutine behind (goleak).
func TestFakePumpCloseStopsEverything(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	ueDev := tuntest.NewChannelDevice(1400, 8, 64)
	gwDev := tuntest.NewChannelDevice(1400, 8, 1) // nobody reads: its writer blocks
	ue, gw := fakeLink(t, n, ueDev, gwDev)

	for i := range 20 {
		ueDev.Inbound <- up(i)
	}
	// One packet sits in the device queue, the pump's writer is blocked
	// on the next.
	fakeWait(t, func() bool { return gw.pump.Counters().RxPackets >= 2 })
	pingErr := make(chan error, 1)
	go func() {
		// The gateway has no echo responder and its device is stuck: no reply.
		_, err := ue.pump.Ping(context.Background(), ue.peer, fakeUEInner, fakeGWInner, 1, 1)
		pingErr <- err
	}()
	fakeWait(t, func() bool { return ue.pump.Counters().TxPackets == 21 })

	closed := make(chan struct{})
	go func() {
		gw.pump.Close()
		ue.pump.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a blocked device writer and a pending Ping")
	}
	select {
	case err := <-pingErr:
		if !errors.Is(err, tun.ErrClosedPump) {
			t.Fatalf("pending Ping returned %v, want ErrClosedPump", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending Ping not released by Close")
	}
	// Close closed the device and the socket.
	if _, err := gwDev.Read([][]byte{make([]byte, 2000)}, []int{0}, tun.MinOffset); !errors.Is(err, net.ErrClosed) {
		t.Errorf("device Read after pump Close: %v", err)
	}
	if _, err := gw.conn.WriteToUDPAddrPort([]byte{1}, fakeUEOuter); !errors.Is(err, net.ErrClosed) {
		t.Errorf("socket write after pump Close: %v", err)
	}
	if err := ue.pump.Inject(ue.peer, up(0)); !errors.Is(err, tun.ErrClosedPump) {
		t.Errorf("Inject after Close: %v", err)
	}
	fakeMust(t, ue.pump.Close()) // idempotent
	// noLeaks checks, after every cleanup, that no pump goroutine is left.
}

// TestFakePumpBatchesAndOrder: the pumps take batches from the device and
// the socket (BatchSize 8 and udptest's 64) and keep the order of a
// stream: a burst of 2000 arrives complete and in order on a clean network.
func TestFakePumpBatchesAndOrder(t *testing.T) {
	for _, parallel := range []bool{false, true} {
		t.Run(fmt.Sprintf("ParallelSeal=%v", parallel), func(t *testing.T) { testBatchesAndOrder(t, parallel) })
	}
}

// testBatchesAndOrder sends 2000 packets from the UE's device, 64 per
// device read at most (so that ParallelSeal splits batches), and requires
// every one at the gateway's device, in order, none dropped.
func testBatchesAndOrder(t *testing.T, parallel bool) {
	n := udptest.NewNetwork()
	ueDev := tuntest.NewChannelDevice(1400, 64, 4096)
	gwDev := tuntest.NewChannelDevice(1400, 64, 4096)
	_, gw := fakeLinkConfig(t, n, ueDev, gwDev, tun.Config{ParallelSeal: parallel})
	const count = 2000
	go func() {
		for i := range count {
			ueDev.Inbound <- up(i)
		}
	}()
	for i := range count {
		expectPacket(t, gwDev, up(i))
	}
	c := gw.pump.Counters()
	if c.RxPackets != count || len(c.Drops) != 0 || n.Stats().QueueFull != 0 {
		t.Fatalf("gateway %+v network %+v", c, n.Stats())
	}
	var bytesIn uint64
	for i := range count {
		bytesIn += uint64(len(up(i)))
	}
	if c.RxBytes != bytesIn {
		t.Fatalf("RxBytes %d, want %d", c.RxBytes, bytesIn)
	}
}
