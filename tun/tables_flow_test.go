package tun_test

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
	"github.com/imsec/imsec/tun/udptest"
)

// TestInstallsWhilePacketsFlow: packets go back and forth between a UE
// and its gateway while, on the gateway, one goroutine adds and removes
// thousands of other peers, host routes and inbound SAs (growing and
// shrinking every table several times) and another lists counters and
// sends keepalives. Every packet of the flow arrives, the gateway drops
// nothing and finds a route for everything, and in the end only the UE's
// SA is left. Run it with -race: reads take no lock.
func TestInstallsWhilePacketsFlow(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	ueDev, gwDev := tuntest.NewChannelDevice(1400, 8, 64), tuntest.NewChannelDevice(1400, 8, 64)
	ue, gw := fakeLink(t, n, ueDev, gwDev)
	const others = 1500
	ins := make([]*esp.Inbound, others)
	for i := range ins {
		_, ins[i] = tun.SAPair(t, esp.SPI(0x10000+i), esp.EncAESGCM, esp.AuthNull)
	}
	lease := func(i int) []netip.Prefix {
		return []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 65, byte(i >> 8), byte(i)}), 32)}
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var rounds atomic.Int64
	errs := make(chan error, 2)
	defer func() { // also when the test fails
		stop.Store(true)
		wg.Wait()
	}()
	wg.Go(func() {
		peers := make([]*tun.Peer, others)
		for !stop.Load() {
			for i := range others {
				p, err := gw.pump.AddPeer(tun.PeerConfig{Name: "other", FollowSource: true, Routes: lease(i)})
				if err == nil {
					err = gw.pump.AddInbound(p, ins[i])
				}
				if err != nil {
					errs <- err
					return
				}
				peers[i] = p
			}
			for i := range others { // move every lease, then give half the SAs back by hand
				if err := gw.pump.SetRoutes(peers[i], lease(others+i)); err != nil {
					errs <- err
					return
				}
				if i%2 == 0 {
					if err := gw.pump.RemoveInbound(ins[i].SPI()); err != nil {
						errs <- err
						return
					}
				}
			}
			for _, p := range peers {
				if err := gw.pump.RemovePeer(p); err != nil {
					errs <- err
					return
				}
			}
			rounds.Add(1)
		}
	})
	wg.Go(func() {
		for !stop.Load() {
			gw.pump.SACounters(nil)
			gw.pump.SACounters(gw.peer)
			gw.pump.SendKeepalives(nil)
		}
	})
	for i := 0; i < 300 || rounds.Load() < 2; i++ {
		ueDev.Inbound <- up(i)
		expectPacket(t, gwDev, up(i))
		gwDev.Inbound <- down(i)
		expectPacket(t, ueDev, down(i))
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if c := gw.pump.Counters(); len(c.Drops) != 0 || c.NoRoute != 0 || c.NoSA != 0 || c.Spoofed != 0 {
		t.Fatalf("gateway counters %+v", c)
	}
	if c := ue.pump.Counters(); len(c.Drops) != 0 || c.NoRoute != 0 {
		t.Fatalf("UE counters %+v", c)
	}
	sas := gw.pump.SACounters(nil)
	var inbound []esp.SPI
	for _, s := range sas {
		if s.Peer != "ue" {
			t.Fatalf("gateway SAs left: %+v", sas)
		}
		if s.Inbound {
			inbound = append(inbound, s.SPI)
		}
	}
	if len(inbound) != 1 || inbound[0] != 0x1001 {
		t.Fatalf("gateway SAs left: %+v", sas)
	}
}
