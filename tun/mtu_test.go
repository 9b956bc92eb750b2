package tun

import (
	"testing"

	"github.com/imsec/imsec/esp"
)

// TestInnerMTU checks the documented figures against the codec's own
// arithmetic and that a packet of InnerMTU bytes seals to at most the path.
func TestInnerMTU(t *testing.T) {
	if got := InnerMTU(1500); got != 1422 {
		t.Fatalf("InnerMTU(1500) = %d, want 1422", got)
	}
	if got := InnerMTU6(1500); got != 1406 {
		t.Fatalf("InnerMTU6(1500) = %d, want 1406", got)
	}
	for _, c := range []struct {
		e    esp.EncAlg
		a    esp.AuthAlg
		want int
	}{
		{esp.EncAESCBC, esp.AuthHMACSHA196, 1422},
		{esp.EncAESCBC, esp.AuthHMACMD596, 1422},
		{esp.EncAESCBC, esp.AuthHMACSHA256128, 1422},
		{esp.EncDES3CBC, esp.AuthHMACSHA196, 1438},
		{esp.EncAESGCM, esp.AuthNull, 1438},
		{esp.EncNull, esp.AuthHMACSHA196, 1450},
	} {
		o, _ := saPair(t, 0x100, c.e, c.a)
		got := InnerMTUFor(1500, o)
		if got != c.want {
			t.Errorf("%s/%s: %d, want %d", c.e, c.a, got, c.want)
		}
		if got < InnerMTU(1500) {
			t.Errorf("%s/%s: InnerMTU is not the minimum", c.e, c.a)
		}
		if 28+got+o.Overhead(got) > 1500 || 28+got+1+o.Overhead(got+1) <= 1500 {
			t.Errorf("%s/%s: %d is not the largest payload that fits", c.e, c.a, got)
		}
	}
}
