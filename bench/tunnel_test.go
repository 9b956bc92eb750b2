package bench

import (
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsec/imsec/tun/udp"
)

// chanEnd is an in-memory dgramEnd: WriteBatch hands copies to the peer's
// queue, dropping those drop selects and those that find it full.
type chanEnd struct {
	addr netip.AddrPort
	peer *chanEnd
	in   chan []byte
	drop func(n int) bool // by the count of datagrams written so far

	mu      sync.Mutex
	written int
	once    sync.Once
	done    chan struct{}
}

func chanPair(dropAB func(int) bool) (a, b *chanEnd) {
	a = &chanEnd{addr: netip.MustParseAddrPort("100.64.0.1:9100"), in: make(chan []byte, 8192), drop: dropAB, done: make(chan struct{})}
	b = &chanEnd{addr: netip.MustParseAddrPort("100.64.0.2:9100"), in: make(chan []byte, 8192), done: make(chan struct{})}
	a.peer, b.peer = b, a
	return a, b
}

func (c *chanEnd) LocalAddr() netip.AddrPort { return c.addr }

func (c *chanEnd) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

func (c *chanEnd) WriteBatch(msgs []udp.Message) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		c.written++
		if c.drop != nil && c.drop(c.written) {
			continue
		}
		select {
		case c.peer.in <- append([]byte(nil), m.Buf[:m.N]...):
		default: // a full queue loses the datagram, as a socket would
		}
	}
	return len(msgs), nil
}

func (c *chanEnd) ReadBatch(msgs []udp.Message) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	case b := <-c.in:
		msgs[0].N = copy(msgs[0].Buf, b)
		msgs[0].Addr = c.peer.addr
		return 1, nil
	}
}

// TestSmallPacketLossAndRate: a quarter of what A sends is lost on the
// way, nothing from B: the loss figures say so, the window of the
// generator does not stall on the missing datagrams (the rate stays of the
// order of the other direction's), and the rate counts datagrams delivered.
func TestSmallPacketLossAndRate(t *testing.T) {
	a, b := chanPair(func(n int) bool { return n%4 == 0 })
	s := startSinks(a, b)
	defer s.close()
	if err := s.probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	var r TunnelResult
	if err := s.run(context.Background(), &r, MeasureOptions{Duration: 600 * time.Millisecond, Progress: func(int, int, string) {}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	if math.Abs(r.LossAB-0.25) > 0.03 {
		t.Errorf("loss a->b %v, want about 0.25", r.LossAB)
	}
	if r.LossBA > 0.01 {
		t.Errorf("loss b->a %v, want about 0", r.LossBA)
	}
	if !(r.PPSAB > 0 && r.PPSBA > 0) || r.PPS != min(r.PPSAB, r.PPSBA) {
		t.Errorf("pps %v, a->b %v, b->a %v", r.PPS, r.PPSAB, r.PPSBA)
	}
	if r.PPSAB < r.PPSBA/20 {
		t.Errorf("a->b %v pps against b->a %v: the window stalls on lost datagrams", r.PPSAB, r.PPSBA)
	}
}

// TestPacketsBySize: with Sizes the test runs again at each size, in both
// directions, and reports the slower; the datagrams delivered have that
// size.
func TestPacketsBySize(t *testing.T) {
	a, b := chanPair(nil)
	s := startSinks(a, b)
	defer s.close()
	if err := s.probe(context.Background()); err != nil {
		t.Fatal(err)
	}
	var r TunnelResult
	opt := MeasureOptions{Duration: 200 * time.Millisecond, Sizes: []int{SizedMin, 1400}, SizeDuration: 150 * time.Millisecond, Progress: func(int, int, string) {}}
	if err := opt.checkSizes(1422); err != nil {
		t.Fatal(err)
	}
	if err := s.run(context.Background(), &r, opt); err != nil {
		t.Fatal(err)
	}
	if len(r.PPSBySize) != 2 || r.PPSBySize[0].Size != SizedMin || r.PPSBySize[1].Size != 1400 {
		t.Fatalf("by size: %+v", r.PPSBySize)
	}
	for _, p := range r.PPSBySize {
		if !(p.PPSAB > 0 && p.PPSBA > 0) || p.PPS != min(p.PPSAB, p.PPSBA) {
			t.Errorf("size %d: %+v", p.Size, p)
		}
	}
	// A flood of one size sends datagrams of that size only.
	a2, b2 := chanPair(nil)
	var top atomic.Uint64
	var g gate
	g.wake = make(chan struct{}, 1)
	if _, _, err := flood(context.Background(), a2, b2.addr, 7, &top, &g, time.Millisecond, []int{300}); err != nil {
		t.Fatal(err)
	}
	if len(b2.in) == 0 {
		t.Fatal("flood sent nothing")
	}
	for len(b2.in) > 0 {
		if d := <-b2.in; len(d) != 300-ipUDPHeaders {
			t.Fatalf("datagram of %d bytes, want %d", len(d), 300-ipUDPHeaders)
		}
	}
}

// TestSizesChecked: sizes below what the sinks read or above the
// tunnel's MTU are refused before anything runs.
func TestSizesChecked(t *testing.T) {
	for _, n := range []int{0, SizedMin - 1, 1423} {
		o := MeasureOptions{Sizes: []int{64, n}}
		if err := o.checkSizes(1422); err == nil {
			t.Errorf("size %d accepted", n)
		}
	}
	if _, err := RunTunnel(context.Background(), TunnelConfig{Sizes: []int{5000}, Duration: time.Second}); err == nil {
		t.Error("RunTunnel accepted a 5000-byte size")
	}
}

// TestProbeFailsClearly: a tunnel that carries nothing is reported, with
// what each end received, once the probes give up (here: at once, ctx).
func TestProbeFailsClearly(t *testing.T) {
	a, b := chanPair(func(int) bool { return true })
	s := startSinks(a, b)
	defer s.close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.probe(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("probe over a dead link: %v", err)
	}
}

// TestSmallMixDefeatsCoalescing: the mix spans SmallMin..SmallMax, and no
// two packets in a row (across the generator's batches too) have the same
// size once padded to 4, 8 or 16 bytes (ESP's 2-byte trailer included),
// so no offload can merge them for any algorithm.
func TestSmallMixDefeatsCoalescing(t *testing.T) {
	batch := genBatch - genBatch%smallSizes
	lo, hi := SmallMax, SmallMin
	for i := range 3 * batch {
		cur, next := smallSize(i%batch), smallSize((i+1)%batch)
		lo, hi = min(lo, cur), max(hi, cur)
		for _, pad := range []int{4, 8, 16} {
			up := func(n int) int { return (n + 2 + pad - 1) / pad * pad }
			if up(cur) == up(next) {
				t.Fatalf("packets %d and %d: %d and %d bytes pad to the same %d-byte multiple", i, i+1, cur, next, pad)
			}
		}
	}
	if lo != SmallMin || hi != SmallMax {
		t.Errorf("mix spans %d..%d, want %d..%d", lo, hi, SmallMin, SmallMax)
	}
}

func TestRunTunnelRejects(t *testing.T) {
	if _, err := RunTunnel(context.Background(), TunnelConfig{Mode: "kernel"}); err == nil {
		t.Error("mode kernel accepted")
	}
	if _, err := RunTunnel(context.Background(), TunnelConfig{Duration: -time.Second}); err == nil {
		t.Error("negative duration accepted")
	}
}

// TestOurNetstacksCarry: the netstack-mode tunnel (two tun.Endpoints with
// the suite's SAs) carries a datagram each way, and its close function
// closes both ends.
func TestOurNetstacksCarry(t *testing.T) {
	pair, pumps, closeAll, err := ourNetstacks(TunnelSuite(), TunnelConfig{}.pumpConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	ends := [2]Stack{pair.A, pair.B}
	addrs := [2]netip.AddrPort{netip.AddrPortFrom(InnerA, dgramPort), netip.AddrPortFrom(InnerB, dgramPort)}
	var conns [2]net.PacketConn
	for i := range ends {
		if conns[i], err = ends[i].ListenUDP(addrs[i]); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
		conns[i].SetDeadline(time.Now().Add(10 * time.Second))
	}
	buf := make([]byte, 64)
	for i := range 2 {
		if _, err := conns[i].WriteTo([]byte("hello"), net.UDPAddrFromAddrPort(addrs[1-i])); err != nil {
			t.Fatal(err)
		}
		if n, _, err := conns[1-i].ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("end %d got %q (%v)", 1-i, buf[:n], err)
		}
	}
	if a, b := pumps[0].Counters(), pumps[1].Counters(); a.TxPackets != 1 || a.RxPackets != 1 || b.TxPackets != 1 || b.RxPackets != 1 {
		t.Errorf("pump counters a %+v, b %+v", a, b)
	}
	closeAll()
	if _, err := pair.A.ListenUDP(netip.AddrPortFrom(InnerA, dgramPort+1)); err == nil {
		t.Error("netstack A still open after close")
	}
}
