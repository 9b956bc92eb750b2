package media_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/imsec/imsec/sip/media"
)

// What P-CSCF A does with UE A's offer: allocate a relay session per
// stream and rewrite the SDP so that the other side sends to the relay.
func ExampleRewriteSDP() {
	offer, _ := media.CallDescription(netip.MustParseAddr("10.20.0.7"), 2890844526, 49170, 51372).Marshal()
	relayAddr := netip.MustParseAddr("192.0.2.10")
	out, err := media.RewriteSDP(offer, relayAddr, []uint16{30000, 30002})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(strings.ReplaceAll(string(out), "\r\n", "\n"))
	// Output:
	// v=0
	// o=- 2890844526 1 IN IP4 192.0.2.10
	// s=-
	// c=IN IP4 192.0.2.10
	// t=0 0
	// m=audio 30000 RTP/AVP 0
	// a=rtpmap:0 PCMU/8000
	// m=video 30002 RTP/AVP 96
	// a=rtpmap:96 H264/90000
}

// UE A's media through P-CSCF A's and P-CSCF B's relays to UE B, measured
// at UE B. Here every socket is a kernel one on loopback; in imsec, leg A
// of each session is a socket in the UE's media tunnel (tun.Netstack's
// ListenUDP as the leg's Listen).
func Example() {
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	ueA, _ := media.ListenKernel(lo)
	ueB, _ := media.ListenKernel(lo)
	defer ueA.Close()
	defer ueB.Close()
	addr := func(c net.PacketConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

	ctx, hangUp := context.WithCancel(context.Background())
	relayA, relayB := media.NewRelay(nil), media.NewRelay(nil)
	sA, _ := relayA.Allocate(ctx, media.Leg{Local: lo, Peer: addr(ueA)}, media.Leg{Local: lo})
	sB, _ := relayB.Allocate(ctx, media.Leg{Local: lo, Peer: addr(ueB)}, media.Leg{Local: lo, Peer: sA.LocalB()})
	sA.SetPeerB(sB.LocalB())

	meter := media.NewMeter(media.MeterConfig{})
	done := make(chan error)
	go func() { done <- meter.Run(ctx, ueB) }()
	sent, err := media.Send(ctx, ueA, sA.LocalA(), media.SendConfig{Audio: &media.Audio{}, Duration: 500 * time.Millisecond})
	if err != nil {
		fmt.Println(err)
	}
	for deadline := time.Now().Add(5 * time.Second); meter.Packets() < sent.Audio.Packets && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	hangUp() // ends the meter and both relay sessions
	<-done
	relayA.Close()
	relayB.Close()

	r, _ := meter.Report().Stream(sent.Audio.SSRC)
	fmt.Printf("sent %d, received %d, lost %d, P-CSCF A forwarded %d\n", sent.Audio.Packets, r.Packets, r.Lost, sA.Stats().AToB.Packets)
	// Output:
	// sent 25, received 25, lost 0, P-CSCF A forwarded 25
}
