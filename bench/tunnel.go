package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/udp"
)

// Tunnel benchmark modes (TunnelConfig.Mode).
const (
	// ModeNetstack joins two in-process gVisor stacks (tun.Netstack) by two
	// pumps on loopback UDP. It needs no privilege.
	ModeNetstack = "netstack"
	// ModeTUN joins two kernel TUN interfaces in two network namespaces,
	// linked by a veth pair, and drives them with iperf3. It needs root.
	ModeTUN = "tun"
)

// DefaultTunnelDuration is the length of the TCP stream when
// TunnelConfig.Duration is zero.
const DefaultTunnelDuration = 10 * time.Second

// Addresses of the tunnel benchmarks: documentation (RFC 5737) and shared
// address space (RFC 6598) only, so that nothing can collide with a real
// network.
var (
	// InnerA and InnerB are the two ends' inner (tunnelled) addresses.
	InnerA = netip.MustParseAddr("100.64.0.1")
	InnerB = netip.MustParseAddr("100.64.0.2")
	// OuterA and OuterB are the veth addresses of the tun mode; ESP (or
	// WireGuard) flows between them.
	OuterA = netip.MustParseAddr("198.51.100.1")
	OuterB = netip.MustParseAddr("198.51.100.2")
)

// PathMTU is the outer MTU the tunnels are sized for: the veth of the tun
// mode, and the Ethernet-sized path a real deployment has (loopback would
// take 64 KiB, which no real path does).
const PathMTU = 1500

// Ports used inside the tunnel.
const (
	tcpPort   = 5201 // iperf3's default, also used by the netstack stream
	dgramPort = 9100 // the small-packet generator and sink
	espPort   = 4500 // RFC 3948 (tun mode; netstack mode binds port 0)
)

// Small-packet test parameters. Inner packets cycle through the sizes
// SmallMin, SmallMin+smallStep, ..., SmallMax bytes (IPv4 and UDP headers
// included: 64, 81, 98, ..., 200). The step is 17 so that no two
// consecutive packets, once padded to a block of up to 16 bytes (AES-CBC,
// WireGuard) or to 4 (AES-GCM), are the same size on the wire: no
// segmentation or receive offload can merge them as they are, and every
// algorithm is measured on its per-packet path, the worst case. (A step
// of 8 would let AES-CBC and WireGuard send pairs of equal datagrams as
// one, and flatter them against AES-GCM.) Our pumps pad
// runs of them to one length (tun.Config.BatchPad) and report the cost as
// PadPerPacket.
const (
	SmallMin, SmallMax = 64, 200
	smallStep          = 17
	smallSizes         = (SmallMax-SmallMin)/smallStep + 1
	ipUDPHeaders       = 20 + 8
	genBatch           = 64
)

// TunnelConfig configures RunTunnel. Zero values are the documented
// defaults.
type TunnelConfig struct {
	Mode  string // ModeNetstack (default) or ModeTUN
	Suite Suite  // zero: aes-cbc with hmac-sha-1-96 (TunnelSuite)
	// ParallelSeal and BatchPad are tun.Config's, for both pumps.
	ParallelSeal bool
	BatchPad     int
	Duration     time.Duration // the TCP stream; DefaultTunnelDuration if 0
	// Sizes and SizeDuration are MeasureOptions': packets/s at fixed
	// packet sizes, after the small-packet mix.
	Sizes        []int
	SizeDuration time.Duration
	// Progress, if set, is called when a phase starts and about once a
	// second during the TCP stream: phase n of total, and a label such as
	// "tcp 2.41 Gbit/s (3s of 10s)".
	Progress func(n, total int, label string)
}

// TunnelSuite is the suite RunTunnel measures by default: AES-CBC-128 with
// HMAC-SHA-1-96, the pair TS 33.203 mandates.
func TunnelSuite() Suite { return CodecSuites()[0] }

// TunnelResult is one tunnel measurement. The first seven fields are the
// stable JSON interface of `imsec bench tunnel --json`.
type TunnelResult struct {
	Mode string `json:"mode"`
	EAlg string `json:"ealg"`
	Alg  string `json:"alg"`
	// Gbps is the TCP stream's goodput: payload bits the receiving
	// application read, per second, in 10^9.
	Gbps float64 `json:"gbps"`
	// PPS is the small-packet rate: inner datagrams per second delivered
	// to the receiving socket, in the slower of the two directions (each
	// direction is measured on its own, for half of Duration).
	PPS float64 `json:"pps"`
	// CPUPerGbit is CPU seconds (user + system) spent per gigabit carried
	// by the TCP stream. Netstack mode: this process (both stacks, both
	// pumps, the application reading and writing). Tun mode: this process
	// (both pumps) plus the two iperf3 processes, whose system time holds
	// most of the kernel's TCP, TUN and veth work.
	CPUPerGbit float64 `json:"cpu_s_per_gbit"`
	// DurationS is how long the TCP stream was measured, in seconds.
	DurationS float64 `json:"duration_s"`

	// Detail of the small-packet test: the rate and the loss (1 - received
	// / sent) in each direction, A to B and B to A.
	PPSAB  float64 `json:"pps_ab"`
	PPSBA  float64 `json:"pps_ba"`
	LossAB float64 `json:"loss_ab"`
	LossBA float64 `json:"loss_ba"`
	// PadPerPacket is the mean padding, in bytes, the tunnel added to each
	// small packet beyond what its cipher needs, to send packets of one
	// length together (tun.Config.BatchPad): the wire cost of the rate.
	// Zero for a tunnel that does not report it.
	PadPerPacket float64 `json:"pad_per_packet"`
	// MTU is the inner MTU the tunnel ran with (derived from PathMTU).
	MTU int `json:"mtu"`
	// PPSBySize is the small-packet test repeated with every datagram of
	// one size (MeasureOptions.Sizes), one entry per size, in order.
	PPSBySize []SizePPS `json:"pps_by_size,omitempty"`
}

// SizePPS is the packet rate at one fixed inner packet size, measured as
// the small-packet mix is (PPS is the slower direction).
type SizePPS struct {
	Size  int     `json:"size"` // inner IP packet, IPv4 and UDP headers included
	PPS   float64 `json:"pps"`
	PPSAB float64 `json:"pps_ab"`
	PPSBA float64 `json:"pps_ba"`
}

// SizedMin is the smallest packet MeasureOptions.Sizes may ask for: IPv4
// and UDP headers and the 16 bytes (phase token, number) the sinks read.
const SizedMin = ipUDPHeaders + 16

// DefaultSizeDuration is MeasureOptions.SizeDuration's default.
const DefaultSizeDuration = time.Second

// MeasureOptions are the parts of a TunnelConfig every tunnel shares, ours
// or a peer's (bench/wgcompare).
type MeasureOptions struct {
	Duration time.Duration
	Progress func(n, total int, label string)
	// Padding, if set, reads the padding the tunnel has added so far and
	// the packets it has sent (tun.Counters.TxPadBytes and TxPackets of
	// both pumps), for PadPerPacket.
	Padding func() (pad, packets uint64)
	// Sizes, if set, are inner packet sizes (SizedMin up to the tunnel's
	// MTU) at which the small-packet test runs again after the mix, with
	// every datagram of that one size, for SizeDuration in each direction
	// (default DefaultSizeDuration): TunnelResult.PPSBySize.
	Sizes        []int
	SizeDuration time.Duration
}

func (o *MeasureOptions) defaults() error {
	if o.Duration == 0 {
		o.Duration = DefaultTunnelDuration
	}
	if o.Duration < 0 {
		return fmt.Errorf("bench: negative duration %v", o.Duration)
	}
	if o.Progress == nil {
		o.Progress = func(int, int, string) {}
	}
	if o.SizeDuration == 0 {
		o.SizeDuration = DefaultSizeDuration
	}
	if o.SizeDuration < 0 {
		return fmt.Errorf("bench: negative size duration %v", o.SizeDuration)
	}
	return nil
}

// checkSizes checks o.Sizes against a tunnel's inner MTU.
func (o *MeasureOptions) checkSizes(mtu int) error {
	for _, n := range o.Sizes {
		if n < SizedMin || n > mtu {
			return fmt.Errorf("bench: packet size %d: want %d up to the tunnel's inner MTU %d", n, SizedMin, mtu)
		}
	}
	return nil
}

// phases of a measurement, for progress.
const numPhases = 4 // setup, tcp, small a->b, small b->a

// RunTunnel measures imsec's data plane (two tun.Pumps) in cfg.Mode.
func RunTunnel(ctx context.Context, cfg TunnelConfig) (TunnelResult, error) {
	if cfg.Suite.Enc == "" {
		cfg.Suite = TunnelSuite()
	}
	opt := MeasureOptions{Duration: cfg.Duration, Progress: cfg.Progress, Sizes: cfg.Sizes, SizeDuration: cfg.SizeDuration}
	if err := opt.defaults(); err != nil {
		return TunnelResult{}, err
	}
	var r TunnelResult
	var err error
	switch cfg.Mode {
	case ModeNetstack, "":
		var pair StackPair
		var closeFn func()
		var pumps [2]*tun.Pump
		pair, pumps, closeFn, err = ourNetstacks(cfg.Suite, cfg.pumpConfig())
		if err != nil {
			return r, err
		}
		defer closeFn()
		opt.Padding = func() (uint64, uint64) { return padding(pumps[0], pumps[1]) }
		r, err = MeasureNetstack(ctx, pair, opt)
	case ModeTUN:
		r, err = MeasureTUN(ctx, ourTUN(cfg.Suite, cfg.pumpConfig()), opt)
	default:
		return r, fmt.Errorf("bench: unknown mode %q (want %s or %s)", cfg.Mode, ModeNetstack, ModeTUN)
	}
	r.EAlg, r.Alg = cfg.Suite.EAlg, string(cfg.Suite.Auth)
	return r, err
}

// pumpConfig is what both pumps' tun.Config take from cfg.
func (cfg TunnelConfig) pumpConfig() tun.Config {
	return tun.Config{ParallelSeal: cfg.ParallelSeal, BatchPad: cfg.BatchPad}
}

// padding is the padding pumps have added so far and the packets they
// have sent.
func padding(pumps ...*tun.Pump) (pad, packets uint64) {
	for _, p := range pumps {
		c := p.Counters()
		pad += c.TxPadBytes
		packets += c.TxPackets
	}
	return pad, packets
}

// tunnelSAs returns the two directions' SAs of a tunnel under s with
// fixed keys (their values do not matter to speed): A's outbound is B's
// inbound and the other way round.
func tunnelSAs(s Suite) (outAB *esp.Outbound, inAB *esp.Inbound, outBA *esp.Outbound, inBA *esp.Inbound, err error) {
	mk := func(spi esp.SPI) (*esp.Outbound, *esp.Inbound, error) {
		c := s.config()
		c.SPI, c.Mode = spi, esp.Tunnel
		o, err := esp.NewOutbound(c)
		if err != nil {
			return nil, nil, err
		}
		in, err := esp.NewInbound(c)
		return o, in, err
	}
	if outAB, inAB, err = mk(0x1001); err != nil {
		return
	}
	outBA, inBA, err = mk(0x2001)
	return
}

// ourEndpoint is the config of one end of our tunnel (the caller adds its
// socket and device): a Pump configured as pc and one peer, the other end,
// to which everything is routed.
func ourEndpoint(pc tun.Config, peer string) tun.EndpointConfig {
	all := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	return tun.EndpointConfig{Pump: pc, Peer: &tun.PeerConfig{Name: peer, Allowed: all, Routes: all}}
}

// joinEndpoints points the ends a and b (made from ourEndpoint configs) at
// each other and installs the SAs of s both ways.
func joinEndpoints(s Suite, a, b *tun.Endpoint) error {
	outAB, inAB, outBA, inBA, err := tunnelSAs(s)
	if err != nil {
		return err
	}
	a.Peer.SetEndpoint(b.LocalAddr())
	b.Peer.SetEndpoint(a.LocalAddr())
	a.Peer.SetOutbound(outAB)
	b.Peer.SetOutbound(outBA)
	if err := b.Pump.AddInbound(b.Peer, inAB); err != nil {
		return err
	}
	return a.Pump.AddInbound(a.Peer, inBA)
}

// innerMTU is the inner MTU of a tunnel under s on a PathMTU IPv4 path.
func innerMTU(s Suite) (int, error) {
	outAB, _, _, _, err := tunnelSAs(s)
	if err != nil {
		return 0, err
	}
	return tun.InnerMTUFor(PathMTU, outAB), nil
}

// ---- netstack mode ----

// Stack is one end of a netstack-mode tunnel: an in-process TCP/IP stack
// whose packets go through the tunnel under test.
type Stack interface {
	ListenTCP(laddr netip.AddrPort) (net.Listener, error)
	DialTCP(ctx context.Context, raddr netip.AddrPort) (net.Conn, error)
	ListenUDP(laddr netip.AddrPort) (net.PacketConn, error)
}

// StackPair is two Stacks joined by the tunnel under test: A holds InnerA,
// B holds InnerB.
type StackPair struct {
	A, B Stack
	MTU  int // inner MTU, for the report
}

// netstackEnd adapts a tun.Netstack to Stack.
type netstackEnd struct{ *tun.Netstack }

func (n netstackEnd) DialTCP(ctx context.Context, raddr netip.AddrPort) (net.Conn, error) {
	return n.Netstack.DialTCP(ctx, netip.AddrPort{}, raddr)
}

// ourNetstacks builds two Netstacks joined by two Pumps (configured as pc)
// on loopback UDP.
func ourNetstacks(s Suite, pc tun.Config) (StackPair, [2]*tun.Pump, func(), error) {
	var pumps [2]*tun.Pump
	mtu, err := innerMTU(s)
	if err != nil {
		return StackPair{}, pumps, nil, err
	}
	mk := func(a netip.Addr, peer string) (*tun.Endpoint, error) {
		cfg := ourEndpoint(pc, peer)
		cfg.Listen = netip.MustParseAddrPort("127.0.0.1:0")
		cfg.Netstack = &tun.NetstackOptions{MTU: mtu, Addresses: []netip.Prefix{netip.PrefixFrom(a, 32)}}
		return tun.NewEndpoint(cfg)
	}
	a, err := mk(InnerA, "b")
	if err != nil {
		return StackPair{}, pumps, nil, err
	}
	b, err := mk(InnerB, "a")
	if err != nil {
		a.Close()
		return StackPair{}, pumps, nil, err
	}
	closeAll := func() {
		b.Close()
		a.Close()
	}
	if err := joinEndpoints(s, a, b); err != nil {
		closeAll()
		return StackPair{}, pumps, nil, err
	}
	return StackPair{A: netstackEnd{a.Netstack}, B: netstackEnd{b.Netstack}, MTU: mtu}, [2]*tun.Pump{a.Pump, b.Pump}, closeAll, nil
}

// MeasureNetstack measures a netstack-mode tunnel: one TCP stream from A to
// B for opt.Duration, then small UDP datagrams from A to B and from B to A
// for half of opt.Duration each.
func MeasureNetstack(ctx context.Context, p StackPair, opt MeasureOptions) (TunnelResult, error) {
	r := TunnelResult{Mode: ModeNetstack, MTU: p.MTU}
	if err := opt.defaults(); err != nil {
		return r, err
	}
	if err := opt.checkSizes(p.MTU); err != nil {
		return r, err
	}
	opt.Progress(1, numPhases, "setup")
	ua, err := p.A.ListenUDP(netip.AddrPortFrom(InnerA, dgramPort))
	if err != nil {
		return r, err
	}
	ub, err := p.B.ListenUDP(netip.AddrPortFrom(InnerB, dgramPort))
	if err != nil {
		ua.Close()
		return r, err
	}
	a, b := newPacketConnEnd(ua), newPacketConnEnd(ub)
	sinks := startSinks(a, b)
	defer sinks.close()
	if err := sinks.probe(ctx); err != nil {
		return r, err
	}

	ln, err := p.B.ListenTCP(netip.AddrPortFrom(InnerB, tcpPort))
	if err != nil {
		return r, err
	}
	defer ln.Close()
	st, err := tcpStream(ctx, ln, func(ctx context.Context) (net.Conn, error) {
		return p.A.DialTCP(ctx, netip.AddrPortFrom(InnerB, tcpPort))
	}, opt)
	if err != nil {
		return r, err
	}
	r.Gbps, r.DurationS, r.CPUPerGbit = st.figures(0)

	if err := sinks.run(ctx, &r, opt); err != nil {
		return r, err
	}
	return r, nil
}

// streamStats is what one TCP stream measured.
type streamStats struct {
	bytes   int64
	elapsed time.Duration
	cpu     time.Duration // of this process
}

// figures returns goodput, seconds and CPU seconds per gigabit, counting
// extra CPU time on top of the process's.
func (s streamStats) figures(extra time.Duration) (gbps, seconds, cpuPerGbit float64) {
	seconds = s.elapsed.Seconds()
	gbit := float64(s.bytes) * 8 / 1e9
	if seconds > 0 {
		gbps = gbit / seconds
	}
	if gbit > 0 {
		cpuPerGbit = (s.cpu + extra).Seconds() / gbit
	}
	return gbps, seconds, cpuPerGbit
}

// tcpStream accepts one connection on ln, dials it, writes for
// opt.Duration and counts what the receiver read in that time.
func tcpStream(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error), opt MeasureOptions) (streamStats, error) {
	var received atomic.Int64
	accepted := make(chan net.Conn, 1)
	readDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			readDone <- err
			return
		}
		accepted <- c
		buf := make([]byte, 256<<10)
		for {
			n, err := c.Read(buf)
			received.Add(int64(n))
			if err != nil {
				readDone <- nil
				return
			}
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := dial(dctx)
	cancel()
	if err != nil {
		return streamStats{}, fmt.Errorf("bench: dial the TCP stream: %w", err)
	}
	var server net.Conn
	select {
	case server = <-accepted:
	case err := <-readDone:
		c.Close()
		return streamStats{}, fmt.Errorf("bench: accept the TCP stream: %w", err)
	case <-time.After(10 * time.Second):
		c.Close()
		return streamStats{}, errors.New("bench: the TCP stream was not accepted in 10 s")
	}
	defer server.Close()
	defer c.Close()

	start := time.Now()
	cpu0 := processCPU()
	end := start.Add(opt.Duration)
	c.SetWriteDeadline(end)
	writeDone := make(chan error, 1)
	go func() {
		chunk := make([]byte, 128<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				writeDone <- err
				return
			}
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var got int64
	var elapsed time.Duration
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return streamStats{}, ctx.Err()
		case <-tick.C:
			el := time.Since(start)
			opt.Progress(2, numPhases, fmt.Sprintf("tcp %.2f Gbit/s (%ds of %v)", float64(received.Load())*8/1e9/el.Seconds(), int(el.Seconds()+0.5), opt.Duration))
		case err := <-writeDone:
			got, elapsed = received.Load(), time.Since(start)
			done = true
			if !isTimeout(err) {
				return streamStats{}, fmt.Errorf("bench: TCP stream write: %w", err)
			}
		case err := <-readDone:
			return streamStats{}, fmt.Errorf("bench: TCP stream ended early: %v", err)
		}
	}
	cpu := processCPU() - cpu0
	return streamStats{bytes: got, elapsed: elapsed, cpu: cpu}, nil
}

// isTimeout reports a write deadline that passed: the end of the stream.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// ---- small-packet test ----

// dgramEnd is one end of the small-packet test: a socket inside the
// tunnel, with batch calls (udp.Conn in tun mode, an adapter around a
// stack's net.PacketConn in netstack mode).
type dgramEnd interface {
	ReadBatch(msgs []udp.Message) (int, error)
	WriteBatch(msgs []udp.Message) (int, error)
	LocalAddr() netip.AddrPort
	Close() error
}

// packetConnEnd adapts a net.PacketConn to dgramEnd, one datagram per call.
type packetConnEnd struct {
	c     net.PacketConn
	local netip.AddrPort
	mu    sync.Mutex
	to    netip.AddrPort
	toUDP *net.UDPAddr
}

func newPacketConnEnd(c net.PacketConn) *packetConnEnd {
	ap, _ := netip.ParseAddrPort(c.LocalAddr().String())
	return &packetConnEnd{c: c, local: ap}
}

func (p *packetConnEnd) LocalAddr() netip.AddrPort { return p.local }
func (p *packetConnEnd) Close() error              { return p.c.Close() }

func (p *packetConnEnd) ReadBatch(msgs []udp.Message) (int, error) {
	n, from, err := p.c.ReadFrom(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N = n
	if ua, ok := from.(*net.UDPAddr); ok {
		msgs[0].Addr = ua.AddrPort()
	}
	return 1, nil
}

// SetWriteDeadline bounds a blocked write: a stack whose send buffer does
// not drain must not hold the flood past its end.
func (p *packetConnEnd) SetWriteDeadline(t time.Time) error { return p.c.SetWriteDeadline(t) }

func (p *packetConnEnd) WriteBatch(msgs []udp.Message) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, m := range msgs {
		if m.Addr != p.to {
			p.to, p.toUDP = m.Addr, net.UDPAddrFromAddrPort(m.Addr)
		}
		if _, err := p.c.WriteTo(m.Buf[:m.N], p.toUDP); err != nil {
			return i, err
		}
	}
	return len(msgs), nil
}

// sinks counts the datagrams each end receives, by the token in their
// first eight bytes: only those of the phase running count. The next eight
// bytes number the datagrams of a phase from 1; top is the highest number
// each end has seen.
type sinks struct {
	ends  [2]dgramEnd
	token atomic.Uint64 // of the phase being counted
	got   [2]atomic.Uint64
	top   [2]atomic.Uint64
	gate  [2]gate // of each receiving end: top moved, for the generator
	wg    sync.WaitGroup
	once  sync.Once
	done  atomic.Bool // close has begun: read errors end the sinks
}

const probeToken = 1

func startSinks(a, b dgramEnd) *sinks {
	s := &sinks{ends: [2]dgramEnd{a, b}}
	for i := range s.gate {
		s.gate[i].wake = make(chan struct{}, 1)
	}
	s.token.Store(probeToken)
	for i := range s.ends {
		s.wg.Add(1)
		go s.sink(i)
	}
	return s
}

func (s *sinks) sink(i int) {
	defer s.wg.Done()
	msgs := make([]udp.Message, genBatch)
	for j := range msgs {
		msgs[j].Buf = make([]byte, 2048)
	}
	for {
		n, err := s.ends[i].ReadBatch(msgs)
		if err != nil {
			// gVisor's UDP conns do not all say net.ErrClosed after Close.
			if s.done.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		tok := s.token.Load()
		c, top := uint64(0), uint64(0)
		for _, m := range msgs[:n] {
			if m.N >= 16 && be64(m.Buf) == tok {
				c++
				top = max(top, be64(m.Buf[8:]))
			}
		}
		s.got[i].Add(c)
		for t := s.top[i].Load(); top > t && !s.top[i].CompareAndSwap(t, top); t = s.top[i].Load() {
		}
		s.gate[i].moved(s.top[i].Load())
	}
}

// gate wakes a generator waiting for its window to open. A sleep would not
// do: Go rounds a timer below a millisecond up to one when nothing else
// wakes the scheduler, so a generator that slept 50 µs could leave the
// tunnel idle for a millisecond and measure the timer, not the tunnel.
type gate struct {
	need atomic.Uint64 // the top the waiting generator wants; 0: none waits
	wake chan struct{} // capacity 1
}

// moved wakes the generator if top reaches what it waits for.
func (g *gate) moved(top uint64) {
	if n := g.need.Load(); n != 0 && top >= n {
		select {
		case g.wake <- struct{}{}:
		default:
		}
	}
}

// wait blocks until top reaches need (> 0), or for at most d.
func (g *gate) wait(top *atomic.Uint64, need uint64, d time.Duration, t *time.Timer) {
	g.need.Store(need)
	defer g.need.Store(0)
	select { // a stale wake-up from before
	case <-g.wake:
	default:
	}
	if top.Load() >= need {
		return
	}
	t.Reset(d)
	select {
	case <-g.wake:
	case <-t.C:
	}
	t.Stop()
}

func (s *sinks) close() {
	s.once.Do(func() {
		s.done.Store(true)
		s.ends[0].Close()
		s.ends[1].Close()
	})
	s.wg.Wait()
}

// probe sends datagrams from A until B has one, then from B until A has
// one (a WireGuard handshake, the veth's neighbour discovery, the first
// route lookups), for up to 10 s in all. One way at a time: two WireGuard
// peers that start handshakes at the same moment can cross them and wait
// for the 5 s retry, again and again.
func (s *sinks) probe(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 64)
	put64(buf, probeToken)
	for from := range s.ends {
		to := 1 - from
		for s.got[to].Load() == 0 {
			if time.Now().After(deadline) {
				return fmt.Errorf("bench: the tunnel carries nothing: after 10 s of probes, A received %d, B received %d", s.got[0].Load(), s.got[1].Load())
			}
			s.ends[from].WriteBatch([]udp.Message{{Buf: buf, N: len(buf), Addr: s.ends[to].LocalAddr()}})
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	s.got[0].Store(0)
	s.got[1].Store(0)
	return nil
}

// run measures both directions, each for half of opt.Duration, and fills
// the small-packet fields of r; then, for each of opt.Sizes, both
// directions again for opt.SizeDuration each with datagrams of that size.
func (s *sinks) run(ctx context.Context, r *TunnelResult, opt MeasureOptions) error {
	var pad0, sent0 uint64
	if opt.Padding != nil {
		pad0, sent0 = opt.Padding()
	}
	mix := make([]int, smallSizes)
	for i := range mix {
		mix[i] = smallSize(i)
	}
	var err error
	if r.PPSAB, r.LossAB, r.PPSBA, r.LossBA, err = s.both(ctx, mix, opt.Duration/2, "small packets", opt); err != nil {
		return err
	}
	r.PPS = min(r.PPSAB, r.PPSBA)
	if opt.Padding != nil {
		if pad, sent := opt.Padding(); sent > sent0 {
			r.PadPerPacket = float64(pad-pad0) / float64(sent-sent0)
		}
	}
	for _, n := range opt.Sizes {
		ab, _, ba, _, err := s.both(ctx, []int{n}, opt.SizeDuration, fmt.Sprintf("%d-byte packets", n), opt)
		if err != nil {
			return err
		}
		r.PPSBySize = append(r.PPSBySize, SizePPS{Size: n, PPS: min(ab, ba), PPSAB: ab, PPSBA: ba})
	}
	return nil
}

// both floods A to B, then B to A, each for d with datagrams cycling
// through sizes, and returns each direction's rate and loss.
func (s *sinks) both(ctx context.Context, sizes []int, d time.Duration, what string, opt MeasureOptions) (ppsAB, lossAB, ppsBA, lossBA float64, err error) {
	for dir := range 2 {
		from, to := dir, 1-dir
		label := [2]string{what + " a->b", what + " b->a"}[dir]
		opt.Progress(3+dir, numPhases, fmt.Sprintf("%s (%v)", label, d))
		tok := uint64(0x696d736563000000) | uint64(dir+2)<<8 | uint64(time.Now().UnixNano()&0xff)
		s.got[to].Store(0)
		s.top[to].Store(0)
		s.token.Store(tok)
		sent, el, err := flood(ctx, s.ends[from], s.ends[to].LocalAddr(), tok, &s.top[to], &s.gate[to], d, sizes)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		// What is in flight still counts: it lands until all has or the
		// count stops moving (on a busy machine the tunnel may lag the
		// generator by more than the phase).
		if err := s.settle(ctx, to, sent); err != nil {
			return 0, 0, 0, 0, err
		}
		got := s.got[to].Load()
		s.token.Store(0)
		pps := float64(got) / el.Seconds()
		loss := 0.0
		if sent > 0 {
			loss = max(0, 1-float64(got)/float64(sent))
		}
		if dir == 0 {
			ppsAB, lossAB = pps, loss
		} else {
			ppsBA, lossBA = pps, loss
		}
	}
	return ppsAB, lossAB, ppsBA, lossBA, nil
}

// settle waits until sink to has received sent datagrams, or until its
// count has not moved for settleQuiet, for settleMax at the most.
func (s *sinks) settle(ctx context.Context, to int, sent uint64) error {
	const (
		settleQuiet = 200 * time.Millisecond
		settleMax   = 5 * time.Second
		settleTick  = 10 * time.Millisecond
	)
	tick := time.NewTicker(settleTick)
	defer tick.Stop()
	last, moved := s.got[to].Load(), time.Now()
	for end := time.Now().Add(settleMax); time.Now().Before(end); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-tick.C:
			got := s.got[to].Load()
			if got >= sent {
				return nil
			}
			if got != last {
				last, moved = got, now
			} else if now.Sub(moved) > settleQuiet {
				return nil
			}
		}
	}
	return nil
}

// flood sends datagrams cycling through sizes (IP sizes: the
// small-packet mix, or one fixed size) from e to dst for d, as
// fast as they are delivered: at most window datagrams are in flight,
// numbered above the highest number the receiver has seen (top). A
// generator that outran the tunnel would only burn the CPU the tunnel runs
// on (two cores) on datagrams dropped at the first queue; with the window,
// the rate is what the tunnel sustains, and lost datagrams do not hold the
// window shut, as those after them move top on. The window is below the
// shortest first queue a datagram meets (a Linux TUN's 500 packets,
// wireguard-go's netstack's 1024) and above what 200k packets/s need in
// flight at a millisecond of latency. If nothing moves top for
// stallAfter (the last datagrams sent were all lost) the window opens
// again. A full window waits on g until the receiver has seen enough to
// make room for a batch. It returns how many it sent and for how long.
func flood(ctx context.Context, e dgramEnd, dst netip.AddrPort, tok uint64, top *atomic.Uint64, g *gate, d time.Duration, sizes []int) (uint64, time.Duration, error) {
	const (
		window     = 400
		stallAfter = 20 * time.Millisecond
	)
	msgs := make([]udp.Message, genBatch-genBatch%len(sizes)) // whole cycles: batches join without a repeat
	for i := range msgs {
		n := sizes[i%len(sizes)]
		msgs[i] = udp.Message{Buf: make([]byte, n), N: n - ipUDPHeaders, Addr: dst}
		put64(msgs[i].Buf, tok)
	}
	start := time.Now()
	end := start.Add(d)
	if dl, ok := e.(interface{ SetWriteDeadline(time.Time) error }); ok {
		dl.SetWriteDeadline(end)
		defer dl.SetWriteDeadline(time.Time{})
	}
	var sent, floor uint64 // floor: written off as lost after a stall
	var stalled time.Time
	var errs int
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		now := time.Now()
		if now.After(end) {
			break
		}
		if err := ctx.Err(); err != nil {
			return sent, now.Sub(start), err
		}
		if acked := max(top.Load(), floor); sent-min(acked, sent) > window-uint64(len(msgs)) {
			if stalled.IsZero() {
				stalled = now
			} else if now.Sub(stalled) > stallAfter {
				floor, stalled = sent, time.Time{}
				continue
			}
			// Until there is room for a batch again.
			g.wait(top, sent-window+uint64(len(msgs)), stallAfter, timer)
			continue
		}
		stalled = time.Time{}
		for i := range msgs {
			put64(msgs[i].Buf[8:], sent+uint64(i)+1)
		}
		n, err := e.WriteBatch(msgs)
		sent += uint64(n)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return sent, time.Since(start), err
			}
			// A full queue (ENOBUFS) is loss, which the receiver's count shows.
			if errs++; errs > 1e6 {
				return sent, time.Since(start), fmt.Errorf("bench: flood: %w", err)
			}
		}
	}
	return sent, time.Since(start), nil
}

// smallSize is the IP size of the i-th packet of the small-packet mix.
func smallSize(i int) int { return SmallMin + smallStep*(i%smallSizes) }

func put64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (56 - 8*i))
	}
}

func be64(b []byte) uint64 {
	var v uint64
	for i := range 8 {
		v = v<<8 | uint64(b[i])
	}
	return v
}
