// Command wgcompare measures wireguard-go (golang.zx2c4.com/wireguard) with
// the harness of `imsec bench tunnel`: the same TCP stream, the same
// small-packet test, the same namespaces and addresses, the same
// definitions of Gbit/s, packets/s and CPU per Gbit (see bench.TunnelResult).
// bench/compare.sh runs it beside imsec and prints the ratios.
//
//	go run ./bench/wgcompare [--json] [--mode netstack|tun] [--duration D]
//
// netstack: two wireguard-go devices on wireguard-go's own gVisor stacks
// (tun/netstack), over loopback UDP with its standard bind (batches, UDP
// GSO/GRO where the kernel has them). tun: two wireguard-go devices on
// kernel TUN interfaces (wireguard-go's tun, with its offloads) in two
// network namespaces joined by a veth, driven by iperf3; needs root.
//
// WireGuard runs with its defaults: ChaCha20-Poly1305, inner MTU 1420.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgtun "golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/imsec/imsec/bench"
)

// mtu is wireguard-go's default interface MTU.
const mtu = 1420

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wgcompare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object, as `imsec bench tunnel --json`")
	mode := fs.String("mode", bench.ModeNetstack, "netstack or tun")
	duration := fs.Duration("duration", bench.DefaultTunnelDuration, "length of the TCP stream; the small-packet test runs half of it in each direction")
	sizes := fs.String("sizes", "", "also measure packets/s at these inner packet sizes in bytes, comma-separated (as 'imsec bench tunnel --sizes')")
	sizeDur := fs.Duration("size-duration", bench.DefaultSizeDuration, "how long each --sizes size runs in each direction")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 0 || (*mode != bench.ModeNetstack && *mode != bench.ModeTUN) || *duration <= 0 {
		fmt.Fprintln(stderr, "wgcompare: usage: wgcompare [--json] [--mode netstack|tun] [--duration D]")
		return 2
	}
	sz, err := parseSizes(*sizes)
	if err != nil || *sizeDur <= 0 {
		fmt.Fprintf(stderr, "wgcompare: --sizes %q, --size-duration %v: want sizes in bytes, comma-separated, and a positive duration\n", *sizes, *sizeDur)
		return 2
	}
	opt := bench.MeasureOptions{Duration: *duration, Sizes: sz, SizeDuration: *sizeDur, Progress: func(n, total int, label string) {
		fmt.Fprintf(stderr, "[%d/%d] %s\n", n, total, label)
	}}
	var r bench.TunnelResult
	if *mode == bench.ModeNetstack {
		r, err = measureNetstack(ctx, opt)
	} else {
		r, err = bench.MeasureTUN(ctx, buildTUN, opt)
	}
	if err != nil {
		fmt.Fprintln(stderr, "wgcompare:", err)
		return 1
	}
	r.EAlg, r.Alg = "chacha20-poly1305", "wireguard-go"
	if *asJSON {
		json.NewEncoder(stdout).Encode(r)
		return 0
	}
	fmt.Fprintf(stdout, "wireguard-go, mode %s, inner MTU %d\nTCP stream  %.3f Gbit/s over %.1f s, %.3f CPU s per Gbit\nsmall packets a->b %.0f/s (loss %.2f%%), b->a %.0f/s (loss %.2f%%)\n",
		r.Mode, r.MTU, r.Gbps, r.DurationS, r.CPUPerGbit, r.PPSAB, 100*r.LossAB, r.PPSBA, 100*r.LossBA)
	for _, s := range r.PPSBySize {
		fmt.Fprintf(stdout, "%d-byte packets %.0f/s (a->b %.0f/s, b->a %.0f/s)\n", s.Size, s.PPS, s.PPSAB, s.PPSBA)
	}
	return 0
}

// parseSizes parses "64,512,1400"; "" is none. The tunnel checks each
// against its MTU.
func parseSizes(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// keypair returns a Curve25519 private key and its public key, hex-encoded
// as wireguard-go's UAPI wants them.
func keypair() (priv, pub string, err error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", "", err
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	p, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		return "", "", err
	}
	return hex.EncodeToString(k[:]), hex.EncodeToString(p), nil
}

// pair is two devices, each the other's peer.
type pair struct {
	devs [2]*device.Device
	pub  [2]string // public keys, hex
}

func (p *pair) close() {
	for _, d := range p.devs {
		if d != nil {
			d.Close()
		}
	}
}

// configure gives both devices keys and listen ports, and makes each the
// other's peer with the other's inner address as its only allowed IP.
func (p *pair) configure(ports [2]uint16) error {
	var priv [2]string
	for i := range 2 {
		var err error
		if priv[i], p.pub[i], err = keypair(); err != nil {
			return err
		}
		if err := p.devs[i].IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", priv[i], ports[i])); err != nil {
			return err
		}
	}
	inner := [2]netip.Addr{bench.InnerA, bench.InnerB}
	for i := range 2 {
		o := 1 - i
		if err := p.devs[i].IpcSet(fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\n", p.pub[o], inner[o])); err != nil {
			return err
		}
	}
	return nil
}

// setEndpoints tells each device where the other's socket is.
func (p *pair) setEndpoints(eps [2]netip.AddrPort) error {
	for i := range 2 {
		o := 1 - i
		if err := p.devs[i].IpcSet(fmt.Sprintf("public_key=%s\nendpoint=%s\n", p.pub[o], eps[o])); err != nil {
			return err
		}
	}
	return nil
}

// listenPort reads a device's bound port back.
func listenPort(d *device.Device) (uint16, error) {
	s, err := d.IpcGet()
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, "listen_port="); ok {
			p, err := strconv.ParseUint(v, 10, 16)
			return uint16(p), err
		}
	}
	return 0, errors.New("wgcompare: no listen_port")
}

// rxBytes sums the peers' rx_bytes.
func rxBytes(d *device.Device) uint64 {
	s, err := d.IpcGet()
	if err != nil {
		return 0
	}
	var sum uint64
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(l, "rx_bytes="); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			sum += n
		}
	}
	return sum
}

// ---- netstack mode ----

type wgStack struct{ n *netstack.Net }

func (s wgStack) ListenTCP(laddr netip.AddrPort) (net.Listener, error) {
	return s.n.ListenTCPAddrPort(laddr)
}

func (s wgStack) DialTCP(ctx context.Context, raddr netip.AddrPort) (net.Conn, error) {
	return s.n.DialContextTCPAddrPort(ctx, raddr)
}

func (s wgStack) ListenUDP(laddr netip.AddrPort) (net.PacketConn, error) {
	return s.n.ListenUDPAddrPort(laddr)
}

func measureNetstack(ctx context.Context, opt bench.MeasureOptions) (bench.TunnelResult, error) {
	var p pair
	defer p.close()
	var nets [2]*netstack.Net
	logger := device.NewLogger(device.LogLevelSilent, "")
	for i, a := range []netip.Addr{bench.InnerA, bench.InnerB} {
		t, n, err := netstack.CreateNetTUN([]netip.Addr{a}, nil, mtu)
		if err != nil {
			return bench.TunnelResult{}, err
		}
		nets[i] = n
		p.devs[i] = device.NewDevice(t, conn.NewDefaultBind(), logger)
	}
	if err := p.configure([2]uint16{0, 0}); err != nil {
		return bench.TunnelResult{}, err
	}
	var eps [2]netip.AddrPort
	for i, d := range p.devs {
		if err := d.Up(); err != nil {
			return bench.TunnelResult{}, err
		}
		port, err := listenPort(d)
		if err != nil {
			return bench.TunnelResult{}, err
		}
		eps[i] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	}
	if err := p.setEndpoints(eps); err != nil {
		return bench.TunnelResult{}, err
	}
	return bench.MeasureNetstack(ctx, bench.StackPair{A: wgStack{nets[0]}, B: wgStack{nets[1]}, MTU: mtu}, opt)
}

// ---- tun mode ----

// nsBind opens wireguard-go's standard bind on the namespace's thread, so
// its sockets live in the namespace whichever goroutine brings the device
// up (wireguard-go does it from its TUN event reader).
type nsBind struct {
	conn.Bind
	ns *bench.Netns
}

func (b nsBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = b.ns.Do(func() error {
		var e error
		fns, actual, e = b.Bind.Open(port)
		return e
	})
	return fns, actual, err
}

type wgTunnel struct {
	p pair
}

func (t *wgTunnel) RxBytes() uint64 { return rxBytes(t.p.devs[0]) + rxBytes(t.p.devs[1]) }
func (t *wgTunnel) MTU() int        { return mtu }
func (t *wgTunnel) Close() error {
	t.p.close()
	return nil
}

func buildTUN(a, b *bench.Netns, plan bench.TUNPlan) (bench.TUNTunnel, error) {
	t := &wgTunnel{}
	logger := device.NewLogger(logLevel(), "")
	for i, ns := range []*bench.Netns{a, b} {
		var dev wgtun.Device
		if err := ns.Do(func() error {
			var err error
			dev, err = wgtun.CreateTUN(plan.Name, mtu)
			return err
		}); err != nil {
			t.Close()
			return nil, err
		}
		t.p.devs[i] = device.NewDevice(dev, nsBind{Bind: conn.NewStdNetBind(), ns: ns}, logger)
	}
	err := t.p.configure([2]uint16{plan.OuterA.Port(), plan.OuterB.Port()})
	if err == nil {
		err = t.p.setEndpoints([2]netip.AddrPort{plan.OuterA, plan.OuterB})
	}
	for _, d := range t.p.devs {
		if err == nil {
			err = d.Up() // opens the bind in the namespace (nsBind)
		}
	}
	if err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// logLevel is silent unless WGCOMPARE_VERBOSE is set.
func logLevel() int {
	if os.Getenv("WGCOMPARE_VERBOSE") != "" {
		return device.LogLevelVerbose
	}
	return device.LogLevelSilent
}
