package tun

import (
	"net/netip"
	"testing"
)

// TestTableLookupAllocs6: inner IPv6 addresses route like IPv4 ones, in the
// same table (a UE of a dual-stack pool holds a /32 and a /128): lock-free,
// no allocation, exact IPv6 hosts before the IPv6 default route, and
// neither family's default catching the other's addresses.
func TestTableLookupAllocs6(t *testing.T) {
	const n = 1025
	p := newIdlePump(t)
	in := benchInbounds(t, n)
	addr6 := func(i int) netip.Addr {
		b := netip.MustParseAddr("2001:db8:64::").As16()
		b[13], b[14], b[15] = byte(i>>16), byte(i>>8), byte(i)
		return netip.AddrFrom16(b)
	}
	var peers []*Peer
	for i := range n {
		hosts := []netip.Prefix{netip.PrefixFrom(benchAddr(i), 32), netip.PrefixFrom(addr6(i), 128)}
		peer, err := p.AddPeer(PeerConfig{Name: "ue", Routes: hosts, Allowed: hosts})
		must(t, err)
		must(t, p.AddInbound(peer, in[i]))
		peers = append(peers, peer)
	}
	def6, err := p.AddPeer(PeerConfig{Name: "default6", Routes: []netip.Prefix{netip.MustParsePrefix("2001:db8:64::/48")}})
	must(t, err)
	// A second /128 for a peer that holds one already is refused like a /32.
	if err := p.SetRoutes(def6, []netip.Prefix{netip.PrefixFrom(addr6(3), 128)}); err == nil {
		t.Fatal("another peer's IPv6 host route accepted")
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		if p.tables.route(addr6(i%n)) != peers[i%n] || p.tables.route(benchAddr(i%n)) != peers[i%n] {
			t.Fatal("host route not found")
		}
		if p.tables.route(addr6(5000)) != def6 {
			t.Fatal("IPv6 prefix route not found")
		}
		if p.tables.route(benchAddr(5000)) != nil || p.tables.route(netip.MustParseAddr("2001:db9::1")) != nil {
			t.Fatal("route to nowhere found")
		}
		if !allowed(peers[i%n].allowed.Load().list, addr6(i%n)) || allowed(peers[i%n].allowed.Load().list, addr6(i%n+1)) {
			t.Fatal("inner IPv6 source check")
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per lookup round, want 0", allocs)
	}
}
