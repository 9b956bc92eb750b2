package tun

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/inet"
	"github.com/imsec/imsec/tun/udptest"
)

// checksumOK is the slow model: the one's-complement sum of the
// pseudo-header and the segment, checksum included, is all ones.
func checksumOK(seg []byte, proto byte, src, dst netip.Addr) bool {
	var words []uint16
	add := func(b []byte) {
		for i := 0; i < len(b); i += 2 {
			w := uint16(b[i]) << 8
			if i+1 < len(b) {
				w |= uint16(b[i+1])
			}
			words = append(words, w)
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	words = append(words, uint16(proto), uint16(len(seg)))
	add(seg)
	var s uint64
	for _, w := range words {
		s += uint64(w)
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s == 0xffff
}

func udpSegment(payload []byte, sport, dport uint16) []byte {
	seg := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(seg[0:], sport)
	binary.BigEndian.PutUint16(seg[2:], dport)
	binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
	copy(seg[8:], payload)
	return seg
}

// TestTransportChecksumAfterNAT is RFC 3948 §3.1.2's case: a segment whose
// checksum was made for the sender's own (private) address arrives from a
// NAT's address. It fails the check for the address it came from; the
// header transportIn writes makes it pass for the packet handed on.
func TestTransportChecksumAfterNAT(t *testing.T) {
	for _, fam := range []struct{ private, nat, pcscf, local string }{
		{"198.51.100.7", "203.0.113.9", "203.0.113.1", "100.64.0.1"},
		{"2001:db8:1::7", "2001:db8:2::9", "2001:db8:2::1", "2001:db8:ff::1"},
	} {
		private, natted := netip.MustParseAddr(fam.private), netip.MustParseAddr(fam.nat)
		pcscf, local := netip.MustParseAddr(fam.pcscf), netip.MustParseAddr(fam.local)
		for _, n := range []int{0, 1, 7, 100, 1001} {
			payload := make([]byte, n)
			rand.Read(payload)
			seg := udpSegment(payload, 5062, 5064)
			fixOutboundChecksum(seg, protoUDP, private, pcscf) // the sender
			if !checksumOK(seg, protoUDP, private, pcscf) {
				t.Fatalf("%s n=%d: sender's checksum wrong", fam.private, n)
			}
			if checksumOK(seg, protoUDP, natted, pcscf) {
				t.Fatalf("%s n=%d: checksum survived the NAT's address change: the test proves nothing", fam.private, n)
			}
			hl := 20
			if natted.Is6() {
				hl = 40
			}
			buf := make([]byte, MinOffset+hl+len(seg))
			copy(buf[MinOffset+hl:], seg)
			p := &Pump{cfg: Config{Transport: TransportConfig{Local4: local, Local6: local}}}
			pkt := p.transportIn(buf, MinOffset+hl, buf[MinOffset+hl:], protoUDP, natted)
			if pkt == nil {
				t.Fatalf("%s: no packet", fam.private)
			}
			src, dst, ok := innerAddrs(pkt)
			if !ok || src != natted || dst != local {
				t.Fatalf("header %v -> %v (%v)", src, dst, ok)
			}
			if !checksumOK(pkt[hl:], protoUDP, natted, local) {
				t.Fatalf("%s n=%d: segment not accepted after decapsulation", fam.private, n)
			}
			if natted.Is4() && inet.Checksum(inet.Sum(0, pkt[:20])) != 0 {
				t.Fatalf("IPv4 header checksum wrong")
			}
		}
	}
	// No local address of the family: dropped.
	p := &Pump{}
	if p.transportIn(make([]byte, 100), 80, make([]byte, 20), protoUDP, netip.MustParseAddr("198.51.100.1")) != nil {
		t.Fatal("packet without a local address")
	}
}

func TestTransportSegmentRefusesFragmentsAndJunk(t *testing.T) {
	ok4 := make([]byte, 28)
	ok4[0], ok4[9] = 0x45, protoUDP
	if hl, proto, ok := transportSegment(ok4); !ok || hl != 20 || proto != protoUDP {
		t.Fatalf("plain IPv4: %d %d %v", hl, proto, ok)
	}
	frag := append([]byte{}, ok4...)
	frag[6] = 0x20 // MF
	ext := make([]byte, 48)
	ext[0], ext[6] = 0x60, 0 // hop-by-hop options
	for i, pkt := range [][]byte{nil, {0x45}, frag, ext, {0x46, 0, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, _, ok := transportSegment(pkt); ok {
			t.Errorf("packet %d accepted", i)
		}
	}
}

// transportSAPair makes matching transport mode SAs for one direction.
func transportSAPair(t testing.TB, spi esp.SPI) (*esp.Outbound, *esp.Inbound) {
	t.Helper()
	ek, ak := make([]byte, 16), make([]byte, 20)
	rand.Read(ek)
	rand.Read(ak)
	cfg := esp.Config{SPI: spi, Mode: esp.Transport, Encryption: esp.EncAESCBC, EncKey: ek, Integrity: esp.AuthHMACSHA196, AuthKey: ak}
	o, err := esp.NewOutbound(cfg)
	must(t, err)
	in, err := esp.NewInbound(cfg)
	must(t, err)
	return o, in
}

// TestTransportModeThroughPumps: a UE and a gateway pump with transport
// mode SAs, ESP in UDP on an in-memory network (RFC 3948 transport mode).
// The UE's netstack holds its private address and computes its checksums
// for it; the gateway sees the UE at another address, as behind a NAT, and
// its netstack (which checks UDP and TCP checksums) must still take the
// segments. UDP and TCP both ways.
func TestTransportModeThroughPumps(t *testing.T) {
	private := netip.MustParseAddr("198.51.100.7")
	natted := netip.MustParseAddr("203.0.113.9") // the UE as the gateway sees it
	gwOuter := netip.MustParseAddr("203.0.113.1")
	network := udptest.NewNetwork()
	mk := func(sock netip.AddrPort, addr netip.Addr, tc TransportConfig) end {
		ns, err := NewNetstack(NetstackOptions{MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(addr, 32)}})
		must(t, err)
		c, err := network.Listen(sock)
		must(t, err)
		p, err := NewPump(Config{Device: ns, Conn: c, Transport: tc})
		must(t, err)
		t.Cleanup(func() { p.Close() })
		return end{ns: ns, pump: p}
	}
	ue := mk(netip.AddrPortFrom(natted, 4500), private, TransportConfig{Local4: private, Outer4: private})
	gw := mk(netip.AddrPortFrom(gwOuter, 4500), gwInner, TransportConfig{Local4: gwInner, Outer4: gwOuter})
	outer := natted
	var err error
	all := []netip.Prefix{allV4}
	ue.peer, err = ue.pump.AddPeer(PeerConfig{Name: "gw", Endpoint: gw.pump.LocalAddr(), Allowed: all, Routes: all})
	must(t, err)
	host := []netip.Prefix{netip.PrefixFrom(natted, 32)}
	gw.peer, err = gw.pump.AddPeer(PeerConfig{Name: "ue", FollowSource: true, Allowed: host, Routes: host})
	must(t, err)
	o1, i1 := transportSAPair(t, 0x3001)
	o2, i2 := transportSAPair(t, 0x3002)
	ue.peer.SetOutbound(o1)
	must(t, gw.pump.AddInbound(gw.peer, i1))
	gw.peer.SetOutbound(o2)
	must(t, ue.pump.AddInbound(ue.peer, i2))

	// The UE addresses the gateway by its outer address, as a transport
	// mode UE addresses its P-CSCF.
	srv, err := gw.ns.ListenUDP(netip.AddrPortFrom(gwInner, 5064))
	must(t, err)
	defer srv.Close()
	cli, err := ue.ns.ListenUDP(netip.AddrPortFrom(private, 5062))
	must(t, err)
	defer cli.Close()
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(gwOuter, 5064))
	buf := make([]byte, 2000)
	for i := range 10 {
		msg := []byte(fmt.Sprintf("REGISTER sip:a.example SIP/2.0 %d", i))
		_, err := cli.WriteTo(msg, to)
		must(t, err)
		srv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := srv.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], msg) {
			t.Fatalf("gateway got %q %v", buf[:n], err)
		}
		if got := from.(*net.UDPAddr).AddrPort(); got != netip.AddrPortFrom(outer, 5062) {
			t.Fatalf("gateway sees the UE at %v", got)
		}
		_, err = srv.WriteTo([]byte("SIP/2.0 200 OK"), from)
		must(t, err)
		cli.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err = cli.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "SIP/2.0 200 OK" {
			t.Fatalf("UE got %q %v", buf[:n], err)
		}
		if got := from.(*net.UDPAddr).AddrPort(); got != netip.AddrPortFrom(gwOuter, 5064) {
			t.Fatalf("UE sees the answer from %v", got)
		}
	}
	// TCP (SIP over TCP on the protected ports).
	ln, err := gw.ns.ListenTCP(netip.AddrPortFrom(gwInner, 5064))
	must(t, err)
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		b := make([]byte, 100000)
		n := 0
		for n < len(b) {
			k, err := c.Read(b[n:])
			if err != nil {
				done <- err
				return
			}
			n += k
		}
		_, err = c.Write(b[:10])
		done <- err
	}()
	c, err := ue.ns.DialTCP(t.Context(), netip.AddrPortFrom(private, 5062), netip.AddrPortFrom(gwOuter, 5064))
	must(t, err)
	defer c.Close()
	big := make([]byte, 100000)
	rand.Read(big)
	_, err = c.Write(big)
	must(t, err)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 10)
	if _, err := c.Read(got); err != nil || !bytes.Equal(got, big[:10]) {
		t.Fatalf("TCP echo %x %v", got, err)
	}
	must(t, <-done)
	if cg := gw.pump.Counters(); cg.NotIP != 0 || len(cg.Drops) != 0 {
		t.Fatalf("gateway counters %+v", cg)
	}
}
