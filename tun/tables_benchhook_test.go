package tun

import (
	"net/netip"
	"testing"

	"github.com/imsec/imsec/esp"
)

// The benchmarks' access to the tables (tables_bench_test.go), kept apart
// so that the same benchmarks run against another table: the message of
// the commit that added this file has the three functions written for the
// copy-on-write tables these replaced, which gave its "before" figures.

// benchFill adds a peer of each config with the inbound SA of the same
// index, through the API, and returns the peers.
func benchFill(tb testing.TB, p *Pump, cfgs []PeerConfig, ins []*esp.Inbound) []*Peer {
	peers := make([]*Peer, len(cfgs))
	for i, c := range cfgs {
		peer, err := p.AddPeer(c)
		if err != nil {
			tb.Fatal(err)
		}
		if err := p.AddInbound(peer, ins[i]); err != nil {
			tb.Fatal(err)
		}
		peers[i] = peer
	}
	return peers
}

// benchLookupSPI is the receive path's lookup (inSA).
func benchLookupSPI(p *Pump, spi esp.SPI) *inSA {
	s, _ := p.tables.bySPI.get(spi)
	return s
}

// benchRoute is the send path's lookup (outSA).
func benchRoute(p *Pump, a netip.Addr) *Peer { return p.tables.route(a) }
