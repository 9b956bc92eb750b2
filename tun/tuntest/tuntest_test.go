package tuntest_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func bufs(n, size int) ([][]byte, []int) {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, size)
	}
	return b, make([]int, n)
}

func TestPipe(t *testing.T) {
	a, b := tuntest.Pipe(1400, 8, 16)
	defer a.Close()
	defer b.Close()
	pkts := [][]byte{
		append(make([]byte, tun.MinOffset), "one"...),
		append(make([]byte, tun.MinOffset), "two"...),
		append(make([]byte, tun.MinOffset), "three"...),
	}
	if n, err := a.Write(pkts, tun.MinOffset); n != 3 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	pkts[0][tun.MinOffset] = 'X' // Write copied
	rb, sizes := bufs(b.BatchSize(), tun.MinOffset+1400)
	n, err := b.Read(rb, sizes, tun.MinOffset)
	if err != nil || n != 3 {
		t.Fatalf("Read = %d, %v; want the 3 queued packets in one batch", n, err)
	}
	for i, want := range []string{"one", "two", "three"} {
		if got := string(rb[i][tun.MinOffset : tun.MinOffset+sizes[i]]); got != want {
			t.Errorf("packet %d = %q, want %q", i, got, want)
		}
	}
	if _, err := b.Read(rb, sizes, 3); !errors.Is(err, tun.ErrOffset) {
		t.Errorf("Read with small offset: %v", err)
	}

	// Close unblocks a Read; later calls fail with the closed error.
	errc := make(chan error, 1)
	go func() { _, err := b.Read(rb, sizes, tun.MinOffset); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
	if _, err := b.Write(pkts, tun.MinOffset); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
}

func TestChannelDeviceTruncates(t *testing.T) {
	d := tuntest.NewChannelDevice(1400, 4, 4)
	defer d.Close()
	d.Inbound <- make([]byte, 100)
	d.Inbound <- []byte("ok")
	rb, sizes := bufs(4, tun.MinOffset+50)
	n, err := d.Read(rb, sizes, tun.MinOffset)
	if err != nil || n != 1 || sizes[0] != 2 {
		t.Fatalf("Read = %d, %v, sizes %v", n, err, sizes[:n])
	}
	if d.Truncated.Load() != 1 {
		t.Errorf("Truncated = %d", d.Truncated.Load())
	}
}

// The pump joins two netstacks; a UDP datagram crosses and the pump stops
// with the closed error when the devices close.
func TestConnectNetstacks(t *testing.T) {
	a, err := tun.NewNetstack(tun.NetstackOptions{Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tun.NewNetstack(tun.NetstackOptions{Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}})
	if err != nil {
		t.Fatal(err)
	}
	p := tuntest.Connect(a, b)
	sb, err := b.ListenUDP(netip.MustParseAddrPort("100.64.0.1:5060"))
	if err != nil {
		t.Fatal(err)
	}
	sa, err := a.DialUDP(netip.AddrPort{}, netip.MustParseAddrPort("100.64.0.1:5060"))
	if err != nil {
		t.Fatal(err)
	}
	sa.Write([]byte("hello"))
	sb.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 10)
	n, _, err := sb.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	a.Close()
	b.Close()
	if err := p.Wait(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("pump stopped with %v", err)
	}
	if p.AtoB.Load() != 1 || p.BtoA.Load() != 0 {
		t.Errorf("pump counted %d a->b, %d b->a; want 1, 0", p.AtoB.Load(), p.BtoA.Load())
	}
}

// UDPPacket builds packets a real stack accepts (gVisor checks the IPv4
// header checksum and the UDP checksum over the pseudo-header), and the
// same packet with one bit flipped is refused.
func TestUDPPacketAcceptedByStack(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"100.64.0.1:6100", "100.64.0.2:41000"},
		{"[2001:db8::1]:6100", "[2001:db8::2]:41000"},
	} {
		src, dst := netip.MustParseAddrPort(c.src), netip.MustParseAddrPort(c.dst)
		d, err := tun.NewNetstack(tun.NetstackOptions{Addresses: []netip.Prefix{netip.PrefixFrom(dst.Addr(), dst.Addr().BitLen())}})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := d.ListenUDP(dst)
		if err != nil {
			t.Fatal(err)
		}
		payload := []byte("sealed in ESP, opened, written to the device")
		good := tuntest.UDPPacket(src, dst, payload)
		for bit := range len(good) * 8 {
			// IPv6 has no header checksum: traffic class, flow label and
			// hop limit (bytes 0-3 and 7, version aside) may change in
			// flight and still deliver. Every other bit of either family
			// is covered by a checksum or decides where the packet goes.
			byteAt, mask := bit/8, byte(1)<<(bit%8)
			if dst.Addr().Is6() && (byteAt == 0 && mask < 0x10 || byteAt >= 1 && byteAt <= 3 || byteAt == 7) {
				continue
			}
			bad := append(make([]byte, tun.MinOffset), good...)
			bad[tun.MinOffset+byteAt] ^= mask
			d.Write([][]byte{bad}, tun.MinOffset)
		}
		d.Write([][]byte{append(make([]byte, tun.MinOffset), good...)}, tun.MinOffset)
		// Of all the packets only the intact one may arrive; a corrupted
		// packet that got through would show up first.
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if string(buf[:n]) != string(payload) || from.String() != src.String() {
			t.Errorf("%v: got %q from %v", c, buf[:n], from)
		}
		conn.SetDeadline(time.Now().Add(20 * time.Millisecond))
		if n, from, err := conn.ReadFrom(buf); err == nil {
			t.Errorf("%v: a corrupted packet was delivered: %q from %v", c, buf[:n], from)
		}
		conn.Close()
		d.Close()
	}
}
