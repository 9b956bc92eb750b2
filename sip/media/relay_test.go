package media

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

func allocate(t *testing.T, r *Relay, a, b Leg) *Session {
	t.Helper()
	s, err := r.Allocate(context.Background(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitFor polls cond for at most 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// UE A → P-CSCF A → P-CSCF B → UE B and back at once, audio and video
// each way: every packet arrives, and the relays' counters agree with the
// senders'.
func TestRelayChain(t *testing.T) {
	ueA, ueB := listenLoopback(t), listenLoopback(t)
	relayA, relayB := NewRelay(nil), NewRelay(nil)
	defer relayA.Close()
	defer relayB.Close()
	// Each server allocates on getting the SDP; P-CSCF A learns B's
	// address from the answer.
	sA := allocate(t, relayA, Leg{Local: loopback, Peer: addrOf(ueA)}, Leg{Local: loopback})
	sB := allocate(t, relayB, Leg{Local: loopback, Peer: addrOf(ueB)}, Leg{Local: loopback, Peer: sA.LocalB()})
	sA.SetPeerB(sB.LocalB())
	if sA.PeerA() != addrOf(ueA) || sA.PeerB() != sB.LocalB() || sB.PeerB() != sA.LocalB() || relayA.Len() != 1 {
		t.Fatalf("peers A %v %v, B %v %v", sA.PeerA(), sA.PeerB(), sB.PeerA(), sB.PeerB())
	}

	mA, stopA := startMeter(t, ueA, MeterConfig{})
	mB, stopB := startMeter(t, ueB, MeterConfig{})
	cfg := SendConfig{Audio: &Audio{}, Video: &Video{}, Duration: time.Second}
	var wg sync.WaitGroup
	var stAB, stBA SendStats
	var errAB, errBA error
	wg.Go(func() { stAB, errAB = Send(context.Background(), ueA, sA.LocalA(), cfg) })
	wg.Go(func() { stBA, errBA = Send(context.Background(), ueB, sB.LocalA(), cfg) })
	wg.Wait()
	if errAB != nil || errBA != nil {
		t.Fatal(errAB, errBA)
	}
	waitPackets(t, mB, total(stAB))
	waitPackets(t, mA, total(stBA))
	stopA()
	stopB()
	rB, rA := mB.Report(), mA.Report()
	t.Logf("at UE B:\n%s", rB)
	t.Logf("at UE A:\n%s", rA)
	checkClean(t, rB, stAB.Audio, "audio")
	checkClean(t, rB, stAB.Video, "video")
	checkClean(t, rA, stBA.Audio, "audio")
	checkClean(t, rA, stBA.Video, "video")

	bytesOf := func(st SendStats) uint64 { return st.Audio.Bytes + st.Video.Bytes }
	want := func(st SendStats) DirectionStats { return DirectionStats{Packets: total(st), Bytes: bytesOf(st)} }
	for _, c := range []struct {
		name      string
		got, want DirectionStats
	}{
		{"relay A, A to B", sA.Stats().AToB, want(stAB)},
		{"relay B, B to A", sB.Stats().BToA, want(stAB)},
		{"relay B, A to B", sB.Stats().AToB, want(stBA)},
		{"relay A, B to A", sA.Stats().BToA, want(stBA)},
	} {
		if c.got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, c.got, c.want)
		}
	}
	// The relay's totals are both directions of its session, and stay
	// after the session closes (a monitor's counter never goes back).
	both := DirectionStats{Packets: total(stAB) + total(stBA), Bytes: bytesOf(stAB) + bytesOf(stBA)}
	if got := relayA.Stats(); got != both {
		t.Errorf("relay A's totals %+v, want %+v", got, both)
	}
	sA.Close()
	if got := relayA.Stats(); got != both || relayA.Len() != 0 {
		t.Errorf("relay A's totals after the session closed: %+v (%d sessions), want %+v", got, relayA.Len(), both)
	}
}

// A stranger's datagrams are dropped and counted, on either leg.
func TestRelayUnexpectedSource(t *testing.T) {
	ue, far, stranger := listenLoopback(t), listenLoopback(t), listenLoopback(t)
	r := NewRelay(nil)
	defer r.Close()
	s := allocate(t, r, Leg{Local: loopback, Peer: addrOf(ue)}, Leg{Local: loopback, Peer: addrOf(far)})
	m, stop := startMeter(t, far, MeterConfig{})

	pkt := AppendRTP(nil, Header{SSRC: 1}, nil)
	for range 3 {
		stranger.WriteTo(pkt, net.UDPAddrFromAddrPort(s.LocalA()))
		stranger.WriteTo(pkt, net.UDPAddrFromAddrPort(s.LocalB()))
	}
	ue.WriteTo(pkt, net.UDPAddrFromAddrPort(s.LocalA()))
	waitFor(t, "the UE's packet", func() bool { return m.Packets() == 1 })
	waitFor(t, "six drops", func() bool { return s.Stats().AToB.Unexpected+s.Stats().BToA.Unexpected == 6 })
	stop()
	st := s.Stats()
	if st.AToB != (DirectionStats{Packets: 1, Bytes: HeaderLen, Unexpected: 3}) || st.BToA != (DirectionStats{Unexpected: 3}) {
		t.Errorf("stats %+v", st)
	}
	if m.Packets() != 1 {
		t.Errorf("far end got %d packets, want 1", m.Packets())
	}
}

// Unknown peers: leg A latches the first source; until leg B's peer is
// known, packets are dropped as NoPeer; then leg B latches too.
func TestRelayLatch(t *testing.T) {
	ue, far, stranger := listenLoopback(t), listenLoopback(t), listenLoopback(t)
	r := NewRelay(nil)
	defer r.Close()
	s := allocate(t, r, Leg{Local: loopback}, Leg{Local: loopback})
	mFar, stopFar := startMeter(t, far, MeterConfig{})
	mUE, stopUE := startMeter(t, ue, MeterConfig{})
	pkt := AppendRTP(nil, Header{SSRC: 1}, nil)
	send := func(c net.PacketConn, to netip.AddrPort) {
		if _, err := c.WriteTo(pkt, net.UDPAddrFromAddrPort(to)); err != nil {
			t.Fatal(err)
		}
	}

	send(ue, s.LocalA())
	waitFor(t, "leg A latched", func() bool { return s.PeerA() == addrOf(ue) })
	waitFor(t, "a NoPeer drop", func() bool { return s.Stats().AToB.NoPeer == 1 })
	// The far relay speaks first on leg B: latched, and forwarded to the UE.
	send(far, s.LocalB())
	waitFor(t, "leg B latched", func() bool { return s.PeerB() == addrOf(far) })
	waitFor(t, "the far packet at the UE", func() bool { return mUE.Packets() == 1 })
	// Now both ways work, and a stranger is refused on the latched legs.
	send(ue, s.LocalA())
	send(stranger, s.LocalA())
	send(stranger, s.LocalB())
	waitFor(t, "the UE's packet at the far end", func() bool { return mFar.Packets() == 1 })
	waitFor(t, "two drops", func() bool { return s.Stats().AToB.Unexpected+s.Stats().BToA.Unexpected == 2 })
	// SetPeerB replaces the latched peer.
	s.SetPeerB(addrOf(stranger))
	send(far, s.LocalB())
	waitFor(t, "the old far end refused", func() bool { return s.Stats().BToA.Unexpected == 2 })
	stopFar()
	stopUE()
	st := s.Stats()
	if st.AToB != (DirectionStats{Packets: 1, Bytes: HeaderLen, NoPeer: 1, Unexpected: 1}) || st.BToA != (DirectionStats{Packets: 1, Bytes: HeaderLen, Unexpected: 2}) {
		t.Errorf("stats %+v", st)
	}
}

func TestRelayClose(t *testing.T) {
	// Whatever this test starts has ended when it returns.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	r := NewRelay(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1, err := r.Allocate(ctx, Leg{Local: loopback}, Leg{Local: loopback})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := r.Allocate(context.Background(), Leg{Local: loopback}, Leg{Local: loopback})
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 2 || s1.LocalA() == s2.LocalA() || s1.LocalA().Port() == 0 || s1.LocalB().Port() == 0 {
		t.Fatalf("%d sessions, legs %v %v %v", r.Len(), s1.LocalA(), s1.LocalB(), s2.LocalA())
	}
	// The end of the allocating context closes the session.
	cancel()
	waitFor(t, "session 1 closed by its context", func() bool { return r.Len() == 1 })
	// Its sockets are closed: the port can be bound again.
	if c, err := ListenKernel(s1.LocalA()); err != nil {
		t.Errorf("leg A's port still in use: %v", err)
	} else {
		c.Close()
	}
	if err := s1.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Relay.Close closes the rest and refuses new sessions.
	if err := r.Close(); err != nil {
		t.Error(err)
	}
	if r.Len() != 0 {
		t.Errorf("%d sessions after Close", r.Len())
	}
	if _, err := r.Allocate(context.Background(), Leg{Local: loopback}, Leg{Local: loopback}); !errors.Is(err, ErrRelayClosed) {
		t.Errorf("Allocate after Close: %v", err)
	}
	// A done context allocates nothing.
	if _, err := NewRelay(nil).Allocate(ctx, Leg{Local: loopback}, Leg{Local: loopback}); !errors.Is(err, context.Canceled) {
		t.Errorf("Allocate with a done context: %v", err)
	}
}

// A leg that cannot be opened fails Allocate and leaks nothing.
func TestRelayListenError(t *testing.T) {
	r := NewRelay(nil)
	defer r.Close()
	var opened []net.PacketConn
	okListen := func(laddr netip.AddrPort) (net.PacketConn, error) {
		c, err := ListenKernel(laddr)
		if err == nil {
			opened = append(opened, c)
		}
		return c, err
	}
	failing := func(netip.AddrPort) (net.PacketConn, error) { return nil, fmt.Errorf("no tunnel for this UE") }
	_, err := r.Allocate(context.Background(), Leg{Listen: okListen, Local: loopback}, Leg{Listen: failing, Local: loopback})
	if err == nil || r.Len() != 0 || len(opened) != 1 {
		t.Fatalf("Allocate = %v, %d sessions, %d opened", err, r.Len(), len(opened))
	}
	// The leg that did open was closed.
	if _, err := opened[0].WriteTo([]byte{1}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9"))); !errors.Is(err, net.ErrClosed) {
		t.Errorf("leg A left open: %v", err)
	}
}

// The relay works on any net.PacketConn, not only *net.UDPConn: here both
// legs are wrapped so that they lose the netip fast path.
type plainConn struct{ net.PacketConn }

func TestRelayPlainPacketConn(t *testing.T) {
	ue, far := listenLoopback(t), listenLoopback(t)
	wrap := func(laddr netip.AddrPort) (net.PacketConn, error) {
		c, err := ListenKernel(laddr)
		return plainConn{c}, err
	}
	r := NewRelay(nil)
	defer r.Close()
	s := allocate(t, r, Leg{Listen: wrap, Local: loopback, Peer: addrOf(ue)}, Leg{Listen: wrap, Local: loopback, Peer: addrOf(far)})
	if _, ok := s.legs[0].conn.PacketConn.(AddrPortConn); ok {
		t.Fatal("wrapped conn still has the netip methods")
	}
	m, stop := startMeter(t, far, MeterConfig{})
	st, err := Send(context.Background(), ue, s.LocalA(), SendConfig{Audio: &Audio{Interval: 5 * time.Millisecond}, Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitPackets(t, m, st.Audio.Packets)
	stop()
	if got := s.Stats().AToB; got.Packets != 20 || got.Unexpected != 0 {
		t.Errorf("stats %+v", got)
	}
}

func BenchmarkRelayForward(b *testing.B) {
	ue, far := listenLoopback(b), listenLoopback(b)
	r := NewRelay(nil)
	defer r.Close()
	s, err := r.Allocate(context.Background(), Leg{Local: loopback, Peer: addrOf(ue)}, Leg{Local: loopback, Peer: addrOf(far)})
	if err != nil {
		b.Fatal(err)
	}
	pkt := rtpPacket(Header{SSRC: 1}, Probe{Kind: KindAudio, Count: 1}, 160)
	buf := make([]byte, 2048)
	dst := s.LocalA()
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		ue.WriteToUDPAddrPort(pkt, dst)
		far.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := far.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}
