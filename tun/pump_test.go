package tun

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/inet"
	"github.com/imsec/imsec/tun/nat"
	"github.com/imsec/imsec/tun/udp"
)

// saPair makes matching outbound/inbound SAs for one direction.
func saPair(t testing.TB, spi esp.SPI, ealg esp.EncAlg, alg esp.AuthAlg) (*esp.Outbound, *esp.Inbound) {
	t.Helper()
	ek := make([]byte, esp.EncKeyLen(ealg)[0])
	ak := make([]byte, esp.AuthKeyLen(alg))
	rand.Read(ek)
	rand.Read(ak)
	cfg := esp.Config{SPI: spi, Mode: esp.Tunnel, Encryption: ealg, EncKey: ek, Integrity: alg, AuthKey: ak}
	o, err := esp.NewOutbound(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in, err := esp.NewInbound(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o, in
}

var (
	gwInner = netip.MustParseAddr("100.64.0.1")
	ueInner = netip.MustParseAddr("100.64.0.2")
	ue2     = netip.MustParseAddr("100.64.0.3")
	allV4   = netip.MustParsePrefix("0.0.0.0/0")
)

type end struct {
	ns   *Netstack
	pump *Pump
	peer *Peer // the far end as this end sees it
}

// link is a gateway and a UE pump on loopback UDP, both on netstacks, with
// aes-cbc/hmac-sha-1-96 SAs installed both ways.
type link struct {
	gw, ue           end
	ueToGw, gwToUe   esp.SPI
	ueConnAddr       netip.AddrPort
	gwConnAddr       netip.AddrPort
	ueOutSA, gwOutSA *esp.Outbound
}

func newEnd(t testing.TB, addr netip.Addr, echo netip.Addr) end {
	t.Helper()
	var addrs []netip.Prefix
	if addr.IsValid() {
		addrs = []netip.Prefix{netip.PrefixFrom(addr, 24)}
	}
	ns, err := NewNetstack(NetstackOptions{MTU: 1400, Addresses: addrs})
	if err != nil {
		t.Fatal(err)
	}
	c, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPump(Config{Device: ns, Conn: c, EchoResponder: echo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return end{ns: ns, pump: p}
}

// newLink builds the pair. ueVia, if valid, is where the UE sends ESP
// (a NAT's inside address) instead of the gateway's socket.
func newLink(t testing.TB, ueVia func(gw netip.AddrPort) netip.AddrPort) *link {
	t.Helper()
	l := &link{ueToGw: 0x1001, gwToUe: 0x2001}
	l.gw = newEnd(t, gwInner, gwInner)
	l.ue = newEnd(t, ueInner, netip.Addr{})
	l.gwConnAddr = l.gw.pump.LocalAddr()
	l.ueConnAddr = l.ue.pump.LocalAddr()
	gwEP := l.gwConnAddr
	if ueVia != nil {
		gwEP = ueVia(gwEP)
	}
	var err error
	l.ue.peer, err = l.ue.pump.AddPeer(PeerConfig{Name: "gateway", Endpoint: gwEP, Allowed: []netip.Prefix{allV4}, Routes: []netip.Prefix{allV4}})
	if err != nil {
		t.Fatal(err)
	}
	// The gateway learns the UE's endpoint from its first authenticated packet.
	l.gw.peer, err = l.gw.pump.AddPeer(PeerConfig{Name: "ue", FollowSource: true,
		Allowed: []netip.Prefix{netip.PrefixFrom(ueInner, 32)}, Routes: []netip.Prefix{netip.PrefixFrom(ueInner, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	o1, i1 := saPair(t, l.ueToGw, esp.EncAESCBC, esp.AuthHMACSHA196)
	o2, i2 := saPair(t, l.gwToUe, esp.EncAESCBC, esp.AuthHMACSHA196)
	l.ue.peer.SetOutbound(o1)
	l.ueOutSA, l.gwOutSA = o1, o2
	must(t, l.gw.pump.AddInbound(l.gw.peer, i1))
	l.gw.peer.SetOutbound(o2)
	must(t, l.ue.pump.AddInbound(l.ue.peer, i2))
	return l
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// pinhole sends the UE's first packet, which teaches the gateway where the
// UE is: an echo from 0.0.0.0 (no inner address needed) to the gateway.
func (l *link) pinhole(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := l.ue.pump.Ping(ctx, l.ue.peer, netip.IPv4Unspecified(), gwInner, 7, 1); err != nil {
		t.Fatalf("pinhole ping: %v", err)
	}
}

func TestPinholeAndUDPBothWays(t *testing.T) {
	l := newLink(t, nil)
	l.pinhole(t)
	if got := l.gw.peer.Endpoint(); got != l.ueConnAddr {
		t.Fatalf("gateway learned %v, want %v", got, l.ueConnAddr)
	}
	srv, err := l.gw.ns.ListenUDP(netip.AddrPortFrom(gwInner, 5060))
	must(t, err)
	defer srv.Close()
	cli, err := l.ue.ns.ListenUDP(netip.AddrPortFrom(ueInner, 5062))
	must(t, err)
	defer cli.Close()
	for i := range 20 {
		msg := []byte(fmt.Sprintf("REGISTER %d", i))
		if _, err := cli.WriteTo(msg, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gwInner, 5060))); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2000)
		srv.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := srv.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("server got %q %v", buf[:n], err)
		}
		if _, err := srv.WriteTo([]byte("200 OK"), from); err != nil {
			t.Fatal(err)
		}
		cli.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err = cli.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "200 OK" {
			t.Fatalf("client got %q %v", buf[:n], err)
		}
	}
	// Ping the UE's netstack from the gateway's through the tunnel.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := l.gw.ns.Ping(ctx, ueInner, 1, []byte("hi")); err != nil {
		t.Fatalf("ping UE: %v", err)
	}
	c := l.gw.pump.Counters()
	if c.RxPackets < 21 || c.Echoes != 1 || len(c.Drops) != 0 || c.Spoofed != 0 {
		t.Fatalf("gateway counters %+v", c)
	}
	var sawIn, sawOut bool
	for _, s := range l.gw.pump.SACounters(l.gw.peer) {
		if s.Inbound && s.SPI == l.ueToGw && s.Packets >= 21 {
			sawIn = true
		}
		if !s.Inbound && s.SPI == l.gwToUe && s.Packets >= 21 && s.Sequence == s.Packets {
			sawOut = true
		}
	}
	if !sawIn || !sawOut {
		t.Fatalf("per-SA counters wrong: %+v", l.gw.pump.SACounters(nil))
	}
}

func TestTCPBulkThroughTunnel(t *testing.T) {
	l := newLink(t, nil)
	l.pinhole(t)
	ln, err := l.gw.ns.ListenTCP(netip.AddrPortFrom(gwInner, 9000))
	must(t, err)
	defer ln.Close()
	const size = 4 << 20
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	got := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [32]byte{}
			return
		}
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		var s [32]byte
		copy(s[:], h.Sum(nil))
		got <- s
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := l.ue.ns.DialTCP(ctx, netip.AddrPortFrom(ueInner, 0), netip.AddrPortFrom(gwInner, 9000))
	must(t, err)
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case s := <-got:
		if s != want {
			t.Fatal("TCP data corrupted through the tunnel")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("TCP transfer did not finish")
	}
}

// TestSpoofedSourceDropped: a UE with a valid SA sends a packet claiming
// another UE's inner address; the gateway drops and counts it.
func TestSpoofedSourceDropped(t *testing.T) {
	l := newLink(t, nil)
	l.pinhole(t)
	spoof := inet.AppendEcho(nil, inet.EchoRequest, ue2, netip.MustParseAddr("100.64.0.9"), 1, 1, nil)
	must(t, l.ue.pump.Inject(l.ue.peer, spoof))
	waitFor(t, func() bool { return l.gw.pump.Counters().Spoofed == 1 })
	if l.gw.peer.Counters().Spoofed != 1 {
		t.Fatal("peer spoof counter not moved")
	}
}

// TestReplayAndForgeryDoNotMoveEndpoint: a captured ESP datagram replayed
// from another address is dropped as a replay and does not move the UE's
// endpoint; a forged one fails authentication.
func TestReplayAndForgeryDoNotMoveEndpoint(t *testing.T) {
	l := newLink(t, nil)
	l.pinhole(t)
	// Build a valid ESP packet by hand under the UE's outbound SA...
	pkt := inet.AppendEcho(nil, inet.EchoRequest, ueInner, gwInner, 9, 9, nil)
	buf := make([]byte, 64+len(pkt)+esp.TailRoom)
	copy(buf[64:], pkt)
	espPkt, err := l.ueOutSA.Seal(buf, 64, len(pkt), 0)
	must(t, err)
	attacker, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	must(t, err)
	defer attacker.Close()
	gw := net.UDPAddrFromAddrPort(l.gwConnAddr)
	// ... a forged copy (one bit flipped in the ciphertext) first,
	forged := bytes.Clone(espPkt)
	forged[len(forged)-20] ^= 1
	attacker.WriteTo(forged, gw)
	waitFor(t, func() bool { return l.gw.pump.Counters().Drops["auth"] == 1 })
	// then the genuine packet from the UE's own address, then its replay.
	ueSock := l.ue.pump.conn.(*udp.Conn)
	ueSock.WriteBatch([]udp.Message{{Buf: espPkt, N: len(espPkt), Addr: l.gwConnAddr}})
	waitFor(t, func() bool { return l.gw.pump.Counters().Echoes == 2 })
	attacker.WriteTo(espPkt, gw)
	waitFor(t, func() bool { return l.gw.pump.Counters().Drops["replay"] == 1 })
	if ep := l.gw.peer.Endpoint(); ep != l.ueConnAddr {
		t.Fatalf("endpoint moved to %v by an attacker", ep)
	}
	// Non-ESP and keepalives are counted, not ESP, and not liveness.
	before := l.gw.peer.LastReceived()
	attacker.WriteTo([]byte{0, 0, 0, 0, 1, 2}, gw)
	attacker.WriteTo([]byte{0xff}, gw)
	attacker.WriteTo([]byte{1, 2}, gw)
	waitFor(t, func() bool {
		c := l.gw.pump.Counters()
		return c.NonESP == 1 && c.KeepalivesReceived == 1 && c.Invalid == 1
	})
	if l.gw.peer.LastReceived() != before {
		t.Fatal("a keepalive counted as SA liveness")
	}
}

// newLinkBehindNAT is newLink with the UE behind a userspace NAT
// (address-and-port-dependent filtering) on its way to the gateway.
func newLinkBehindNAT(t *testing.T) (*link, *nat.NAT) {
	t.Helper()
	var n *nat.NAT
	l := newLink(t, func(gw netip.AddrPort) netip.AddrPort {
		var err error
		n, err = nat.New(nat.Config{Outside: netip.MustParseAddr("127.0.0.1"),
			Forwards:  []nat.Forward{{Inside: netip.MustParseAddrPort("127.0.0.1:0"), Destination: gw}},
			Filtering: nat.AddressPortDependent})
		must(t, err)
		t.Cleanup(func() { n.Close() })
		return n.InsideAddrs()[0]
	})
	return l, n
}

// TestNATRebinding: the UE sits behind a userspace NAT; the NAT loses its
// mapping mid-stream; the UE's next packet comes from a new outside port and
// the gateway follows it, so traffic continues both ways.
func TestNATRebinding(t *testing.T) {
	l, n := newLinkBehindNAT(t)
	l.pinhole(t)
	first := l.gw.peer.Endpoint()
	if first == l.ueConnAddr {
		t.Fatal("gateway sees the UE's private address: no NAT in the path")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.gw.ns.Ping(ctx, ueInner, 1, nil); err != nil {
		t.Fatalf("ping through NAT: %v", err)
	}
	n.Flush()
	// The gateway's next packet is lost (no mapping); once the UE sends, it
	// is found again at its new port.
	l.pinhole(t)
	if second := l.gw.peer.Endpoint(); second == first {
		t.Fatalf("endpoint did not follow the rebinding (%v)", second)
	}
	if _, err := l.gw.ns.Ping(ctx, ueInner, 2, nil); err != nil {
		t.Fatalf("ping after rebinding: %v", err)
	}
	if l.gw.peer.Counters().EndpointMoves != 2 { // unknown -> first -> second
		t.Fatalf("endpoint moves %d", l.gw.peer.Counters().EndpointMoves)
	}
}

// TestRekeyUnderLoad installs new SAs while a stream flows and removes the
// old ones only after the new ones carry traffic: nothing is lost.
func TestRekeyUnderLoad(t *testing.T) {
	l := newLink(t, nil)
	l.pinhole(t)
	srv, err := l.gw.ns.ListenUDP(netip.AddrPortFrom(gwInner, 7000))
	must(t, err)
	defer srv.Close()
	cli, err := l.ue.ns.ListenUDP(netip.AddrPortFrom(ueInner, 7001))
	must(t, err)
	defer cli.Close()
	const total = 3000
	var recv sync.WaitGroup
	recv.Add(1)
	seen := make([]bool, total)
	go func() {
		defer recv.Done()
		buf := make([]byte, 100)
		for {
			srv.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			var i int
			fmt.Sscanf(string(buf[:n]), "%d", &i)
			if i >= 0 && i < total {
				seen[i] = true
			}
		}
	}()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(gwInner, 7000))
	for i := range total {
		if i == total/3 {
			// Rekey: the gateway installs the new inbound SA first, then the
			// UE switches its outbound; old packets in flight still open.
			o, in := saPair(t, 0x1002, esp.EncAESCBC, esp.AuthHMACSHA196)
			must(t, l.gw.pump.AddInbound(l.gw.peer, in))
			l.ue.peer.SetOutbound(o)
		}
		if i == 2*total/3 {
			must(t, l.gw.pump.RemoveInbound(l.ueToGw))
		}
		cli.WriteTo([]byte(fmt.Sprint(i)), dst)
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // keep the socket buffers from overflowing
		}
	}
	recv.Wait()
	lost := 0
	for _, ok := range seen {
		if !ok {
			lost++
		}
	}
	if lost != 0 {
		t.Fatalf("%d of %d packets lost across the rekey; counters %+v", lost, total, l.gw.pump.Counters())
	}
	if n, ok := l.gw.pump.InboundPackets(0x1002); !ok || n < total/3 {
		t.Fatalf("new SA carried %d", n)
	}
}

// TestKeepalives: an idle UE sends a keepalive per interval; a busy one none.
func TestKeepalives(t *testing.T) {
	clock := &fakeNow{t: time.Unix(1e9, 0)}
	ns, err := NewNetstack(NetstackOptions{})
	must(t, err)
	c, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	must(t, err)
	p, err := NewPump(Config{Device: ns, Conn: c, Now: clock.Now})
	must(t, err)
	defer p.Close()
	sink, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	must(t, err)
	defer sink.Close()
	peer, err := p.AddPeer(PeerConfig{Name: "gw", Endpoint: sink.LocalAddr(), Keepalive: 20 * time.Second})
	must(t, err)
	for range 3 {
		clock.Add(20 * time.Second)
		p.SendKeepalives(nil)
		p.SendKeepalives(nil) // a second call in the same instant sends nothing
	}
	if k := peer.Counters().Keepalives; k != 3 {
		t.Fatalf("sent %d keepalives, want 3", k)
	}
	msgs := []udp.Message{{Buf: make([]byte, 10)}}
	for range 3 {
		n, err := sink.ReadBatch(msgs)
		if err != nil || n != 1 || msgs[0].N != 1 || msgs[0].Buf[0] != 0xff {
			t.Fatalf("sink got %v %v", msgs[0], err)
		}
	}
}

type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeNow) Add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func TestPumpConfigAndClose(t *testing.T) {
	if _, err := NewPump(Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
	l := newLink(t, nil)
	must(t, l.gw.pump.Close())
	must(t, l.gw.pump.Close())
	if err := l.gw.pump.Inject(l.gw.peer, []byte{0x45}); !errors.Is(err, ErrClosedPump) {
		t.Fatalf("inject after close: %v", err)
	}
	if _, err := l.gw.pump.AddPeer(PeerConfig{}); !errors.Is(err, ErrClosedPump) {
		t.Fatalf("add peer after close: %v", err)
	}
	// A host route cannot point at two peers.
	if _, err := l.ue.pump.AddPeer(PeerConfig{Name: "x", Routes: []netip.Prefix{netip.MustParsePrefix("100.64.0.77/32")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ue.pump.AddPeer(PeerConfig{Name: "y", Routes: []netip.Prefix{netip.MustParsePrefix("100.64.0.77/32")}}); err == nil {
		t.Fatal("duplicate host route accepted")
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestOutboundSelectors: TS 33.203 binds SAs to port pairs; the pump picks
// the outbound SA by the inner packet's ports, else the default.
func TestOutboundSelectors(t *testing.T) {
	l := newLink(t, nil)
	l.pinhole(t)
	o2, i2 := saPair(t, 0x2002, esp.EncAESCBC, esp.AuthHMACSHA196)
	must(t, l.ue.pump.AddInbound(l.ue.peer, i2))
	// Gateway port-c 6101 -> UE port-s 41001 on SA 0x2002, everything else on 0x2001.
	l.gw.peer.SetOutboundSAs(l.gwOutSA, []OutboundSA{{SrcPort: 6101, DstPort: 41001, SA: o2}})
	ueS, err := l.ue.ns.ListenUDP(netip.AddrPortFrom(ueInner, 41001))
	must(t, err)
	defer ueS.Close()
	gwC, err := l.gw.ns.ListenUDP(netip.AddrPortFrom(gwInner, 6101))
	must(t, err)
	defer gwC.Close()
	gwOther, err := l.gw.ns.ListenUDP(netip.AddrPortFrom(gwInner, 6100))
	must(t, err)
	defer gwOther.Close()
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ueInner, 41001))
	buf := make([]byte, 100)
	for _, c := range []net.PacketConn{gwC, gwOther, gwC} {
		c.WriteTo([]byte("OPTIONS"), to)
		ueS.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, _, err := ueS.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
	}
	n2, _ := l.ue.pump.InboundPackets(0x2002)
	n1, _ := l.ue.pump.InboundPackets(0x2001)
	if n2 != 2 || n1 < 2 { // 0x2001 also carried the pinhole reply
		t.Fatalf("SA 0x2002 carried %d (want 2), 0x2001 %d", n2, n1)
	}
	if len(l.gw.pump.SACounters(l.gw.peer)) != 3 {
		t.Fatalf("%+v", l.gw.pump.SACounters(l.gw.peer))
	}
}

// TestDummyKeepaliveFollowsRebinding: an idle UE behind a NAT that loses
// its mapping is found again at its new port by the gateway as soon as its
// next keepalive goes out, because the keepalive is followed by an
// authenticated RFC 4303 dummy packet (the 0xFF keepalive alone must not
// move the endpoint: anyone can send one).
func TestDummyKeepaliveFollowsRebinding(t *testing.T) {
	l, n := newLinkBehindNAT(t)
	l.pinhole(t)
	first := l.gw.peer.Endpoint()
	n.Flush() // the home router reboots; the UE is idle
	// The UE's keepalive timer fires (SendKeepalives runs every second; call
	// it now, with a peer whose interval has passed).
	l.ue.peer.SetKeepalive(time.Nanosecond)
	l.ue.pump.SendKeepalives(nil)
	waitFor(t, func() bool { return l.gw.peer.Endpoint() != first })
	if c := l.gw.pump.Counters(); c.DummiesReceived != 1 || c.KeepalivesReceived != 1 {
		t.Fatalf("gateway counters %+v", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := l.gw.ns.Ping(ctx, ueInner, 1, nil); err != nil {
		t.Fatalf("gateway cannot reach the idle UE after the rebinding: %v", err)
	}
}

// TestInboundWait: with OnInboundWait, the Pump stamps its socket and
// reports each read's wait in the buffer, measured on the kernel's clock
// (not Config.Now, which a test may have stopped); without the hook the
// socket is left unstamped.
func TestInboundWait(t *testing.T) {
	clock := &fakeNow{t: time.Unix(1e9, 0)}
	ns, err := NewNetstack(NetstackOptions{})
	must(t, err)
	c, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	must(t, err)
	waits := make(chan time.Duration, 16)
	p, err := NewPump(Config{Device: ns, Conn: c, Now: clock.Now, OnInboundWait: func(d time.Duration) {
		select {
		case waits <- d:
		default:
		}
	}})
	must(t, err)
	defer p.Close()
	src, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	must(t, err)
	defer src.Close()
	if n, err := src.WriteBatch([]udp.Message{{Buf: []byte{0xff}, N: 1, Addr: c.LocalAddr()}}); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	select {
	case d := <-waits:
		if d < 0 || d > 10*time.Second {
			t.Fatalf("a keepalive waited %v in the socket", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnInboundWait never called")
	}

	// Without the hook, no stamps.
	c2, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	must(t, err)
	ns2, err := NewNetstack(NetstackOptions{})
	must(t, err)
	p2, err := NewPump(Config{Device: ns2, Conn: c2})
	must(t, err)
	defer p2.Close()
	if p2.stamps != nil {
		t.Fatal("a Pump without OnInboundWait stamped its socket")
	}
}
