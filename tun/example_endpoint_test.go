package tun_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
)

// Two tunnel endpoints on loopback UDP, each a socket, a netstack, a pump
// and a peer; with an SA each way, one end pings the other through ESP.
func ExampleNewEndpoint() {
	all := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	mk := func(inner string) *tun.Endpoint {
		e, err := tun.NewEndpoint(tun.EndpointConfig{
			Listen:   netip.MustParseAddrPort("127.0.0.1:0"),
			Netstack: &tun.NetstackOptions{Addresses: []netip.Prefix{netip.MustParsePrefix(inner)}},
			Peer:     &tun.PeerConfig{Name: "far end", Allowed: all, Routes: all},
		})
		if err != nil {
			panic(err)
		}
		return e
	}
	ue, pcscf := mk("100.64.0.2/24"), mk("100.64.0.1/24")
	defer ue.Close()
	defer pcscf.Close()
	ue.Peer.SetEndpoint(pcscf.LocalAddr())
	pcscf.Peer.SetEndpoint(ue.LocalAddr())

	// Example keys; real ones come from AKA (TS 33.203 Annex I).
	sa := func(spi esp.SPI) (*esp.Outbound, *esp.Inbound) {
		c := esp.Config{SPI: spi, Mode: esp.Tunnel, Encryption: esp.EncAESCBC, EncKey: bytes.Repeat([]byte{1}, 16),
			Integrity: esp.AuthHMACSHA196, AuthKey: bytes.Repeat([]byte{2}, 20)}
		out, _ := esp.NewOutbound(c)
		in, _ := esp.NewInbound(c)
		return out, in
	}
	up, upIn := sa(0x1001)
	down, downIn := sa(0x2001)
	ue.Peer.SetOutbound(up)
	pcscf.Pump.AddInbound(pcscf.Peer, upIn)
	pcscf.Peer.SetOutbound(down)
	ue.Pump.AddInbound(ue.Peer, downIn)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := ue.Netstack.Ping(ctx, netip.MustParseAddr("100.64.0.1"), 1, []byte("pinhole"))
	fmt.Println("ping through ESP:", err)
	fmt.Println("ESP packets the P-CSCF accepted:", pcscf.Pump.Counters().RxPackets)
	// Output:
	// ping through ESP: <nil>
	// ESP packets the P-CSCF accepted: 1
}
