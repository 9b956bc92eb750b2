package tun

import (
	"testing"

	"github.com/imsec/imsec/esp"
)

// TestSetOutboundSAsKeepsWrappers: an SA that stays across SetOutboundSAs
// keeps its wrapper, and with it its counters; an SA named by several
// selectors (and as the default) is wrapped once; a new set of the same SAs
// costs its set, its selector list and its list of SAs, nothing more (the
// P-CSCF makes several per registration; before, two throwaway maps and
// the lists' growth made it 5 objects).
func TestSetOutboundSAsKeepsWrappers(t *testing.T) {
	o1, _ := saPair(t, 0x1001, esp.EncAESCBC, esp.AuthHMACSHA196)
	o2, _ := saPair(t, 0x1002, esp.EncAESCBC, esp.AuthHMACSHA196)
	peer := &Peer{}
	peer.SetOutboundSAs(o1, []OutboundSA{{SrcPort: 5062, SA: o2}, {DstPort: 5064, SA: o2}, {SrcPort: 5063, SA: o1}})
	first := peer.out.Load()
	if len(first.all) != 2 || len(first.sel) != 3 || first.sel[0].sa != first.sel[1].sa || first.sel[2].sa != first.def {
		t.Fatalf("set: %d SAs, %d selectors; want each SA wrapped once", len(first.all), len(first.sel))
	}
	first.def.packets.Add(5)
	first.sel[0].sa.packets.Add(7)

	peer.SetOutboundSAs(o2, []OutboundSA{{SrcPort: 1, SA: o1}})
	next := peer.out.Load()
	if next.def.out != o2 || next.def.packets.Load() != 7 || next.sel[0].sa.out != o1 || next.sel[0].sa.packets.Load() != 5 {
		t.Fatal("an SA that stayed lost its counters")
	}

	o3, _ := saPair(t, 0x1003, esp.EncAESCBC, esp.AuthHMACSHA196)
	peer.SetOutboundSAs(o3, nil)
	if s := peer.out.Load(); s.def.packets.Load() != 0 || s.sel != nil || len(s.all) != 1 {
		t.Fatal("a new SA came with counters, or a set without selectors has some")
	}

	sel := []OutboundSA{{SrcPort: 5062, SA: o2}, {DstPort: 5064, SA: o2}}
	peer.SetOutboundSAs(o1, sel)
	if n := testing.AllocsPerRun(100, func() { peer.SetOutboundSAs(o1, sel) }); n > 3 {
		t.Errorf("SetOutboundSAs of the same SAs: %.0f allocations, want at most 3", n)
	}
}
