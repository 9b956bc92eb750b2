package tun_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
)

// Two netstacks joined by the trivial pump: the UE learns its address after
// the link is up, then connects from a fixed port (33.203 port-c) to the
// P-CSCF's port-s.
func ExampleNetstack() {
	ue, _ := tun.NewNetstack(tun.NetstackOptions{Name: "ue"})
	pcscf, _ := tun.NewNetstack(tun.NetstackOptions{
		Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")},
	})
	pump := tuntest.Connect(ue, pcscf) // ESP would sit here
	defer func() {
		ue.Close()
		pcscf.Close()
		pump.Wait()
	}()

	// As if learned over DHCP.
	ue.AddAddress(netip.MustParsePrefix("100.64.0.2/32"))

	l, _ := pcscf.ListenTCP(netip.MustParseAddrPort("100.64.0.1:6100"))
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		fmt.Println("P-CSCF accepted from", c.RemoteAddr())
		c.Write([]byte("SIP/2.0 200 OK"))
		c.Close()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ue.DialTCP(ctx, netip.MustParseAddrPort("100.64.0.2:41000"), netip.MustParseAddrPort("100.64.0.1:6100"))
	if err != nil {
		fmt.Println(err)
		return
	}
	reply, _ := io.ReadAll(c)
	c.Close()
	fmt.Printf("UE %v got %q\n", c.LocalAddr(), reply)

	rtt, err := ue.Ping(ctx, netip.MustParseAddr("100.64.0.1"), 1, []byte("pinhole"))
	fmt.Println("ping ok:", err == nil && rtt > 0)
	// Output:
	// P-CSCF accepted from 100.64.0.2:41000
	// UE 100.64.0.2:41000 got "SIP/2.0 200 OK"
	// ping ok: true
}
