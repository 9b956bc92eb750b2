package tun_test

import (
	"sync"
	"testing"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
	"github.com/imsec/imsec/tun/udptest"
)

// TestOnUnknownSPIInstallsOnFirstPacket: the gateway keeps the UE's
// inbound SA out of its tables; the UE's first packet asks for it through
// Config.OnUnknownSPI, which installs it, and that packet and the next
// ones are delivered. An SPI the hook does not know is dropped as
// unknown_spi, and the hook is not asked again for an SA it installed.
func TestOnUnknownSPIInstallsOnFirstPacket(t *testing.T) {
	noLeaks(t)
	n := udptest.NewNetwork()
	ueDev, gwDev := tuntest.NewChannelDevice(1400, 8, 8), tuntest.NewChannelDevice(1400, 8, 8)
	var mu sync.Mutex
	var asked []esp.SPI
	var gw *fakeEnd
	var waiting *esp.Inbound
	hook := func(spi esp.SPI) bool {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, spi)
		if waiting == nil || waiting.SPI() != spi {
			return false
		}
		in := waiting
		waiting = nil
		return gw.pump.AddInbound(gw.peer, in) == nil
	}
	ue, g := fakeLinkConfig(t, n, ueDev, gwDev, tun.Config{OnUnknownSPI: hook})
	gw = g
	// Take the gateway's inbound SA out again, to be installed on demand.
	ueOut, gwIn, _, _ := fakeSAs(t)
	fakeMust(t, gw.pump.RemoveInbound(0x1001))
	mu.Lock()
	waiting = gwIn
	mu.Unlock()
	ue.peer.SetOutbound(ueOut)

	for i := range 3 {
		ueDev.Inbound <- up(i)
		expectPacket(t, gwDev, up(i))
	}
	mu.Lock()
	if len(asked) != 1 || asked[0] != 0x1001 {
		t.Fatalf("hook asked for %#x, want once for 0x1001", asked)
	}
	mu.Unlock()
	if got, ok := gw.pump.InboundPackets(0x1001); !ok || got != 3 {
		t.Fatalf("installed SA carried %d (%v), want 3", got, ok)
	}

	// An SPI nobody waits for: dropped, counted.
	stray, _ := tun.SAPair(t, 0x3003, esp.EncAESCBC, esp.AuthHMACSHA196)
	ue.peer.SetOutbound(stray)
	ueDev.Inbound <- up(9)
	fakeWait(t, func() bool { return gw.pump.Counters().Drops["unknown_spi"] == 1 })
}
