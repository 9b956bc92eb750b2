package sip

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
)

// fakePump records what the lifecycle installs; packets[spi] is what
// InboundPackets reports.
type fakePump struct {
	in      map[esp.SPI]bool
	packets map[esp.SPI]uint64
	failAdd esp.SPI // AddInbound of this SPI fails
}

func newFakePump() *fakePump {
	return &fakePump{in: map[esp.SPI]bool{}, packets: map[esp.SPI]uint64{}}
}

func (p *fakePump) AddInbound(_ *tun.Peer, in *esp.Inbound) error {
	if in.SPI() == p.failAdd {
		return errors.New("fake: add refused")
	}
	if p.in[in.SPI()] {
		return fmt.Errorf("fake: SPI %#x twice", in.SPI())
	}
	p.in[in.SPI()] = true
	return nil
}

func (p *fakePump) RemoveInbound(spi esp.SPI) error {
	delete(p.in, spi)
	return nil
}

func (p *fakePump) InboundPackets(spi esp.SPI) (uint64, bool) {
	n, ok := p.packets[spi]
	return n, ok
}

func (p *fakePump) spis() []esp.SPI {
	var out []esp.SPI
	for spi := range p.in {
		out = append(out, spi)
	}
	slices.Sort(out)
	return out
}

// fakePeer records the outbound selectors.
type fakePeer struct {
	def *esp.Outbound
	sel []tun.OutboundSA
}

func (p *fakePeer) SetOutboundSAs(def *esp.Outbound, sel []tun.OutboundSA) { p.def, p.sel = def, sel }

// testSet builds a P-CSCF side SA set whose inbound SPIs are base+1
// (spi-s) and base+2 (spi-c), drawing nothing from a pool.
func testSet(t *testing.T, id int, base esp.SPI) *liveSet {
	t.Helper()
	ue := Mechanism{Name: MechIPsec3GPP, Alg: esp.AuthHMACSHA196, EAlg: esp.EncAESCBC, SPIc: base + 3, SPIs: base + 4, PortC: 5062, PortS: 5068}
	pc := Mechanism{Name: MechIPsec3GPP, Alg: esp.AuthHMACSHA196, EAlg: esp.EncAESCBC, SPIc: base + 2, SPIs: base + 1, PortC: 5065, PortS: 5064}
	set, err := NewSASet(ue, pc, akakeys.CK{1}, akakeys.IK{2})
	if err != nil {
		t.Fatal(err)
	}
	side, err := set.PCSCFSide()
	if err != nil {
		t.Fatal(err)
	}
	return &liveSet{id: id, set: set, side: side, spis: []esp.SPI{base + 1, base + 2}}
}

// TestSALifecycle walks sets through temporary -> active -> old ->
// deleted, step by step, and checks after each step which SAs the pump
// holds, which set is active, what the outbound default is, the temporary
// count and the SPIs still drawn.
func TestSALifecycle(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	type step struct {
		name string
		do   func(l *saSets, sets []*liveSet, p *fakePump)
		// want after the step
		pumpSPIs []esp.SPI
		active   int // id of the active set, 0 for none
		temps    int
		def      int // id of the set whose default outbound SA is in use, 0 for none
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"register, rekey, old set retired by traffic", []step{
			{"install 1", func(l *saSets, s []*liveSet, _ *fakePump) { must(t, l.install(s[0])) }, []esp.SPI{0x1001, 0x1002}, 0, 1, 0},
			{"activate 1", func(l *saSets, s []*liveSet, _ *fakePump) {
				l.activate(s[0], t0.Add(time.Hour), t0.Add(30*time.Second))
			}, []esp.SPI{0x1001, 0x1002}, 1, 0, 1},
			{"install 2", func(l *saSets, s []*liveSet, _ *fakePump) { must(t, l.install(s[1])) }, []esp.SPI{0x1001, 0x1002, 0x2001, 0x2002}, 1, 1, 1},
			{"a packet on 2 proves it", func(l *saSets, _ []*liveSet, p *fakePump) { p.packets[0x2002] = 1; l.prove() }, []esp.SPI{0x1001, 0x1002, 0x2001, 0x2002}, 1, 1, 2},
			{"activate 2", func(l *saSets, s []*liveSet, _ *fakePump) {
				l.activate(s[1], t0.Add(time.Hour), t0.Add(30*time.Second))
			}, []esp.SPI{0x1001, 0x1002, 0x2001, 0x2002}, 2, 0, 2},
			{"no traffic yet: old kept", func(l *saSets, _ []*liveSet, _ *fakePump) { l.expire(t0) }, []esp.SPI{0x1001, 0x1002, 0x2001, 0x2002}, 2, 0, 2},
			{"traffic on 2: old goes", func(l *saSets, _ []*liveSet, p *fakePump) { p.packets[0x2001] = 1; l.expire(t0) }, []esp.SPI{0x2001, 0x2002}, 2, 0, 2},
		}},
		{"old set retired at its deadline", []step{
			{"install 1", func(l *saSets, s []*liveSet, _ *fakePump) { must(t, l.install(s[0])) }, []esp.SPI{0x1001, 0x1002}, 0, 1, 0},
			{"activate 1", func(l *saSets, s []*liveSet, _ *fakePump) { l.activate(s[0], t0.Add(time.Hour), t0) }, []esp.SPI{0x1001, 0x1002}, 1, 0, 1},
			{"install+activate 2", func(l *saSets, s []*liveSet, _ *fakePump) {
				must(t, l.install(s[1]))
				l.activate(s[1], t0.Add(time.Hour), t0.Add(2*time.Second))
			}, []esp.SPI{0x1001, 0x1002, 0x2001, 0x2002}, 2, 0, 2},
			{"before the deadline", func(l *saSets, _ []*liveSet, _ *fakePump) { l.expire(t0.Add(2 * time.Second)) }, []esp.SPI{0x1001, 0x1002, 0x2001, 0x2002}, 2, 0, 2},
			{"past the deadline", func(l *saSets, _ []*liveSet, _ *fakePump) { l.expire(t0.Add(3 * time.Second)) }, []esp.SPI{0x2001, 0x2002}, 2, 0, 2},
		}},
		{"temporary set expires, the active one stays", []step{
			{"install+activate 1", func(l *saSets, s []*liveSet, _ *fakePump) {
				must(t, l.install(s[0]))
				l.activate(s[0], t0.Add(time.Hour), t0)
			}, []esp.SPI{0x1001, 0x1002}, 1, 0, 1},
			{"install 2 (re-registration)", func(l *saSets, s []*liveSet, _ *fakePump) {
				s[1].deadline = t0.Add(30 * time.Second)
				must(t, l.install(s[1]))
			}, []esp.SPI{0x1001, 0x1002, 0x2001, 0x2002}, 1, 1, 1},
			{"30 s later", func(l *saSets, _ []*liveSet, _ *fakePump) { l.expire(t0.Add(31 * time.Second)) }, []esp.SPI{0x1001, 0x1002}, 1, 0, 1},
		}},
		{"failed install leaves nothing", []step{
			{"second SA refused", func(l *saSets, s []*liveSet, p *fakePump) {
				p.failAdd = 0x1002
				if err := l.install(s[0]); err == nil {
					t.Fatal("install succeeded")
				}
			}, nil, 0, 0, 0},
		}},
		{"remove twice, clear", []step{
			{"install 1, 2", func(l *saSets, s []*liveSet, _ *fakePump) { must(t, l.install(s[0])); must(t, l.install(s[1])) }, []esp.SPI{0x1001, 0x1002, 0x2001, 0x2002}, 0, 2, 0},
			{"1 proves its keys", func(l *saSets, _ []*liveSet, p *fakePump) { p.packets[0x1001] = 1; l.prove() }, []esp.SPI{0x1001, 0x1002, 0x2001, 0x2002}, 0, 2, 1},
			{"remove 2 twice", func(l *saSets, s []*liveSet, _ *fakePump) {
				if !l.remove(s[1]) || l.remove(s[1]) {
					t.Fatal("remove: want true, then false")
				}
			}, []esp.SPI{0x1001, 0x1002}, 0, 1, 1},
			{"clear", func(l *saSets, _ []*liveSet, _ *fakePump) { l.clear() }, nil, 0, 0, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, peer, pool := newFakePump(), &fakePeer{}, newSPIPool()
			temps := 0
			l := &saSets{pump: p, peer: peer, pool: pool, onTemp: func(_ *liveSet, d int) { temps += d }}
			sets := []*liveSet{testSet(t, 1, 0x1000), testSet(t, 2, 0x2000)}
			for _, s := range sets {
				if !pool.reserve(s.spis...) {
					t.Fatal("reserve")
				}
			}
			installed := map[*liveSet]bool{}
			for _, st := range tt.steps {
				st.do(l, sets, p)
				for _, s := range l.sets {
					installed[s] = true
				}
				if got := p.spis(); !slices.Equal(got, st.pumpSPIs) {
					t.Errorf("%s: pump SPIs %#x, want %#x", st.name, got, st.pumpSPIs)
				}
				gotActive := 0
				if a := l.active(); a != nil {
					gotActive = a.id
				}
				if gotActive != st.active {
					t.Errorf("%s: active set %d, want %d", st.name, gotActive, st.active)
				}
				if temps != st.temps || len(l.temporaries()) != st.temps {
					t.Errorf("%s: temps counter %d, temporaries %d, want %d", st.name, temps, len(l.temporaries()), st.temps)
				}
				wantDef := (*esp.Outbound)(nil)
				if st.def != 0 {
					wantDef = sets[st.def-1].side.Default
				}
				if peer.def != wantDef {
					t.Errorf("%s: outbound default from the wrong set (want set %d)", st.name, st.def)
				}
				// Every SPI drawn is held by a set in the lifecycle, or by a
				// set the test never got installed; removed sets gave theirs back.
				want := 0
				for _, s := range sets {
					if slices.Contains(l.sets, s) || !installed[s] {
						want += len(s.spis)
					}
				}
				if pool.inUse() != want {
					t.Errorf("%s: %d SPIs drawn, want %d", st.name, pool.inUse(), want)
				}
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestSPIPool: drawn SPIs are above the reserved range and unique until
// released; a random source that keeps repeating itself gives an error,
// not a loop.
func TestSPIPool(t *testing.T) {
	p := newSPIPool()
	seen := map[esp.SPI]bool{}
	for range 100 {
		spis, err := p.draw(3)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range spis {
			if v <= esp.SPIReservedMax || seen[v] {
				t.Fatalf("SPI %#x reserved or drawn twice", v)
			}
			seen[v] = true
		}
	}
	if p.inUse() != 300 {
		t.Fatalf("in use %d, want 300", p.inUse())
	}
	for v := range seen {
		p.release(v)
	}
	if p.inUse() != 0 {
		t.Fatalf("in use %d after release, want 0", p.inUse())
	}
	// A source stuck on one value: the first draw takes it, the next has
	// nothing new and must fail (and hold nothing).
	p.rand = func(b []byte) { copy(b, []byte{0, 0, 0x10, 0}) }
	if _, err := p.draw(1); err != nil {
		t.Fatal(err)
	}
	if _, err := p.draw(2); !errors.Is(err, errSPIPoolFull) {
		t.Fatalf("err %v, want errSPIPoolFull", err)
	}
	if p.inUse() != 1 {
		t.Fatalf("in use %d, want 1", p.inUse())
	}
	// The reserved range is never handed out.
	p = newSPIPool()
	p.rand = func(b []byte) { copy(b, []byte{0, 0, 0, 0xff}) }
	if _, err := p.draw(1); !errors.Is(err, errSPIPoolFull) {
		t.Fatalf("err %v, want errSPIPoolFull for a source stuck in the reserved range", err)
	}
}
