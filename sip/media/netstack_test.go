package media

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
)

// Leg A of a relay session inside a userspace network stack, as in imsec
// where it lives in the UE's media tunnel: the UE's netstack and the
// P-CSCF's are joined by a pump (where ESP sits in imsec), leg B is a
// kernel socket towards the far side. Media flows both ways.
func TestRelayNetstackLeg(t *testing.T) {
	ueAddr, pcscfAddr := netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.1")
	ue, err := tun.NewNetstack(tun.NetstackOptions{Name: "ue", Addresses: []netip.Prefix{netip.PrefixFrom(ueAddr, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	pcscf, err := tun.NewNetstack(tun.NetstackOptions{Name: "pcscf", Addresses: []netip.Prefix{netip.PrefixFrom(pcscfAddr, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	pump := tuntest.Connect(ue, pcscf)
	defer func() {
		ue.Close()
		pcscf.Close()
		pump.Wait()
	}()

	ueConn, err := ue.ListenUDP(netip.AddrPortFrom(ueAddr, 49170))
	if err != nil {
		t.Fatal(err)
	}
	defer ueConn.Close()
	far := listenLoopback(t)

	r := NewRelay(nil)
	defer r.Close()
	s, err := r.Allocate(context.Background(),
		Leg{Listen: pcscf.ListenUDP, Local: netip.AddrPortFrom(pcscfAddr, 0), Peer: netip.AddrPortFrom(ueAddr, 49170)},
		Leg{Local: loopback, Peer: addrOf(far)})
	if err != nil {
		t.Fatal(err)
	}
	if s.LocalA().Addr() != pcscfAddr || s.LocalA().Port() == 0 || s.legs[0].conn.ap == nil {
		t.Fatalf("leg A at %v", s.LocalA())
	}

	mFar, stopFar := startMeter(t, far, MeterConfig{})
	mUE, stopUE := startMeter(t, ueConn, MeterConfig{})
	cfg := SendConfig{Audio: &Audio{Interval: 5 * time.Millisecond}, Video: &Video{FPS: 50}, Duration: 300 * time.Millisecond}
	errc := make(chan error, 1)
	var back SendStats
	go func() {
		var err error
		back, err = Send(context.Background(), far, s.LocalB(), cfg)
		errc <- err
	}()
	out, err := Send(context.Background(), ueConn, s.LocalA(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	waitPackets(t, mFar, total(out))
	waitPackets(t, mUE, total(back))
	stopFar()
	stopUE()
	rFar, rUE := mFar.Report(), mUE.Report()
	checkClean(t, rFar, out.Audio, "audio")
	checkClean(t, rFar, out.Video, "video")
	checkClean(t, rUE, back.Audio, "audio")
	checkClean(t, rUE, back.Video, "video")
	if st := s.Stats(); st.AToB.Packets != total(out) || st.BToA.Packets != total(back) || st.AToB.Unexpected+st.BToA.Unexpected != 0 {
		t.Errorf("relay stats %+v", st)
	}
}

// tun's netstack conns have the netip fast path.
var _ AddrPortConn = tun.UDPAddrPortConn(nil)
