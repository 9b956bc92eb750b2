package tun

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/imsec/imsec/esp"
)

// TestSetOutboundSAsKeepsWrappers: an SA that stays across SetOutboundSAs
// keeps its wrapper, and with it its counters; an SA named by several
// selectors (and as the default) is wrapped once; a new set of the same SAs
// costs one object, and one of new SAs two: the set (its lists inside it)
// and one array of wrappers. The P-CSCF makes several per registration and
// keeps two per UE (before, a set was three objects and a wrapper one).
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
	if s := peer.out.Load(); s.def.packets.Load() != 0 || len(s.sel) != 0 || len(s.all) != 1 {
		t.Fatal("a new SA came with counters, or a set without selectors has some")
	}

	sel := []OutboundSA{{SrcPort: 5062, SA: o2}, {DstPort: 5064, SA: o2}}
	peer.SetOutboundSAs(o1, sel)
	if n := testing.AllocsPerRun(100, func() { peer.SetOutboundSAs(o1, sel) }); n > 1 {
		t.Errorf("SetOutboundSAs of the same SAs: %.0f allocations, want 1", n)
	}
	fresh := &Peer{}
	if n := testing.AllocsPerRun(100, func() { fresh.out.Store(nil); fresh.SetOutboundSAs(o1, sel) }); n > 2 {
		t.Errorf("SetOutboundSAs of new SAs: %.0f allocations, want 2", n)
	}
}

// TestPeerListsOneObject: the lists the data path reads without a lock
// (allowed sources, owned inbound SPIs) are one object per change, and
// keep their order and contents through adds and removes. A P-CSCF holds
// two peers per UE; each list was two objects (a slice header and its
// array).
func TestPeerListsOneObject(t *testing.T) {
	peer := &Peer{}
	allowed := []netip.Prefix{netip.MustParsePrefix("100.64.0.9/32")}
	if n := testing.AllocsPerRun(100, func() { peer.SetAllowed(allowed) }); n != 1 {
		t.Errorf("SetAllowed: %.0f allocations, want 1", n)
	}
	allowed[0] = netip.MustParsePrefix("198.51.100.1/32") // the peer keeps its own copy
	if got := peer.allowed.Load().list; len(got) != 1 || got[0].String() != "100.64.0.9/32" {
		t.Errorf("allowed: %v", got)
	}
	if n := testing.AllocsPerRun(100, func() { peer.SetAllowed(nil) }); n != 0 || len(peer.allowed.Load().list) != 0 {
		t.Errorf("SetAllowed(nil): %.0f allocations, %d prefixes; want none", n, len(peer.allowed.Load().list))
	}
	many := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("100.64.0.0/10")}
	peer.SetAllowed(many)
	if got := peer.allowed.Load().list; !slices.Equal(got, many) {
		t.Errorf("allowed past the buffer: %v", got)
	}

	var s *spiSet
	for i := range 6 { // past the buffer of two
		s = newSPISet(s, []esp.SPI{esp.SPI(0x1000 + i)}, nil)
	}
	if len(s.list) != 6 || s.list[0] != 0x1000 || s.list[5] != 0x1005 {
		t.Fatalf("spiSet after six adds: %#x", s.list)
	}
	s = newSPISet(s, nil, func(x esp.SPI) bool { return x%2 == 0 })
	if !slices.Equal(s.list, []esp.SPI{0x1001, 0x1003, 0x1005}) {
		t.Fatalf("spiSet after removing the even SPIs: %#x", s.list)
	}
	if newSPISet(s, nil, func(esp.SPI) bool { return true }) != nil {
		t.Error("an empty spiSet is not nil")
	}
	base := newSPISet(nil, []esp.SPI{0x2000}, nil)
	if n := testing.AllocsPerRun(100, func() { newSPISet(base, []esp.SPI{0x2001}, nil) }); n != 1 {
		t.Errorf("newSPISet within the buffer: %.0f allocations, want 1", n)
	}
}
