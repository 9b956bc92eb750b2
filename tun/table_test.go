package tun

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/imsec/imsec/esp"
)

// Tests of table (table.go) and of the Pump's tables built on it
// (tables.go, peer.go). Hashes that put every key in one bucket, or in
// two, make collisions happen on purpose.

func hashOne(seed uint64, k esp.SPI) uint64 { return 0 }
func hashTwo(seed uint64, k esp.SPI) uint64 { return uint64(k&1) << 63 }

// tableOp is one step of TestTable: put (v != 0) or remove (v == 0) k,
// then what get should find for each key in want (0: absent).
type tableOp struct {
	k          esp.SPI
	v          int
	replaced   bool // put: k was there; remove: k was there
	old        int  // the value put replaced or remove removed
	want       map[esp.SPI]int
	wantLength int
}

func TestTable(t *testing.T) {
	ops := []tableOp{
		{k: 1, v: 0, replaced: false, want: map[esp.SPI]int{1: 0}, wantLength: 0}, // remove from empty
		{k: 1, v: 10, want: map[esp.SPI]int{1: 10, 2: 0}, wantLength: 1},
		{k: 2, v: 20, want: map[esp.SPI]int{1: 10, 2: 20}, wantLength: 2},
		{k: 3, v: 30, want: map[esp.SPI]int{1: 10, 2: 20, 3: 30}, wantLength: 3},
		{k: 2, v: 21, replaced: true, old: 20, want: map[esp.SPI]int{1: 10, 2: 21, 3: 30}, wantLength: 3}, // replace in the middle
		{k: 4, v: 0, want: map[esp.SPI]int{1: 10, 2: 21, 3: 30, 4: 0}, wantLength: 3},                     // remove missing, bucket not empty
		{k: 2, v: 0, replaced: true, old: 21, want: map[esp.SPI]int{1: 10, 2: 0, 3: 30}, wantLength: 2},   // remove from the middle
		{k: 2, v: 0, want: map[esp.SPI]int{1: 10, 2: 0, 3: 30}, wantLength: 2},                            // twice
		{k: 3, v: 0, replaced: true, old: 30, want: map[esp.SPI]int{1: 10, 3: 0}, wantLength: 1},          // the last
		{k: 1, v: 0, replaced: true, old: 10, want: map[esp.SPI]int{1: 0}, wantLength: 0},                 // the only
		{k: 1, v: 11, want: map[esp.SPI]int{1: 11}, wantLength: 1},                                        // back
	}
	for _, h := range []struct {
		name string
		f    func(uint64, esp.SPI) uint64
	}{{"spread", hashSPI}, {"one bucket", hashOne}, {"two buckets", hashTwo}} {
		t.Run(h.name, func(t *testing.T) {
			var tb table[esp.SPI, int]
			tb.init(h.f)
			for i, op := range ops {
				var old int
				var replaced bool
				if op.v != 0 {
					old, replaced = tb.put(op.k, op.v)
				} else {
					old, replaced = tb.remove(op.k)
				}
				if replaced != op.replaced || old != op.old {
					t.Fatalf("op %d (%d -> %d): got (%d, %v), want (%d, %v)", i, op.k, op.v, old, replaced, op.old, op.replaced)
				}
				for k, v := range op.want {
					got, ok := tb.get(k)
					if got != v || ok != (v != 0) {
						t.Fatalf("op %d: get(%d) = %d, %v; want %d", i, k, got, ok, v)
					}
				}
				if tb.len() != op.wantLength || countValues(&tb) != op.wantLength {
					t.Fatalf("op %d: len %d, %d values; want %d", i, tb.len(), countValues(&tb), op.wantLength)
				}
			}
		})
	}
}

func countValues[K comparable, V any](t *table[K, V]) int {
	n := 0
	for range t.values() {
		n++
	}
	return n
}

// TestTableModel checks the table against a Go map over random puts and
// removals that grow it to thousands of entries and shrink it again,
// with a good hash and with degenerate ones.
func TestTableModel(t *testing.T) {
	for _, h := range []struct {
		name string
		f    func(uint64, esp.SPI) uint64
		max  int
	}{{"spread", hashSPI, 5000}, {"one bucket", hashOne, 300}, {"two buckets", hashTwo, 300}} {
		t.Run(h.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, uint64(h.max)))
			var tb table[esp.SPI, int]
			tb.init(h.f)
			model := map[esp.SPI]int{}
			keys := func() esp.SPI { return esp.SPI(r.IntN(2 * h.max)) } // half the key space is present at the peak
			midResize := 0                                               // checks made while a resize was under way
			check := func() {
				if tb.arr.Load().old.Load() != nil {
					midResize++
				}
				for range 4 {
					k := keys()
					v, ok := tb.get(k)
					if mv, mok := model[k]; ok != mok || v != mv {
						t.Fatalf("get(%d) = (%d, %v), model has (%d, %v)", k, v, ok, mv, mok)
					}
				}
			}
			defer func() {
				if midResize == 0 {
					t.Error("no check ran during a resize")
				}
			}()
			for round := range 4 {
				// Grow towards max, then shrink towards zero.
				for len(model) < h.max {
					k, v := keys(), r.Int()|1
					old, replaced := tb.put(k, v)
					if mv, ok := model[k]; ok != replaced || old != mv {
						t.Fatalf("round %d: put(%d) = (%d, %v), model had (%d, %v)", round, k, old, replaced, mv, ok)
					}
					model[k] = v
					checkLoad(t, &tb)
					check()
				}
				checkModel(t, &tb, model, 2*h.max)
				for len(model) > 10 {
					k := keys()
					old, ok := tb.remove(k)
					if mv, mok := model[k]; ok != mok || old != mv {
						t.Fatalf("round %d: remove(%d) = (%d, %v), model had (%d, %v)", round, k, old, ok, mv, mok)
					}
					delete(model, k)
					checkLoad(t, &tb)
					check()
				}
				checkModel(t, &tb, model, 2*h.max)
			}
		})
	}
}

// checkLoad: entries never outnumber buckets, nor fall below an eighth of
// them (beyond the smallest array).
func checkLoad[K comparable, V any](t *testing.T, tb *table[K, V]) {
	t.Helper()
	size := len(tb.arr.Load().b)
	if tb.len() > size || (size > minBuckets && tb.len() < size/8) {
		t.Fatalf("%d entries in %d buckets", tb.len(), size)
	}
}

func checkModel(t *testing.T, tb *table[esp.SPI, int], model map[esp.SPI]int, keys int) {
	t.Helper()
	for k := range esp.SPI(keys) {
		v, ok := tb.get(k)
		if mv, mok := model[k]; ok != mok || v != mv {
			t.Fatalf("get(%d) = (%d, %v), model has (%d, %v)", k, v, ok, mv, mok)
		}
	}
	got := slices.Sorted(tb.values())
	want := slices.Sorted(maps.Values(model))
	if !slices.Equal(got, want) || tb.len() != len(model) {
		t.Fatalf("values: %d (len %d), model %d", len(got), tb.len(), len(want))
	}
}

// TestTableGivesMemoryBack: after 100k entries are put and removed, the
// array is back to its smallest and the values can be collected.
func TestTableGivesMemoryBack(t *testing.T) {
	const n = 100000
	type value struct{ _ [64]byte }
	var tb table[esp.SPI, *value]
	tb.init(hashSPI)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	weaks := make([]weak.Pointer[value], 0, n)
	for i := range n {
		v := &value{}
		weaks = append(weaks, weak.Make(v))
		tb.put(esp.SPI(i), v)
	}
	if size := len(tb.arr.Load().b); size < n {
		t.Fatalf("%d entries in %d buckets", n, size)
	}
	for i := range n {
		if _, ok := tb.remove(esp.SPI(i)); !ok {
			t.Fatalf("%d missing", i)
		}
	}
	if a := tb.arr.Load(); len(a.b) != minBuckets || a.old.Load() != nil || tb.len() != 0 {
		t.Fatalf("after removing everything: %d entries in %d buckets, resize finished: %v", tb.len(), len(a.b), a.old.Load() == nil)
	}
	runtime.GC()
	for i, w := range weaks {
		if w.Value() != nil {
			t.Fatalf("value %d is still reachable", i)
		}
	}
	weaks = nil
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// At the peak the table held 131072 buckets (1 MiB of pointers alone).
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 256<<10 {
		t.Fatalf("heap grew by %d bytes over the table's life", grew)
	}
	runtime.KeepAlive(&tb)
}

// TestTableReadersDuringWrites: readers never miss a key that stays in
// the table while a writer puts and removes others, through many resizes
// (run with -race too: it checks that reads and writes are ordered).
func TestTableReadersDuringWrites(t *testing.T) {
	const stable, churn = 200, 20000
	var tb table[esp.SPI, int]
	tb.init(hashSPI)
	var mu sync.Mutex // the owner's lock
	for k := range esp.SPI(stable) {
		tb.put(k, int(k)+1)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() { // looks keys up
		for i := 0; !stop.Load(); i++ {
			k := esp.SPI(i % stable)
			if v, ok := tb.get(k); !ok || v != int(k)+1 {
				errs <- fmt.Errorf("get(%d) = %d, %v during writes", k, v, ok)
				return
			}
		}
	})
	wg.Go(func() { // lists them: each stable one once
		for !stop.Load() {
			n := 0
			for v := range tb.values() {
				if v > 0 {
					n++
				}
			}
			if n != stable {
				errs <- fmt.Errorf("values listed %d stable keys, want %d", n, stable)
				return
			}
		}
	})
	for range 3 {
		for i := range churn {
			mu.Lock()
			tb.put(esp.SPI(stable+i), -i-1)
			mu.Unlock()
		}
		for i := range churn {
			mu.Lock()
			tb.remove(esp.SPI(stable + i))
			mu.Unlock()
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if tb.len() != stable {
		t.Fatalf("len %d, want %d", tb.len(), stable)
	}
}

// TestTableLookupAllocs: the per-packet lookups allocate nothing, for hits
// and misses, host routes and prefix routes, while a resize is under way
// (1025 SAs and host routes: the tables have just begun to double) and
// after it.
func TestTableLookupAllocs(t *testing.T) {
	const n = 1025
	p := newIdlePump(t)
	in := benchInbounds(t, n)
	var peers []*Peer
	for i := range n {
		host := []netip.Prefix{netip.PrefixFrom(benchAddr(i), 32)}
		peer, err := p.AddPeer(PeerConfig{Name: "ue", Routes: host})
		must(t, err)
		must(t, p.AddInbound(peer, in[i]))
		peers = append(peers, peer)
	}
	def, err := p.AddPeer(PeerConfig{Name: "default", Routes: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}})
	must(t, err)
	t6 := netip.MustParseAddr("2001:db8::1")
	for _, phase := range []string{"during a resize", "after it"} {
		resizing := p.tables.bySPI.arr.Load().old.Load() != nil && p.tables.byAddr.arr.Load().old.Load() != nil
		if resizing != (phase == "during a resize") {
			t.Fatalf("%s: tables resizing: %v", phase, resizing)
		}
		i := 0
		allocs := testing.AllocsPerRun(1000, func() {
			if s, _ := p.tables.bySPI.get(in[i%n].SPI()); s == nil || s.peer != peers[i%n] {
				t.Fatal("SPI not found")
			}
			if _, ok := p.tables.bySPI.get(1); ok {
				t.Fatal("SPI 1 found")
			}
			if p.tables.route(benchAddr(i%n)) != peers[i%n] {
				t.Fatal("host route not found")
			}
			if p.tables.route(benchAddr(5000)) != def {
				t.Fatal("prefix route not found")
			}
			if p.tables.route(t6) != nil {
				t.Fatal("route to nowhere found")
			}
			i++
		})
		if allocs != 0 {
			t.Fatalf("%s: %v allocations per lookup round, want 0", phase, allocs)
		}
		p.wmu.Lock()
		p.tables.bySPI.migrate(p.tables.bySPI.arr.Load(), n)
		p.tables.byAddr.migrate(p.tables.byAddr.arr.Load(), n)
		p.wmu.Unlock()
	}
}

// tablesModel is the slow obvious version of the Pump's tables: what the
// copy-on-write tables did, recomputed from scratch for every question.
type tablesModel struct {
	peers    map[*Peer]bool
	routes   map[*Peer][]netip.Prefix
	prefixes []prefixRoute // in the order routes were set
	spis     map[esp.SPI]*Peer
}

func (m *tablesModel) setRoutes(peer *Peer, routes []netip.Prefix) bool {
	for _, r := range routes {
		if !r.IsValid() {
			return false
		}
		if r = r.Masked(); r.IsSingleIP() {
			if q := m.host(r.Addr()); q != nil && q != peer {
				return false
			}
		}
	}
	m.removeRoutes(peer)
	m.routes[peer] = routes
	for _, r := range routes {
		if r = r.Masked(); !r.IsSingleIP() {
			m.prefixes = append(m.prefixes, prefixRoute{r, peer})
		}
	}
	return true
}

func (m *tablesModel) removeRoutes(peer *Peer) {
	delete(m.routes, peer)
	m.prefixes = slices.DeleteFunc(m.prefixes, func(r prefixRoute) bool { return r.peer == peer })
}

func (m *tablesModel) host(a netip.Addr) *Peer {
	for peer, rs := range m.routes {
		for _, r := range rs {
			if r = r.Masked(); r.IsSingleIP() && r.Addr() == a {
				return peer
			}
		}
	}
	return nil
}

func (m *tablesModel) route(a netip.Addr) *Peer {
	if q := m.host(a); q != nil {
		return q
	}
	var best *Peer
	bits := -1
	for _, r := range m.prefixes { // the first of the longest
		if r.p.Contains(a) && r.p.Bits() > bits {
			best, bits = r.peer, r.p.Bits()
		}
	}
	return best
}

// TestPumpTablesModel runs AddPeer, SetRoutes, RemovePeer, AddInbound and
// RemoveInbound in random order on a small pool of addresses and SPIs (so
// that conflicts, duplicates and removals of what is not there are
// frequent, also on peers already removed) and checks the Pump against
// tablesModel after each: the same errors, the same route for every
// address, the same SA for every SPI, the same counters lists.
func TestPumpTablesModel(t *testing.T) {
	p := newIdlePump(t)
	m := &tablesModel{peers: map[*Peer]bool{}, routes: map[*Peer][]netip.Prefix{}, spis: map[esp.SPI]*Peer{}}
	var addrs []netip.Addr
	for i := range 8 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	addrs = append(addrs, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"))
	routePool := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/29"), netip.MustParsePrefix("10.0.0.0/30"), netip.MustParsePrefix("10.0.0.5/30"),
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("2001:db8::/32"), {},
	}
	for _, a := range addrs[:8] {
		routePool = append(routePool, netip.PrefixFrom(a, 32))
	}
	ins := make([]*esp.Inbound, 12)
	for i := range ins {
		_, ins[i] = saPair(t, esp.SPI(0x4000+i), esp.EncAESGCM, esp.AuthNull)
	}
	var all []*Peer // every peer ever added
	r := rand.New(rand.NewPCG(11, 12))
	pickRoutes := func() []netip.Prefix {
		var rs []netip.Prefix
		for range r.IntN(4) {
			rs = append(rs, routePool[r.IntN(len(routePool))])
		}
		return rs
	}
	pickPeer := func() *Peer {
		if len(all) == 0 {
			return nil
		}
		return all[r.IntN(len(all))]
	}
	for step := range 3000 {
		var what string
		var err error
		var ok bool
		switch op, peer := r.IntN(6), pickPeer(); {
		case op == 0 || peer == nil:
			rs := pickRoutes()
			what = fmt.Sprintf("AddPeer(%v)", rs)
			peer, err = p.AddPeer(PeerConfig{Name: fmt.Sprint(step), Routes: rs})
			if peer != nil {
				all = append(all, peer)
				m.peers[peer] = true
				ok = m.setRoutes(peer, rs)
			} else {
				ok = (&tablesModel{routes: maps.Clone(m.routes)}).setRoutes(new(Peer), rs)
			}
		case op == 1:
			rs := pickRoutes()
			what = fmt.Sprintf("SetRoutes(%s, %v)", peer.name, rs)
			err = p.SetRoutes(peer, rs)
			ok = m.setRoutes(peer, rs)
		case op == 2 && r.IntN(3) == 0:
			what = fmt.Sprintf("RemovePeer(%s)", peer.name)
			err = p.RemovePeer(peer)
			ok = true
			m.removeRoutes(peer)
			delete(m.peers, peer)
			for spi, q := range m.spis {
				if q == peer {
					delete(m.spis, spi)
				}
			}
		case op == 3 || op == 4:
			in := ins[r.IntN(len(ins))]
			what = fmt.Sprintf("AddInbound(%s, %#x)", peer.name, in.SPI())
			err = p.AddInbound(peer, in)
			if ok = m.spis[in.SPI()] == nil; ok {
				m.spis[in.SPI()] = peer
			}
		default:
			spi := ins[r.IntN(len(ins))].SPI()
			what = fmt.Sprintf("RemoveInbound(%#x)", spi)
			err = p.RemoveInbound(spi)
			if ok = m.spis[spi] != nil; ok {
				delete(m.spis, spi)
			}
		}
		if (err == nil) != ok {
			t.Fatalf("step %d: %s: err %v, model says ok=%v", step, what, err, ok)
		}
		for _, a := range addrs {
			if got, want := p.tables.route(a), m.route(a); got != want {
				t.Fatalf("step %d: after %s: route(%v) = %v, model %v", step, what, a, name(got), name(want))
			}
		}
		for _, in := range ins {
			s, _ := p.tables.bySPI.get(in.SPI())
			var got *Peer
			if s != nil {
				got = s.peer
			}
			if want := m.spis[in.SPI()]; got != want {
				t.Fatalf("step %d: after %s: SPI %#x owned by %v, model %v", step, what, in.SPI(), name(got), name(want))
			}
		}
		if n, want := countValues(&p.tables.peers), len(m.peers); n != want {
			t.Fatalf("step %d: after %s: %d peers, model %d", step, what, n, want)
		}
		if n, want := len(p.SACounters(nil)), len(m.spis); n != want { // no outbound SAs here
			t.Fatalf("step %d: after %s: %d SAs listed, model %d", step, what, n, want)
		}
		if peer := pickPeer(); peer != nil {
			var got, want []esp.SPI
			for _, c := range p.SACounters(peer) {
				got = append(got, c.SPI)
			}
			for spi, q := range m.spis {
				if q == peer {
					want = append(want, spi)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: after %s: SACounters(%s) %#x, model %#x", step, what, peer.name, got, want)
			}
		}
	}
	p.Close()
	if _, err := p.AddPeer(PeerConfig{}); err != ErrClosedPump {
		t.Fatalf("AddPeer after Close: %v", err)
	}
	if err := p.AddInbound(all[0], ins[0]); err != ErrClosedPump {
		t.Fatalf("AddInbound after Close: %v", err)
	}
}

func name(p *Peer) string {
	if p == nil {
		return "nil"
	}
	return p.name
}

// BenchmarkTablePut fills a table with n SPIs, one put at a time.
// ns/put is the mean; last-resize-ns is the put that started the last
// (largest) resize: it allocates the doubled array, and each put after it
// moves migrateStep groups of buckets across. That put is timed once per
// fill and the least time of all fills is reported, since on a shared
// machine any one put may be preempted.
func BenchmarkTablePut(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			s := &inSA{}
			lastResize := time.Duration(math.MaxInt64)
			b.ReportAllocs()
			for b.Loop() {
				var tb table[esp.SPI, *inSA]
				tb.init(hashSPI)
				var last time.Duration
				for i := range n {
					size := len(tb.arr.Load().b)
					start := time.Now()
					tb.put(esp.SPI(i), s)
					if d := time.Since(start); len(tb.arr.Load().b) != size {
						last = d
					}
				}
				lastResize = min(lastResize, last)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/put")
			b.ReportMetric(float64(lastResize.Nanoseconds()), "last-resize-ns")
		})
	}
}
