package tun_test

import (
	"net/netip"
	"testing"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
)

// FuzzNetstackWrite writes arbitrary bytes to a Netstack as a packet from
// the tunnel (what an authenticated but hostile peer can send). The stack
// must neither panic nor fail the call; what it answers is read and discarded.
func FuzzNetstackWrite(f *testing.F) {
	ue := netip.MustParseAddrPort("100.64.0.2:41000")
	pc := netip.MustParseAddrPort("100.64.0.1:6100")
	udp4 := tuntest.UDPPacket(pc, ue, []byte("REGISTER"))
	f.Add(udp4)
	f.Add(udp4[:20])
	f.Add(tuntest.UDPPacket(netip.MustParseAddrPort("[2001:db8::1]:6100"), netip.MustParseAddrPort("[2001:db8::2]:41001"), []byte("x")))
	syn := []byte{
		0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 100, 64, 0, 1, 100, 64, 0, 2,
		0x17, 0xd4, 0xa0, 0x29, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
	}
	f.Add(syn)
	f.Add([]byte{0x60})
	f.Add([]byte{0x45, 0, 0xff, 0xff})

	d, err := tun.NewNetstack(tun.NetstackOptions{Addresses: []netip.Prefix{
		netip.MustParsePrefix("100.64.0.2/32"), netip.MustParsePrefix("2001:db8::2/128")}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	if c, err := d.ListenUDP(ue); err == nil {
		f.Cleanup(func() { c.Close() })
	}
	if l, err := d.ListenTCP(netip.AddrPortFrom(ue.Addr(), 41001)); err == nil {
		f.Cleanup(func() { l.Close() })
	}
	// Replies (RST, ICMP errors) are read and discarded until Close.
	go func() {
		rb := make([][]byte, d.BatchSize())
		for i := range rb {
			rb[i] = make([]byte, tun.MinOffset+d.MTU())
		}
		sizes := make([]int, len(rb))
		for {
			if _, err := d.Read(rb, sizes, tun.MinOffset); err != nil {
				return
			}
		}
	}()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		b := append(make([]byte, tun.MinOffset, tun.MinOffset+len(pkt)), pkt...)
		if n, err := d.Write([][]byte{b}, tun.MinOffset); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	})
}
