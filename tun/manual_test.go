package tun_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
)

// TestManualTunnelPing: two manual tunnels on netstacks over loopback,
// one following the other's source (behind a NAT, as far as it knows),
// ping each other's inner address; a bad SA is a ManualError naming it.
func TestManualTunnelPing(t *testing.T) {
	noLeaks(t)
	key := func(n int, b byte) []byte {
		k := make([]byte, n)
		for i := range k {
			k[i] = b + byte(i)
		}
		return k
	}
	ab := esp.Config{SPI: 0x1001, Mode: esp.Tunnel, Encryption: esp.EncAESCBC, EncKey: key(16, 1), Integrity: esp.AuthHMACSHA196, AuthKey: key(20, 2)}
	ba := esp.Config{SPI: 0x2001, Mode: esp.Tunnel, Encryption: esp.EncAESCBC, EncKey: key(16, 3), Integrity: esp.AuthHMACSHA196, AuthKey: key(20, 4)}
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	b, err := tun.StartManual(tun.ManualConfig{Out: ba, In: ab, Listen: lo, Peer: netip.MustParseAddrPort("127.0.0.1:9"), Follow: true,
		Inner: netip.MustParsePrefix("100.64.7.2/24")})
	fakeMust(t, err)
	defer b.Close()
	a, err := tun.StartManual(tun.ManualConfig{Out: ab, In: ba, Listen: lo, Peer: b.LocalAddr(),
		Inner: netip.MustParsePrefix("100.64.7.1/24")})
	fakeMust(t, err)
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, n, err := a.Ping(ctx, netip.MustParseAddr("100.64.7.2"), 1); err != nil || n != 64 {
		t.Fatalf("a -> b: %d bytes, %v", n, err)
	}
	if _, _, err := b.Ping(ctx, netip.MustParseAddr("100.64.7.1"), 1); err != nil {
		t.Fatalf("b -> a (after following a's source): %v", err)
	}
	if a.DeviceName() != "netstack" {
		t.Fatalf("device %q", a.DeviceName())
	}

	bad := ab
	bad.EncKey = key(5, 0)
	_, err = tun.StartManual(tun.ManualConfig{Out: bad, In: ba, Listen: lo, Peer: b.LocalAddr(), Inner: netip.MustParsePrefix("100.64.7.3/24")})
	var me *tun.ManualError
	if !errors.As(err, &me) || me.Setting != "out" {
		t.Fatalf("bad outbound SA: %v, want a ManualError for out", err)
	}
}
