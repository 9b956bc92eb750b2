package tun

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/udp"
)

// Benchmarks of the routing tables at a P-CSCF's scale: n registered UEs,
// each a peer with a host route (its lease) and an inbound SA. Install
// times adding one more SA or peer and removing it again (so that n stays
// n); lookup times the per-packet searches, over the installed keys in a
// random order (at 100k the table does not fit in the caches, as on a
// loaded P-CSCF). The tables are filled by benchFill and searched through
// benchLookupSPI and benchRoute (tables_benchhook_test.go), the only code
// here that knows the tables' insides.

var benchSizes = []int{1000, 10000, 100000}

// idleDevice is a Device that never has a packet: the benchmarks drive the
// tables, not the data path.
type idleDevice struct {
	once sync.Once
	done chan struct{}
}

func newIdleDevice() *idleDevice { return &idleDevice{done: make(chan struct{})} }

func (d *idleDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	<-d.done
	return 0, ErrClosed
}
func (d *idleDevice) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (d *idleDevice) MTU() int                                     { return 1400 }
func (d *idleDevice) BatchSize() int                               { return 8 }
func (d *idleDevice) Name() string                                 { return "idle" }
func (d *idleDevice) Close() error                                 { d.once.Do(func() { close(d.done) }); return nil }

var _ Device = (*idleDevice)(nil)

func newIdlePump(tb testing.TB) *Pump {
	tb.Helper()
	c, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := NewPump(Config{Device: newIdleDevice(), Conn: c})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// benchSAs are inbound SAs with distinct random SPIs (as the P-CSCF draws
// them), made once and shared by every benchmark: making 100k costs more
// than the benchmarks.
var benchSAs struct {
	sync.Mutex
	ins  []*esp.Inbound
	used map[esp.SPI]bool
	rnd  *rand.Rand
}

func benchInbounds(tb testing.TB, n int) []*esp.Inbound {
	benchSAs.Lock()
	defer benchSAs.Unlock()
	if benchSAs.rnd == nil {
		benchSAs.rnd = rand.New(rand.NewPCG(1, 2))
		benchSAs.used = map[esp.SPI]bool{}
	}
	key := make([]byte, 20) // AES-128 and the GCM salt
	for len(benchSAs.ins) < n {
		spi := esp.SPI(benchSAs.rnd.Uint32())
		if spi <= esp.SPIReservedMax || benchSAs.used[spi] {
			continue
		}
		benchSAs.used[spi] = true
		in, err := esp.NewInbound(esp.Config{SPI: spi, Mode: esp.Tunnel, Encryption: esp.EncAESGCM, EncKey: key, Integrity: esp.AuthNull})
		if err != nil {
			tb.Fatal(err)
		}
		benchSAs.ins = append(benchSAs.ins, in)
	}
	return benchSAs.ins[:n]
}

// benchAddr is UE i's lease: 100.64.0.0/10 (RFC 6598) in order, as a DHCP
// server hands them out.
func benchAddr(i int) netip.Addr {
	v := 100<<24 | 64<<16 + uint32(i) + 2
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// benchWorld is a pump with n UEs; spis and addrs are their keys in a
// random order.
type benchWorld struct {
	p     *Pump
	peers []*Peer
	spis  []esp.SPI
	addrs []netip.Addr
	extra *esp.Inbound // not installed
}

func newBenchWorld(b *testing.B, n int) *benchWorld {
	b.Helper()
	ins := benchInbounds(b, n+1)
	w := &benchWorld{p: newIdlePump(b), extra: ins[n]}
	cfgs := make([]PeerConfig, n)
	for i := range cfgs {
		host := []netip.Prefix{netip.PrefixFrom(benchAddr(i), 32)}
		cfgs[i] = PeerConfig{Name: fmt.Sprintf("ue%d", i), FollowSource: true, Allowed: host, Routes: host}
		w.spis = append(w.spis, ins[i].SPI())
		w.addrs = append(w.addrs, benchAddr(i))
	}
	w.peers = benchFill(b, w.p, cfgs, ins[:n])
	r := rand.New(rand.NewPCG(3, 4))
	r.Shuffle(n, func(i, j int) { w.spis[i], w.spis[j] = w.spis[j], w.spis[i] })
	r.Shuffle(n, func(i, j int) { w.addrs[i], w.addrs[j] = w.addrs[j], w.addrs[i] })
	return w
}

// BenchmarkTableInstall: one more inbound SA (AddInbound, RemoveInbound),
// one more peer with a host route (AddPeer, RemovePeer), with n installed.
func BenchmarkTableInstall(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("inbound/n=%d", n), func(b *testing.B) {
			w := newBenchWorld(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if err := w.p.AddInbound(w.peers[0], w.extra); err != nil {
					b.Fatal(err)
				}
				if err := w.p.RemoveInbound(w.extra.SPI()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("peer/n=%d", n), func(b *testing.B) {
			w := newBenchWorld(b, n)
			host := []netip.Prefix{netip.PrefixFrom(benchAddr(n), 32)}
			cfg := PeerConfig{Name: "new", FollowSource: true, Allowed: host, Routes: host}
			b.ReportAllocs()
			for b.Loop() {
				peer, err := w.p.AddPeer(cfg)
				if err != nil {
					b.Fatal(err)
				}
				if err := w.p.RemovePeer(peer); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTableLookup: the receive path's SPI -> inbound SA and the send
// path's inner destination -> peer, with n installed.
func BenchmarkTableLookup(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("spi/n=%d", n), func(b *testing.B) {
			w := newBenchWorld(b, n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if benchLookupSPI(w.p, w.spis[i]) == nil {
					b.Fatal("SA not found")
				}
				if i++; i == n {
					i = 0
				}
			}
		})
		b.Run(fmt.Sprintf("addr/n=%d", n), func(b *testing.B) {
			w := newBenchWorld(b, n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if benchRoute(w.p, w.addrs[i]) == nil {
					b.Fatal("no route")
				}
				if i++; i == n {
					i = 0
				}
			}
		})
	}
}

// BenchmarkTableFill registers n UEs through the public API, as the
// P-CSCF does: a peer, two inbound SAs, then the lease as a host route.
// ns/reg is the mean cost of one registration.
func BenchmarkTableFill(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ins := benchInbounds(b, 2*n)
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				p := newIdlePump(b)
				b.StartTimer()
				for i := range n {
					peer, err := p.AddPeer(PeerConfig{Name: "ue", FollowSource: true})
					if err == nil {
						err = errors.Join(p.AddInbound(peer, ins[2*i]), p.AddInbound(peer, ins[2*i+1]),
							p.SetRoutes(peer, []netip.Prefix{netip.PrefixFrom(benchAddr(i), 32)}))
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				p.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/reg")
		})
	}
}

// BenchmarkKeepaliveRound is the once-a-second keepalive round with n
// peers none of which wants keepalives (a P-CSCF's: its UEs send them).
func BenchmarkKeepaliveRound(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			p := newIdlePump(b)
			for i := range n {
				if _, err := p.AddPeer(PeerConfig{Name: fmt.Sprint(i), Endpoint: netip.MustParseAddrPort("127.0.0.1:9")}); err != nil {
					b.Fatal(err)
				}
			}
			scratch := []udp.Message{{Buf: esp.Keepalive(), N: 1}}
			b.ResetTimer()
			for b.Loop() {
				p.SendKeepalives(scratch)
			}
		})
	}
}
