package tun_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
)

// Addresses from the ranges reserved for shared address space (RFC 6598)
// and documentation (RFC 5737, RFC 3849), never routed on the host.
var (
	ueIP   = netip.MustParseAddr("100.64.0.2")
	pcIP   = netip.MustParseAddr("100.64.0.1")
	ueIP6  = netip.MustParseAddr("2001:db8::2")
	pcIP6  = netip.MustParseAddr("2001:db8::1")
	offer  = netip.MustParseAddr("100.64.0.9")
	bcast4 = netip.MustParseAddr("255.255.255.255")
)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// backToBack returns two netstacks joined by the trivial pump; cleanup
// closes both and checks that the pump stopped because of the close.
func backToBack(t testing.TB, ueAddrs, pcAddrs []netip.Prefix) (ue, pc *tun.Netstack) {
	return backToBackOpts(t, tun.NetstackOptions{Addresses: ueAddrs, Name: "ue"}, tun.NetstackOptions{Addresses: pcAddrs, Name: "pcscf"})
}

func backToBackMTU(t testing.TB, mtu int) (ue, pc *tun.Netstack) {
	return backToBackOpts(t,
		tun.NetstackOptions{Addresses: []netip.Prefix{netip.PrefixFrom(ueIP, 32)}, MTU: mtu},
		tun.NetstackOptions{Addresses: []netip.Prefix{netip.PrefixFrom(pcIP, 32)}, MTU: mtu})
}

func backToBackOpts(t testing.TB, ueOpts, pcOpts tun.NetstackOptions) (ue, pc *tun.Netstack) {
	t.Helper()
	var err error
	ue, err = tun.NewNetstack(ueOpts)
	if err != nil {
		t.Fatal(err)
	}
	pc, err = tun.NewNetstack(pcOpts)
	if err != nil {
		ue.Close()
		t.Fatal(err)
	}
	p := tuntest.Connect(ue, pc)
	t.Cleanup(func() {
		ue.Close()
		pc.Close()
		if err := p.Wait(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("pump stopped with %v, want a closed error", err)
		}
	})
	return ue, pc
}

func defaultPair(t testing.TB) (ue, pc *tun.Netstack) {
	return backToBack(t,
		[]netip.Prefix{netip.PrefixFrom(ueIP, 32), netip.PrefixFrom(ueIP6, 128)},
		[]netip.Prefix{netip.PrefixFrom(pcIP, 32), netip.PrefixFrom(pcIP6, 128)})
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func deadline(t testing.TB, c interface{ SetDeadline(time.Time) error }) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
}

func mustUDP(t testing.TB, d *tun.Netstack, a netip.AddrPort) tun.UDPAddrPortConn {
	t.Helper()
	c, err := d.ListenUDP(a)
	if err != nil {
		t.Fatalf("ListenUDP(%v): %v", a, err)
	}
	t.Cleanup(func() { c.Close() })
	deadline(t, c)
	return c.(tun.UDPAddrPortConn)
}

func TestNetstackUDPBothWays(t *testing.T) {
	for _, fam := range []struct {
		name   string
		ue, pc netip.Addr
	}{{"ipv4", ueIP, pcIP}, {"ipv6", ueIP6, pcIP6}} {
		t.Run(fam.name, func(t *testing.T) {
			ue, pc := defaultPair(t)
			uc := mustUDP(t, ue, ap(fam.ue, 41000)) // port-c
			ps := mustUDP(t, pc, ap(fam.pc, 6100))  // port-s
			if got := uc.LocalAddr().String(); got != ap(fam.ue, 41000).String() {
				t.Errorf("LocalAddr = %s", got)
			}

			if _, err := uc.WriteToUDPAddrPort([]byte("REGISTER"), ap(fam.pc, 6100)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			n, from, err := ps.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:n]) != "REGISTER" || from != ap(fam.ue, 41000) {
				t.Fatalf("P-CSCF got %q from %v", buf[:n], from)
			}

			// Reply with the net.Addr API, through a 16-byte (mapped) IPv4
			// address as net.ParseIP produces.
			reply := &net.UDPAddr{IP: net.ParseIP(from.Addr().String()), Port: int(from.Port())}
			if _, err := ps.WriteTo([]byte("200 OK"), reply); err != nil {
				t.Fatal(err)
			}
			n, addr, err := uc.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:n]) != "200 OK" || addr.String() != ap(fam.pc, 6100).String() {
				t.Fatalf("UE got %q from %v", buf[:n], addr)
			}

			// A connected socket from a fixed port the other way.
			dc, err := pc.DialUDP(ap(fam.pc, 6101), ap(fam.ue, 41000))
			if err != nil {
				t.Fatal(err)
			}
			defer dc.Close()
			if dc.RemoteAddr().String() != ap(fam.ue, 41000).String() || dc.LocalAddr().String() != ap(fam.pc, 6101).String() {
				t.Fatalf("DialUDP addresses %v -> %v", dc.LocalAddr(), dc.RemoteAddr())
			}
			if _, err := dc.Write([]byte("OPTIONS")); err != nil {
				t.Fatal(err)
			}
			n, from, err = uc.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:n]) != "OPTIONS" || from != ap(fam.pc, 6101) {
				t.Fatalf("UE got %q from %v", buf[:n], from)
			}
		})
	}
}

func TestNetstackUDPWriteToBadAddr(t *testing.T) {
	ue, _ := defaultPair(t)
	c := mustUDP(t, ue, ap(ueIP, 41000))
	for _, a := range []net.Addr{nil, (*net.UDPAddr)(nil), &net.IPAddr{IP: net.IPv4(1, 2, 3, 4)}} {
		if _, err := c.WriteTo([]byte("x"), a); err == nil {
			t.Errorf("WriteTo(%#v) succeeded", a)
		}
	}
	if _, err := c.WriteToUDPAddrPort([]byte("x"), netip.AddrPort{}); err == nil {
		t.Error("WriteToUDPAddrPort(zero) succeeded")
	}
	if _, err := ue.DialUDP(netip.AddrPort{}, netip.AddrPort{}); err == nil {
		t.Error("DialUDP to nowhere succeeded")
	}
	if _, err := ue.DialUDP(ap(ueIP6, 1), ap(pcIP, 2)); err == nil {
		t.Error("DialUDP across families succeeded")
	}
}

// echoServer accepts on l and echoes each connection until EOF, reporting
// each accepted conn on accepted.
func echoServer(t testing.TB, l net.Listener, accepted chan<- net.Conn) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept: %v", err)
				}
				return
			}
			if accepted != nil {
				accepted <- c
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return &wg
}

func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	deadline(t, c)
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != msg {
		t.Fatalf("echo %q, want %q", buf, msg)
	}
}

func TestNetstackTCPBoundDial(t *testing.T) {
	ue, pc := defaultPair(t)
	ctx := ctxT(t)
	portC := ap(ueIP, 41000)

	accepted := make(chan net.Conn, 4)
	for _, port := range []uint16{6100, 6200} {
		l, err := pc.ListenTCP(ap(pcIP, port))
		if err != nil {
			t.Fatal(err)
		}
		if l.Addr().String() != ap(pcIP, port).String() {
			t.Errorf("listener Addr %v", l.Addr())
		}
		echoServer(t, l, accepted)
		t.Cleanup(func() { l.Close() })
	}

	// Two connections from the same local port to two destinations.
	c1, err := ue.DialTCP(ctx, portC, ap(pcIP, 6100))
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ue.DialTCP(ctx, portC, ap(pcIP, 6200))
	if err != nil {
		t.Fatalf("second dial from %v: %v", portC, err)
	}
	for i, c := range []net.Conn{c1, c2} {
		if c.LocalAddr().String() != portC.String() {
			t.Errorf("conn %d LocalAddr %v", i, c.LocalAddr())
		}
		roundTrip(t, c, "REGISTER over TCP")
		s := <-accepted
		if s.RemoteAddr().String() != portC.String() {
			t.Errorf("server saw conn %d from %v, want %v", i, s.RemoteAddr(), portC)
		}
	}

	// Close c1 actively and wait for the peer's FIN, which leaves c1 in
	// TIME_WAIT on the UE side. Its addresses survive (probe §5.1: gonet
	// returns nil and sipgo dereferences it).
	if err := c1.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(c1); err != nil || len(rest) != 0 {
		t.Fatalf("draining c1: %q, %v", rest, err)
	}
	c1.Close()
	if c1.RemoteAddr() == nil || c1.RemoteAddr().String() != "100.64.0.1:6100" {
		t.Errorf("RemoteAddr after Close = %v", c1.RemoteAddr())
	}
	if err := c1.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := c1.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
	if _, err := c1.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close = %v, want net.ErrClosed", err)
	}

	// Dialing the same 4-tuple again must work (a UE re-dialing from
	// port-c).
	c3, err := ue.DialTCP(ctx, portC, ap(pcIP, 6100))
	if err != nil {
		t.Fatalf("re-dial from %v during TIME_WAIT: %v", portC, err)
	}
	roundTrip(t, c3, "again")
	if s := <-accepted; s.RemoteAddr().String() != portC.String() {
		t.Errorf("re-dial seen from %v", s.RemoteAddr())
	}
	c2.Close()
	c3.Close()
}

func TestNetstackTCPDialErrors(t *testing.T) {
	ue, _ := defaultPair(t)
	ctx := ctxT(t)
	// Nothing listens on the P-CSCF: the stack answers with RST.
	_, err := ue.DialTCP(ctx, netip.AddrPort{}, ap(pcIP, 9))
	if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial to closed port: %v, want ECONNREFUSED", err)
	}
	// A cancelled context stops a handshake nobody answers.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := ue.DialTCP(cctx, netip.AddrPort{}, ap(netip.MustParseAddr("100.64.0.77"), 80)); err == nil {
		t.Error("dial with cancelled context succeeded")
	}
	// A local address the stack does not own.
	if _, err := ue.DialTCP(ctx, ap(netip.MustParseAddr("100.64.0.55"), 41000), ap(pcIP, 6100)); err == nil {
		t.Error("dial from a foreign address succeeded")
	}
}

func TestNetstackTCPBulk(t *testing.T) {
	ue, pc := defaultPair(t)
	ctx := ctxT(t)
	l, err := pc.ListenTCP(ap(pcIP, 5001))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	const size = 4 << 20
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)

	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := l.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer s.Close()
		deadline(t, s)
		h := sha256.New()
		n, err := io.Copy(h, s)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		done <- r
	}()

	c, err := ue.DialTCP(ctx, ap(ueIP, 41000), ap(pcIP, 5001))
	if err != nil {
		t.Fatal(err)
	}
	deadline(t, c)
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	c.Close()
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != size || r.sum != want {
		t.Fatalf("received %d bytes, sha256 %x; want %d bytes, %x", r.n, r.sum, size, want)
	}
}

func TestNetstackPing(t *testing.T) {
	ue, pc := defaultPair(t)
	ctx := ctxT(t)
	for i, c := range []struct {
		from *tun.Netstack
		dst  netip.Addr
	}{{ue, pcIP}, {pc, ueIP}, {ue, pcIP6}, {pc, ueIP6}} {
		payload := []byte("pinhole")
		rtt, err := c.from.Ping(ctx, c.dst, 100+i, payload)
		if err != nil {
			t.Fatalf("ping %v: %v", c.dst, err)
		}
		if rtt <= 0 {
			t.Errorf("ping %v: rtt %v", c.dst, rtt)
		}
	}
	// No reply from an address nobody has: the deadline ends the wait.
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := ue.Ping(sctx, netip.MustParseAddr("100.64.0.99"), 1, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ping to nobody: %v, want deadline exceeded", err)
	}
}

func TestNetstackAddAddressLater(t *testing.T) {
	ue, pc := backToBack(t, nil, []netip.Prefix{netip.PrefixFrom(pcIP, 32)})
	ctx := ctxT(t)
	if got := ue.Addresses(); len(got) != 0 {
		t.Fatalf("fresh stack has addresses %v", got)
	}
	// Before the address exists the stack cannot bind it.
	if _, err := ue.ListenUDP(ap(offer, 41000)); err == nil {
		t.Fatal("bind to an unassigned address succeeded")
	}
	if err := ue.AddAddress(netip.PrefixFrom(offer, 32)); err != nil {
		t.Fatal(err)
	}
	if got := ue.Addresses(); len(got) != 1 || got[0] != netip.PrefixFrom(offer, 32) {
		t.Fatalf("Addresses = %v", got)
	}
	if err := ue.AddAddress(netip.PrefixFrom(offer, 32)); err == nil {
		t.Error("adding the same address twice succeeded")
	}

	uc := mustUDP(t, ue, ap(offer, 41000))
	ps := mustUDP(t, pc, ap(pcIP, 6100))
	if _, err := uc.WriteToUDPAddrPort([]byte("hi"), ap(pcIP, 6100)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	_, from, err := ps.ReadFromUDPAddrPort(buf)
	if err != nil || from != ap(offer, 41000) {
		t.Fatalf("from %v, %v", from, err)
	}

	l, err := pc.ListenTCP(ap(pcIP, 6100))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	wg := echoServer(t, l, nil)
	c, err := ue.DialTCP(ctx, ap(offer, 41000), ap(pcIP, 6100))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "after DHCP")
	c.Close()
	if _, err := ue.Ping(ctx, pcIP, 2, []byte("x")); err != nil {
		t.Fatal(err)
	}

	if err := ue.RemoveAddress(offer); err != nil {
		t.Fatal(err)
	}
	if got := ue.Addresses(); len(got) != 0 {
		t.Fatalf("Addresses after remove = %v", got)
	}
	if _, err := ue.DialTCP(ctx, ap(offer, 41001), ap(pcIP, 6100)); err == nil {
		t.Error("dial from a removed address succeeded")
	}
	if err := ue.RemoveAddress(offer); err == nil {
		t.Error("removing an absent address succeeded")
	}
	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("224.0.0.1/32"), netip.MustParsePrefix("255.255.255.255/32")} {
		if err := ue.AddAddress(bad); err == nil {
			t.Errorf("AddAddress(%v) succeeded", bad)
		}
	}
	l.Close()
	wg.Wait()
}

// TestNetstackDHCPBroadcast plays the DHCP exchange's addressing (RFC 2131
// §4.1, BROADCAST flag set): a client with no address sends from
// 0.0.0.0:68 to 255.255.255.255:67; the server answers to the broadcast
// address; then the client takes the address.
func TestNetstackDHCPBroadcast(t *testing.T) {
	ue, pc := backToBack(t, nil, []netip.Prefix{netip.PrefixFrom(pcIP, 24)})
	client := mustUDP(t, ue, ap(netip.IPv4Unspecified(), 68))
	server := mustUDP(t, pc, ap(netip.IPv4Unspecified(), 67))
	buf := make([]byte, 100)

	if _, err := client.WriteToUDPAddrPort([]byte("DISCOVER"), ap(bcast4, 67)); err != nil {
		t.Fatalf("broadcast from an address-less stack: %v", err)
	}
	n, from, err := server.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "DISCOVER" || from != ap(netip.IPv4Unspecified(), 68) {
		t.Fatalf("server got %q from %v, want DISCOVER from 0.0.0.0:68", buf[:n], from)
	}

	// A unicast to the address not yet assigned is dropped; the
	// broadcast sent after it arrives.
	if _, err := server.WriteToUDPAddrPort([]byte("UNICAST"), ap(offer, 68)); err != nil {
		t.Fatal(err)
	}
	if _, err := server.WriteToUDPAddrPort([]byte("OFFER"), ap(bcast4, 68)); err != nil {
		t.Fatal(err)
	}
	n, from, err = client.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("offer to %v not received: %v", bcast4, err)
	}
	if string(buf[:n]) != "OFFER" || from != ap(pcIP, 67) {
		t.Fatalf("client got %q from %v, want OFFER from %v", buf[:n], from, ap(pcIP, 67))
	}

	if err := ue.AddAddress(netip.PrefixFrom(offer, 24)); err != nil {
		t.Fatal(err)
	}
	// Now the client socket (still bound to 0.0.0.0:68) sends from the
	// leased address.
	if _, err := client.WriteToUDPAddrPort([]byte("REQUEST"), ap(pcIP, 67)); err != nil {
		t.Fatal(err)
	}
	n, from, err = server.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "REQUEST" || from != ap(offer, 68) {
		t.Fatalf("server got %q from %v (%v), want REQUEST from %v", buf[:n], from, err, ap(offer, 68))
	}
	// A datagram to another address is not delivered, one to the lease
	// is.
	server.WriteToUDPAddrPort([]byte("STRAY"), ap(netip.MustParseAddr("100.64.0.10"), 68))
	server.WriteToUDPAddrPort([]byte("ACK"), ap(offer, 68))
	n, _, err = client.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "ACK" {
		t.Fatalf("client got %q (%v), want ACK", buf[:n], err)
	}
	// Removing the only address brings the address-less mode back.
	if err := ue.RemoveAddress(offer); err != nil {
		t.Fatal(err)
	}
	if _, err := client.WriteToUDPAddrPort([]byte("DISCOVER2"), ap(bcast4, 67)); err != nil {
		t.Fatal(err)
	}
	n, from, err = server.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "DISCOVER2" || from != ap(netip.IPv4Unspecified(), 68) {
		t.Fatalf("server got %q from %v (%v)", buf[:n], from, err)
	}
}

func TestNetstackRawPackets(t *testing.T) {
	d, err := tun.NewNetstack(tun.NetstackOptions{Addresses: []netip.Prefix{netip.PrefixFrom(ueIP, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := mustUDP(t, d, ap(ueIP, 41000))

	// Garbage is dropped and counted, never an error.
	const off = tun.MinOffset
	garbage := [][]byte{make([]byte, off), append(make([]byte, off), 0x45), append(make([]byte, off), 0x20, 1, 2, 3)}
	if n, err := d.Write(garbage, off); n != len(garbage) || err != nil {
		t.Fatalf("Write(garbage) = %d, %v", n, err)
	}
	if got := d.Stats().BadPackets; got != 3 {
		t.Errorf("BadPackets = %d, want 3", got)
	}

	// A hand-built UDP packet written to the device reaches the socket.
	pkt := tuntest.UDPPacket(ap(pcIP, 6100), ap(ueIP, 41000), []byte("injected"))
	if _, err := d.Write([][]byte{append(make([]byte, off), pkt...)}, off); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "injected" || from != ap(pcIP, 6100) {
		t.Fatalf("socket got %q from %v (%v)", buf[:n], from, err)
	}

	// What the socket sends comes out of Read byte for byte as the same
	// builder would make it (same addresses, ports, payload; IP ID aside).
	const count = 10
	for i := range count {
		if _, err := c.WriteToUDPAddrPort([]byte{byte(i)}, ap(pcIP, 6100)); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, d.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, off+d.MTU())
	}
	sizes := make([]int, len(bufs))
	got := 0
	batches := 0
	for got < count {
		n, err := d.Read(bufs, sizes, off)
		if err != nil {
			t.Fatal(err)
		}
		batches++
		for i := range n {
			p := bufs[i][off : off+sizes[i]]
			want := tuntest.UDPPacket(ap(ueIP, 41000), ap(pcIP, 6100), []byte{byte(got)})
			// Zero the fields the stack chooses (ID, DF, and the header
			// checksum over them).
			p4, w4 := bytes.Clone(p), bytes.Clone(want)
			for _, b := range [][]byte{p4, w4} {
				if len(b) >= 20 {
					b[4], b[5], b[6], b[7], b[10], b[11] = 0, 0, 0, 0, 0, 0
				}
			}
			if !bytes.Equal(p4, w4) {
				t.Fatalf("packet %d:\n got %x\nwant %x", got, p, want)
			}
			got++
		}
	}
	if batches >= count {
		t.Errorf("%d packets took %d Reads; want batching", count, batches)
	}

	// Caller mistakes.
	if _, err := d.Read(bufs, sizes, off-1); !errors.Is(err, tun.ErrOffset) {
		t.Errorf("Read with small offset: %v", err)
	}
	if _, err := d.Write(bufs[:1], off-1); !errors.Is(err, tun.ErrOffset) {
		t.Errorf("Write with small offset: %v", err)
	}
	if _, err := d.Read(bufs, sizes[:1], off); !errors.Is(err, tun.ErrOffset) {
		t.Errorf("Read with short sizes: %v", err)
	}
}

// noLeaks checks, after every other cleanup of t, that no goroutine
// started during the test is left.
func noLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func TestNetstackCloseUnblocks(t *testing.T) {
	noLeaks(t)
	// One stack for a Read blocked on an empty queue, one for sockets (its
	// queue fills with the ping, which nobody reads).
	dr, err := tun.NewNetstack(tun.NetstackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := tun.NewNetstack(tun.NetstackOptions{Addresses: []netip.Prefix{netip.PrefixFrom(ueIP, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	uc, err := d.ListenUDP(ap(ueIP, 41000))
	if err != nil {
		t.Fatal(err)
	}
	l, err := d.ListenTCP(ap(ueIP, 41001))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	go func() {
		bufs := [][]byte{make([]byte, 2000)}
		_, err := dr.Read(bufs, []int{0}, tun.MinOffset)
		errs <- err
	}()
	go func() {
		_, _, err := uc.ReadFrom(make([]byte, 10))
		errs <- err
	}()
	go func() {
		_, err := l.Accept()
		errs <- err
	}()
	go func() {
		_, err := d.Ping(context.Background(), pcIP, 1, nil)
		errs <- err
	}()
	time.Sleep(20 * time.Millisecond) // let them block; the test passes either way
	if err := dr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("blocked call returned %v, want net.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a blocked call did not return after Close")
		}
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	_, err = d.Read([][]byte{make([]byte, 2000)}, []int{0}, tun.MinOffset)
	if !errors.Is(err, net.ErrClosed) || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close = %v", err)
	}
	_, err = d.Write([][]byte{make([]byte, 100)}, tun.MinOffset)
	if !errors.Is(err, net.ErrClosed) || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v", err)
	}
	if _, err := d.ListenUDP(ap(ueIP, 5)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ListenUDP after Close = %v", err)
	}
	if err := d.AddAddress(netip.MustParsePrefix("100.64.0.3/32")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("AddAddress after Close = %v", err)
	}
	uc.Close()
	l.Close()
}

func TestNetstackConnClose(t *testing.T) {
	noLeaks(t)
	{
		ue, pc := defaultPair(t)
		ctx := ctxT(t)
		uc, err := ue.ListenUDP(ap(ueIP, 41000))
		if err != nil {
			t.Fatal(err)
		}
		l, err := pc.ListenTCP(ap(pcIP, 6100))
		if err != nil {
			t.Fatal(err)
		}
		wg := echoServer(t, l, nil)
		tc, err := ue.DialTCP(ctx, ap(ueIP, 41001), ap(pcIP, 6100))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, tc, "x")

		// A Read blocked on a conn returns net.ErrClosed when the conn is
		// closed.
		errs := make(chan error, 2)
		go func() { _, _, err := uc.ReadFrom(make([]byte, 10)); errs <- err }()
		go func() { _, err := tc.Read(make([]byte, 10)); errs <- err }()
		time.Sleep(20 * time.Millisecond)
		uc.Close()
		tc.Close()
		for range 2 {
			if err := <-errs; !errors.Is(err, net.ErrClosed) {
				t.Errorf("blocked read after Close: %v, want net.ErrClosed", err)
			}
		}
		if _, _, err := uc.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("UDP ReadFrom after Close: %v", err)
		}
		if _, err := uc.WriteTo([]byte("x"), &net.UDPAddr{IP: pcIP.AsSlice(), Port: 1}); !errors.Is(err, net.ErrClosed) {
			t.Errorf("UDP WriteTo after Close: %v", err)
		}
		if err := uc.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("UDP second Close: %v", err)
		}
		if uc.LocalAddr().String() != "100.64.0.2:41000" {
			t.Errorf("UDP LocalAddr after Close: %v", uc.LocalAddr())
		}
		l.Close()
		if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v", err)
		}
		wg.Wait()
	}
}

// The peer's orderly close is io.EOF, not a closed error, as with
// *net.TCPConn; the addresses are still there afterwards.
func TestNetstackTCPPeerClose(t *testing.T) {
	ue, pc := defaultPair(t)
	ctx := ctxT(t)
	l, err := pc.ListenTCP(ap(pcIP, 6100))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		s, err := l.Accept()
		if err == nil {
			s.Write([]byte("bye"))
			s.Close()
		}
	}()
	c, err := ue.DialTCP(ctx, ap(ueIP, 41000), ap(pcIP, 6100))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline(t, c)
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
	if c.RemoteAddr() == nil || c.RemoteAddr().String() != "100.64.0.1:6100" {
		t.Errorf("RemoteAddr after peer close = %v", c.RemoteAddr())
	}
}

func TestNetstackOptions(t *testing.T) {
	for _, o := range []tun.NetstackOptions{{MTU: 1279}, {MTU: 70000}, {BatchSize: -1}, {QueueLen: -1},
		{Addresses: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/8")}}} {
		if d, err := tun.NewNetstack(o); err == nil {
			d.Close()
			t.Errorf("NewNetstack(%+v) succeeded", o)
		}
	}
	d, err := tun.NewNetstack(tun.NetstackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.MTU() != tun.DefaultNetstackMTU || d.BatchSize() != tun.DefaultNetstackBatch || d.Name() != "netstack" {
		t.Errorf("defaults: MTU %d batch %d name %q", d.MTU(), d.BatchSize(), d.Name())
	}
}
