package tun_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/internal/inet"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
	"github.com/imsec/imsec/tun/udptest"
)

// TestSocket: a Socket on the gateway's pump takes the datagrams for its
// address and port out of the tunnel before the Device, and what it writes
// reaches the UE's Device exactly as a stack would have sent it. Damaged
// datagrams are dropped and counted; fragments, spoofed sources and other
// ports are not its business.
func TestSocket(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	ueDev := tuntest.NewChannelDevice(1400, 8, 1024)
	gwDev := tuntest.NewChannelDevice(1400, 8, 1024)
	_, gw := fakeLink(t, n, ueDev, gwDev)
	sipAddr := netip.AddrPortFrom(fakeGWInner, 5060)
	ueSIP := netip.AddrPortFrom(fakeUEInner, 5060)
	sock, err := gw.pump.ListenUDP(sipAddr)
	fakeMust(t, err)
	defer sock.Close()
	if _, err := gw.pump.ListenUDP(sipAddr); !errors.Is(err, tun.ErrSocketInUse) {
		t.Fatalf("a second Socket on %v: %v", sipAddr, err)
	}
	buf := make([]byte, 2048)
	read := func() ([]byte, netip.AddrPort) {
		t.Helper()
		fakeMust(t, sock.SetReadDeadline(time.Now().Add(5*time.Second)))
		n, from, err := sock.ReadFromUDPAddrPort(buf)
		fakeMust(t, err)
		return buf[:n], from
	}

	// Up: the Socket gets it, the Device does not.
	ueDev.Inbound <- up(1)
	if got, from := read(); string(got) != "up 1" || from != ueSIP {
		t.Fatalf("Socket read %q from %v, want %q from %v", got, from, "up 1", ueSIP)
	}
	// Down: byte for byte what a stack sends (tuntest.UDPPacket).
	if _, err := sock.WriteToUDPAddrPort([]byte("down 1"), ueSIP); err != nil {
		t.Fatal(err)
	}
	expectPacket(t, ueDev, down(1))
	if _, err := sock.WriteTo([]byte("down 2"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[::ffff:100.64.0.2]:5060"))); err != nil {
		t.Fatal(err)
	}
	expectPacket(t, ueDev, down(2))
	if _, err := sock.WriteToUDPAddrPort([]byte("x"), netip.MustParseAddrPort("100.64.9.9:5060")); err == nil {
		t.Fatal("a write to an address no tunnel routes succeeded")
	}

	// A bad UDP checksum: dropped and counted.
	bad := up(2)
	bad[len(bad)-1] ^= 1
	ueDev.Inbound <- bad
	// A first fragment (MF set) and a datagram to another port: the Device.
	frag := up(3)
	binary.BigEndian.PutUint16(frag[6:], 0x2000)
	frag[10], frag[11] = 0, 0
	binary.BigEndian.PutUint16(frag[10:], inet.Checksum(inet.Sum(0, frag[:20])))
	ueDev.Inbound <- frag
	expectPacket(t, gwDev, frag)
	other := tuntest.UDPPacket(ueSIP, netip.AddrPortFrom(fakeGWInner, 5061), []byte("other"))
	ueDev.Inbound <- other
	expectPacket(t, gwDev, other)
	// A spoofed source: the pump's source check comes first.
	spoof := tuntest.UDPPacket(netip.MustParseAddrPort("100.64.0.99:5060"), sipAddr, []byte("spoof"))
	ueDev.Inbound <- spoof
	ueDev.Inbound <- up(4)
	if got, _ := read(); string(got) != "up 4" {
		t.Fatalf("after the bad, fragmented, other and spoofed ones the Socket read %q, want %q", got, "up 4")
	}
	if c := sock.Counters(); c.Delivered != 2 || c.Dropped != 1 {
		t.Fatalf("Socket counters %+v, want 2 delivered, 1 dropped", c)
	}
	if c := gw.pump.Counters(); c.Spoofed != 1 {
		t.Fatalf("gateway pump counted %d spoofed, want 1", c.Spoofed)
	}

	// An IP payload longer than its UDP datagram: the rest is ignored. A
	// UDP length past the IP payload: dropped.
	long := append(up(5), 0xde, 0xad)
	binary.BigEndian.PutUint16(long[2:], uint16(len(long)))
	long[10], long[11] = 0, 0
	binary.BigEndian.PutUint16(long[10:], inet.Checksum(inet.Sum(0, long[:20])))
	ueDev.Inbound <- long
	if got, _ := read(); string(got) != "up 5" {
		t.Fatalf("a padded datagram read as %q", got)
	}
	short := up(6)
	binary.BigEndian.PutUint16(short[24:], uint16(len(short)-20+1))
	ueDev.Inbound <- short
	fakeWait(t, func() bool { return sock.Counters().Dropped == 2 })

	// Deliver (what a stack reassembled) and the read deadline.
	sock.Deliver([]byte("reassembled"), ueSIP)
	if got, from := read(); string(got) != "reassembled" || from != ueSIP {
		t.Fatalf("read %q from %v after Deliver", got, from)
	}
	fakeMust(t, sock.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	if _, _, err := sock.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}

	// Close: a blocked read returns, and the port goes to the Device again.
	fakeMust(t, sock.SetReadDeadline(time.Time{}))
	done := make(chan error, 1)
	go func() {
		_, _, err := sock.ReadFrom(buf)
		done <- err
	}()
	sock.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read blocked across Close: %v", err)
	}
	ueDev.Inbound <- up(7)
	expectPacket(t, gwDev, up(7))
}

// TestSocketIPv6: the same over inner IPv6, where the UDP checksum is
// mandatory.
func TestSocketIPv6(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	ueDev := tuntest.NewChannelDevice(1400, 8, 1024)
	gwDev := tuntest.NewChannelDevice(1400, 8, 1024)
	ue, gw := fakeLink(t, n, ueDev, gwDev)
	ue6, gw6 := netip.MustParseAddrPort("[2001:db8::2]:5060"), netip.MustParseAddrPort("[2001:db8::1]:5060")
	host := []netip.Prefix{netip.MustParsePrefix("2001:db8::2/128"), netip.PrefixFrom(fakeUEInner, 32)}
	gw.peer.SetAllowed(host)
	fakeMust(t, gw.pump.SetRoutes(gw.peer, host))
	ue.peer.SetAllowed([]netip.Prefix{netip.MustParsePrefix("::/0"), netip.MustParsePrefix("0.0.0.0/0")})
	fakeMust(t, ue.pump.SetRoutes(ue.peer, []netip.Prefix{netip.MustParsePrefix("::/0"), netip.MustParsePrefix("0.0.0.0/0")}))
	sock, err := gw.pump.ListenUDP(gw6)
	fakeMust(t, err)
	defer sock.Close()

	ueDev.Inbound <- tuntest.UDPPacket(ue6, gw6, []byte("hello"))
	fakeMust(t, sock.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 100)
	k, from, err := sock.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:k]) != "hello" || from != ue6 {
		t.Fatalf("read %q from %v: %v", buf[:k], from, err)
	}
	// A zero checksum is no checksum over IPv4 only: over IPv6 it is
	// damage.
	zero := tuntest.UDPPacket(ue6, gw6, []byte("zero"))
	zero[46], zero[47] = 0, 0
	ueDev.Inbound <- zero
	if _, err := sock.WriteToUDPAddrPort([]byte("back"), ue6); err != nil {
		t.Fatal(err)
	}
	if got := <-ueDev.Outbound; !bytes.Equal(got, tuntest.UDPPacket(gw6, ue6, []byte("back"))) {
		t.Fatalf("UE got % x", got)
	}
	fakeWait(t, func() bool { return sock.Counters().Dropped == 1 })
	if _, err := sock.WriteToUDPAddrPort([]byte("x"), netip.AddrPortFrom(fakeUEInner, 5060)); err == nil {
		t.Fatal("an IPv6 Socket wrote to an IPv4 address")
	}
}

// TestKeepaliveCoalescingDelivers: past coalesceAbove keepalives a second
// the socket reader takes its socket out of the runtime's poller
// (udp.Conn.SetQuiet) and waits between keepalive-only batches; a packet
// sent then is still delivered, and puts the socket back; every keepalive
// is counted.
func TestKeepaliveCoalescingDelivers(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	ueDev := tuntest.NewChannelDevice(1400, 8, 1024)
	gwDev := tuntest.NewChannelDevice(1400, 8, 1024)
	_, gw := fakeLink(t, n, ueDev, gwDev)
	sent := sendIdleKeepalives(t, n)
	// The reader may still be reading the last of them.
	fakeWait(t, func() bool { quiet, times := gw.conn.Quiet(); return quiet && times >= 1 })
	ueDev.Inbound <- up(1)
	expectPacket(t, gwDev, up(1))
	fakeWait(t, func() bool { return gw.pump.Counters().KeepalivesReceived == uint64(sent) })
	// The reader puts the socket back after it wrote the batch out.
	fakeWait(t, func() bool { quiet, _ := gw.conn.Quiet(); return !quiet })
}

// idleKeepalivesPerSecond is the rate sendIdleKeepalives keeps up: above
// coalesceAbove (1,000), so that the gateway's reader coalesces.
const idleKeepalivesPerSecond = 1500

// sendIdleKeepalives sends the gateway two seconds of
// idleKeepalivesPerSecond NAT keepalives from an idle peer, and returns
// how many it sent.
func sendIdleKeepalives(t *testing.T, n *udptest.Network) int {
	t.Helper()
	idle, err := n.Listen(netip.MustParseAddrPort("198.51.100.20:4500"))
	fakeMust(t, err)
	defer idle.Close()
	start := time.Now()
	sent := 0
	for ; sent < 2*idleKeepalivesPerSecond; sent++ {
		if _, err := idle.WriteToUDPAddrPort([]byte{0xff}, fakeGWOuter); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(start.Add(time.Duration(sent+1) * time.Second / idleKeepalivesPerSecond)))
	}
	return sent
}

// TestKeepaliveCoalescingQuietFails: a socket that cannot change its
// poller mode is read on as it is: the packet still arrives, every
// keepalive is counted, and the failure is logged once, not per batch.
func TestKeepaliveCoalescingQuietFails(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	ueDev := tuntest.NewChannelDevice(1400, 8, 1024)
	gwDev := tuntest.NewChannelDevice(1400, 8, 1024)
	var logged countingHandler
	cfg := tun.Config{Logger: slog.New(&logged)}
	_, gw := fakeLinkWrapped(t, n, ueDev, gwDev, cfg, func(c tun.PacketConn) tun.PacketConn { return failingQuiet{c} })
	sent := sendIdleKeepalives(t, n)
	ueDev.Inbound <- up(1)
	expectPacket(t, gwDev, up(1))
	fakeWait(t, func() bool { return gw.pump.Counters().KeepalivesReceived == uint64(sent) })
	if got := logged.count("the ESP socket cannot change its poller mode"); got != 1 {
		t.Fatalf("the failing SetQuiet was logged %d times, want once", got)
	}
}

// failingQuiet is a socket whose SetQuiet always fails.
type failingQuiet struct{ tun.PacketConn }

func (failingQuiet) SetQuiet(bool) error { return errors.New("no more descriptors") }

// countingHandler counts log records by message.
type countingHandler struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msgs == nil {
		h.msgs = map[string]int{}
	}
	h.msgs[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[msg]
}

// TestSocketDeliverRecycles: a datagram handed over with Deliver and read
// costs no allocation once warm (its copy's buffer goes back to a pool);
// one larger than the pooled size still arrives whole.
func TestSocketDeliverRecycles(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	_, gw := fakeLink(t, n, tuntest.NewChannelDevice(1400, 8, 1024), tuntest.NewChannelDevice(1400, 8, 1024))
	sock, err := gw.pump.ListenUDP(netip.AddrPortFrom(fakeGWInner, 5060))
	fakeMust(t, err)
	defer sock.Close()
	from := netip.AddrPortFrom(fakeUEInner, 5060)
	msg := bytes.Repeat([]byte("REGISTER "), 100)
	buf := make([]byte, 70000)
	allocs := testing.AllocsPerRun(100, func() {
		if !sock.Deliver(msg, from) {
			t.Fatal("Deliver dropped a datagram")
		}
		if n, _, err := sock.ReadFromUDPAddrPort(buf); err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("read %d bytes, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("Deliver and read: %v allocations, want 0", allocs)
	}
	big := bytes.Repeat([]byte{0xab}, 65000)
	if !sock.Deliver(big, from) {
		t.Fatal("Deliver dropped a large datagram")
	}
	if n, _, err := sock.ReadFromUDPAddrPort(buf); err != nil || !bytes.Equal(buf[:n], big) {
		t.Fatalf("large datagram: read %d bytes, %v", n, err)
	}
}

// BenchmarkEchoResponder: one 1,400-byte echo request from a UE's Device
// through its tunnel to the gateway's echo responder and the reply back,
// per op; -benchmem shows what each round trip leaves to the collector
// (the responder's reply and its sealing are pooled).
func BenchmarkEchoResponder(b *testing.B) {
	n := udptest.NewNetwork()
	ueDev := tuntest.NewChannelDevice(1500, 8, 1024)
	_, _ = fakeLinkConfig(b, n, ueDev, tuntest.NewChannelDevice(1500, 8, 1024), tun.Config{EchoResponder: fakeGWInner})
	req := inet.AppendEcho(nil, inet.EchoRequest, fakeUEInner, fakeGWInner, 7, 1, make([]byte, 1400-28))
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		ueDev.Inbound <- req
		select {
		case <-ueDev.Outbound:
		case <-time.After(5 * time.Second):
			b.Fatal("no echo reply")
		}
	}
}
