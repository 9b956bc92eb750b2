package tun_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
	"github.com/imsec/imsec/tun/udp"
)

// Tests of the pump's hot paths: no allocation per packet (STYLE: "no
// allocation per packet", "allocation budgets as tests") and whole batches
// through the outbound ring. The devices are poolDevice, a fake that
// allocates nothing itself (tuntest's ChannelDevice copies every packet,
// which AllocsPerRun would count), and the sockets are real loopback
// udp.Conns, whose batch path allocates nothing either (tun/udp tests it).

// poolDevice is a Device over preallocated packets: Read delivers the
// packets whose indices arrive on feed (as many as are queued, up to the
// batch, or exactly take of them if take > 0), Write copies each packet
// into got and sends its length on wrote.
type poolDevice struct {
	mtu, batch int
	pkts       [][]byte
	feed       chan int
	take       func() int // how many to deliver on this Read (0: all queued)

	got   [][]byte // written packets, in order (no more than len(got) kept)
	wrote chan int
	next  int // the got slot Write fills next

	short  atomic.Int64 // Reads given fewer than batch buffers
	reads  atomic.Int64
	done   chan struct{}
	closed atomic.Bool
}

var _ tun.Device = (*poolDevice)(nil)

func newPoolDevice(mtu, batch int, pkts [][]byte) *poolDevice {
	d := &poolDevice{mtu: mtu, batch: batch, pkts: pkts, feed: make(chan int, 4096),
		wrote: make(chan int, 4096), done: make(chan struct{})}
	d.got = make([][]byte, 4096)
	for i := range d.got {
		d.got[i] = make([]byte, mtu)
	}
	return d
}

func (d *poolDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.reads.Add(1)
	if len(bufs) != d.batch {
		d.short.Add(1)
	}
	want := len(bufs)
	if d.take != nil {
		if k := d.take(); k > 0 {
			want = min(want, k)
		}
	}
	n := 0
	for n < want {
		var i int
		if n == 0 {
			select {
			case i = <-d.feed:
			case <-d.done:
				return 0, tun.ErrClosed
			}
		} else {
			select {
			case i = <-d.feed:
			default:
				return n, nil
			}
		}
		sizes[n] = copy(bufs[n][offset:], d.pkts[i])
		n++
	}
	return n, nil
}

func (d *poolDevice) Write(bufs [][]byte, offset int) (int, error) {
	if d.closed.Load() {
		return 0, tun.ErrClosed
	}
	for _, b := range bufs {
		slot := d.got[d.next%len(d.got)]
		d.next++
		d.wrote <- copy(slot, b[offset:])
	}
	return len(bufs), nil
}

func (d *poolDevice) MTU() int       { return d.mtu }
func (d *poolDevice) BatchSize() int { return d.batch }
func (d *poolDevice) Name() string   { return "pool" }
func (d *poolDevice) Close() error {
	if d.closed.CompareAndSwap(false, true) {
		close(d.done)
	}
	return nil
}

// poolPair is two pumps on poolDevices joined over loopback UDP, A
// holding 100.64.0.1 and B 100.64.0.2, with SAs of ealg/alg both ways. A
// routes to B by a host route (B's address, as a gateway routes to a UE),
// B to A by the default route (as a UE): both kinds of route lookup are on
// the path.
type poolPair struct {
	a, b   *tun.Pump
	da, db *poolDevice
}

func newPoolPair(t testing.TB, ealg esp.EncAlg, alg esp.AuthAlg, batch int, toB, toA [][]byte, takeA func() int) *poolPair {
	t.Helper()
	pp := &poolPair{da: newPoolDevice(1400, batch, toB), db: newPoolDevice(1400, batch, toA)}
	pp.da.take = takeA
	all := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	hostB := []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}
	mk := func(d *poolDevice) *tun.Pump {
		c, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := tun.NewPump(tun.Config{Device: d, Conn: c})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	pp.a, pp.b = mk(pp.da), mk(pp.db)
	peerB, err := pp.a.AddPeer(tun.PeerConfig{Name: "b", Endpoint: pp.b.LocalAddr(), Allowed: all, Routes: hostB})
	fakeMust(t, err)
	peerA, err := pp.b.AddPeer(tun.PeerConfig{Name: "a", Endpoint: pp.a.LocalAddr(), Allowed: all, Routes: all})
	fakeMust(t, err)
	oAB, iAB := poolSA(t, 0x3001, ealg, alg)
	oBA, iBA := poolSA(t, 0x3002, ealg, alg)
	peerB.SetOutbound(oAB)
	peerA.SetOutbound(oBA)
	fakeMust(t, pp.b.AddInbound(peerA, iAB))
	fakeMust(t, pp.a.AddInbound(peerB, iBA))
	return pp
}

// poolSA returns both ends of one direction of a tunnel-mode SA.
func poolSA(t testing.TB, spi esp.SPI, ealg esp.EncAlg, alg esp.AuthAlg) (*esp.Outbound, *esp.Inbound) {
	t.Helper()
	c := esp.Config{SPI: spi, Mode: esp.Tunnel, Encryption: ealg, EncKey: bytes.Repeat([]byte{7}, esp.EncKeyLen(ealg)[0]),
		Integrity: alg, AuthKey: bytes.Repeat([]byte{9}, esp.AuthKeyLen(alg))}
	o, err := esp.NewOutbound(c)
	fakeMust(t, err)
	in, err := esp.NewInbound(c)
	fakeMust(t, err)
	return o, in
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// TestPumpRoundTripAllocs: a packet from A's device to B's and one back,
// sealed, sent, received and opened by two pumps, allocates nothing.
func TestPumpRoundTripAllocs(t *testing.T) {
	if raceEnabled() {
		t.Skip("under the race detector sync.Pool drops items at random (esp's state pools), so allocations cannot be counted")
	}
	for _, s := range []struct {
		ealg esp.EncAlg
		alg  esp.AuthAlg
	}{{esp.EncAESCBC, esp.AuthHMACSHA196}, {esp.EncAESGCM, esp.AuthNull}} {
		t.Run(string(s.ealg), func(t *testing.T) {
			a, b := netip.MustParseAddrPort("100.64.0.1:5000"), netip.MustParseAddrPort("100.64.0.2:5000")
			toB := [][]byte{tuntest.UDPPacket(a, b, bytes.Repeat([]byte{1}, 1200))}
			toA := [][]byte{tuntest.UDPPacket(b, a, bytes.Repeat([]byte{2}, 40))}
			pp := newPoolPair(t, s.ealg, s.alg, 8, toB, toA, nil)
			timer := time.NewTimer(time.Hour) // one timer: time.After would allocate
			roundTrip := func() {
				pp.da.feed <- 0
				waitWrite(t, timer, pp.db, len(toB[0]))
				pp.db.feed <- 0
				waitWrite(t, timer, pp.da, len(toA[0]))
			}
			for range 100 { // warm up: pools, the socket's first batches
				roundTrip()
			}
			if allocs := testing.AllocsPerRun(500, roundTrip); allocs != 0 {
				t.Errorf("%v allocations per round trip, want 0", allocs)
			}
			if c := pp.b.Counters(); c.RxPackets == 0 || len(c.Drops) != 0 || c.SendErrors != 0 {
				t.Errorf("B counters %+v", c)
			}
		})
	}
}

func waitWrite(t *testing.T, timer *time.Timer, d *poolDevice, want int) {
	timer.Reset(5 * time.Second)
	select {
	case n := <-d.wrote:
		if n != want {
			t.Fatalf("device got %d bytes, want %d", n, want)
		}
	case <-timer.C:
		t.Fatal("no packet came through")
	}
}

// TestPumpReadsWholeBatches: every Device.Read gets BatchSize buffers, also
// where the outbound ring wraps, and what the device returns — from one
// packet to a whole batch per Read, of many sizes — arrives complete, in
// order and byte for byte.
func TestPumpReadsWholeBatches(t *testing.T) {
	const batch, count = 16, 3000
	a, b := netip.MustParseAddrPort("100.64.0.1:5000"), netip.MustParseAddrPort("100.64.0.2:5000")
	pkts := make([][]byte, count)
	for i := range pkts {
		p := make([]byte, 8+(i*37)%1300)
		copy(p, fmt.Sprintf("%08d", i))
		pkts[i] = tuntest.UDPPacket(a, b, p)
	}
	var k atomic.Int64
	takes := func() int { return int(k.Add(1)%batch) + 1 } // 1..batch in turn
	pp := newPoolPair(t, esp.EncAESCBC, esp.AuthHMACSHA196, batch, pkts, nil, takes)
	go func() {
		for i := range pkts {
			pp.da.feed <- i
		}
	}()
	for i := range count {
		select {
		case n := <-pp.db.wrote:
			got := pp.db.got[i%len(pp.db.got)][:n]
			if !bytes.Equal(got, pkts[i]) {
				t.Fatalf("packet %d: got %d bytes %.12x..., want %d bytes %.12x...", i, n, got, len(pkts[i]), pkts[i])
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("packet %d did not come through (B: %+v)", i, pp.b.Counters())
		}
	}
	if s, r := pp.da.short.Load(), pp.da.reads.Load(); s != 0 {
		t.Errorf("%d of %d Reads got fewer than %d buffers", s, r, batch)
	}
	if c := pp.a.Counters(); c.TxPackets != count || c.SendErrors != 0 {
		t.Errorf("A counters %+v", c)
	}
}
