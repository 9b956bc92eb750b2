package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/imsec/imsec/bench"
	"github.com/imsec/imsec/bench/chart"
)

func init() {
	register(command{
		name:  "bench",
		usage: "bench SUBCOMMAND [flags]",
		short: "measure imsec: the ESP codec against Go's standard library, the tunnel end to end",
		run:   runBench,
	})
}

// benchSub is one `imsec bench NAME` subcommand.
type benchSub struct {
	name  string
	short string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// benchSubs lists the bench subcommands in the order help shows them.
var benchSubs = []benchSub{
	{"codec", "ESP seal/open per algorithm pair and packet size vs stdlib primitives", runBenchCodec},
	{"tunnel", "two pumps end to end: one TCP stream (Gbit/s, CPU per Gbit) and small packets (packets/s)", runBenchTunnel},
	{"register", "N UEs registering with AKA, sec-agree, SAs and DHCP against a P-CSCF: rate, latency, CPU and RSS per UE", runBenchRegister},
	{"chart", "draw a chart (SVG) from a saved results file, measuring nothing (make charts)", runBenchChart},
}

func benchSubNames() string {
	n := make([]string, len(benchSubs))
	for i, s := range benchSubs {
		n[i] = s.name
	}
	return strings.Join(n, ", ")
}

func printBenchHelp(w io.Writer) {
	fmt.Fprintln(w, "Usage: imsec bench SUBCOMMAND [flags]\n\nSubcommands:")
	for _, s := range benchSubs {
		fmt.Fprintf(w, "  %-8s %s\n", s.name, s.short)
	}
	fmt.Fprintln(w, "\nRun 'imsec bench SUBCOMMAND --help' for its flags.")
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("missing subcommand (one of: %s; see 'imsec bench --help')", benchSubNames())
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		printBenchHelp(stdout)
		return flag.ErrHelp
	}
	for _, s := range benchSubs {
		if s.name == args[0] {
			return s.run(ctx, args[1:], stdout, stderr)
		}
	}
	return usageErrorf("unknown subcommand %q (one of: %s)", args[0], benchSubNames())
}

func runBenchCodec(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench codec", "bench codec [--json] [--time D] [--sizes N,...] [--ealg NAME,...] [--alg NAME,...] [--batch N]", stdout)
	asJSON := fs.Bool("json", false, "print one JSON array of {ealg, alg, size, op, batch, mbps, pps, allocs, baseline_mbps, ratio}")
	batch := fs.Int("batch", 1, "packets per call: 1 measures Seal and Open, more measures SealBatch and OpenBatch (up to 256; the tunnel seals and opens in batches)")
	budget := fs.Duration("time", bench.DefaultBudget, "time spent measuring each implementation in each cell")
	sizes := fs.String("sizes", "64,512,1400,8000", "payload sizes in bytes, comma-separated")
	var ealgs, algs multiFlag
	fs.Var(&ealgs, "ealg", "only these encryption algorithms (comma-separated or repeated): aes-cbc, des-ede3-cbc, null, aes-gcm, aes-gcm(128), aes-gcm(256)")
	fs.Var(&algs, "alg", "only these integrity algorithms (comma-separated or repeated): hmac-sha-1-96, hmac-md5-96, hmac-sha-256-128, null")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *budget <= 0 {
		return usageErrorf("--time must be positive, got %v", *budget)
	}
	if *batch < 1 || *batch > 256 {
		return usageErrorf("--batch must be 1..256, got %d", *batch)
	}
	sz, err := parseSizes(*sizes)
	if err != nil {
		return err
	}
	suites, err := bench.FilterSuites(bench.CodecSuites(), splitList(ealgs), splitList(algs))
	if err != nil {
		return usageErrorf("%v", err)
	}

	progress := newProgress(stderr)
	res, err := bench.RunCodec(ctx, bench.CodecConfig{
		Suites:   suites,
		Sizes:    sz,
		Budget:   *budget,
		Batch:    *batch,
		Progress: progress.update,
	})
	progress.done()
	if err != nil {
		return err
	}
	for i := range res {
		r := &res[i]
		r.MBps = round(r.MBps, 2)
		r.BaselineMBps = round(r.BaselineMBps, 2)
		r.PPS = round(r.PPS, 0)
		r.Ratio = round(r.Ratio, 3)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ealg\talg\tsize\top\tMB/s\tpkt/s\tallocs\tbaseline MB/s\tratio")
	for _, r := range res {
		op := r.Op
		if r.Batch > 1 {
			op = fmt.Sprintf("%s x%d", r.Op, r.Batch)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.1f\t%.0f\t%.2f\t%.1f\t%.2f\n",
			r.EAlg, r.Alg, r.Size, op, r.MBps, r.PPS, r.Allocs, r.BaselineMBps, r.Ratio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nsize is the payload; baseline is Go's crypto/cipher, crypto/aes, crypto/des and crypto/hmac\n"+
		"doing the same packets' crypto in this run, one packet at a time; ratio = MB/s / baseline MB/s.\n"+
		"%v per measurement.", *budget)
	if *batch > 1 {
		fmt.Fprintf(stdout, " op xN: esp's SealBatch/OpenBatch, N packets per call.")
	}
	fmt.Fprintln(stdout)
	return nil
}

func runBenchTunnel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench tunnel", "bench tunnel [--json] [--mode netstack|tun] [--ealg NAME] [--alg NAME] [--duration D] [--sizes N,...] [--svg FILE]", stdout)
	asJSON := fs.Bool("json", false, "print one JSON object {mode, ealg, alg, gbps, pps, cpu_s_per_gbit, duration_s, pps_ab, pps_ba, loss_ab, loss_ba, mtu, pad_per_packet, pps_by_size}")
	mode := fs.String("mode", bench.ModeNetstack, "netstack: two in-process gVisor stacks over loopback UDP (no privilege); tun: kernel TUNs in two network namespaces joined by a veth, driven by iperf3 (root)")
	ealg := fs.String("ealg", "aes-cbc", "encryption algorithm: aes-cbc, des-ede3-cbc, null, aes-gcm (= aes-gcm(128)), aes-gcm(256)")
	alg := fs.String("alg", "", "integrity algorithm: hmac-sha-1-96, hmac-md5-96, hmac-sha-256-128, null (default: null with aes-gcm, else hmac-sha-1-96)")
	duration := fs.Duration("duration", bench.DefaultTunnelDuration, "length of the TCP stream; the small-packet test runs half of it in each direction")
	parallel := fs.Bool("parallel-seal", false, "a second goroutine per pump seals half of each large batch (helps where a core is free; both pumps share two cores here)")
	batchPad := fs.Int("batch-pad", 0, batchPadUsage)
	sizesArg := fs.String("sizes", "", fmt.Sprintf("after the small-packet mix, measure packets/s with every datagram of each of these inner IP packet sizes, in bytes, comma-separated (%d up to the tunnel's inner MTU), e.g. 64,128,256,512,1024,1400", bench.SizedMin))
	sizeDur := fs.Duration("size-duration", bench.DefaultSizeDuration, "how long each --sizes size runs in each direction")
	svgPath := fs.String("svg", "", "also draw the result (Gbit/s, small packets/s and, with --sizes, packets/s by size) to this SVG `FILE`; for imsec beside wireguard-go, gather results in a file for 'imsec bench chart'")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if err := checkBatchPad(*batchPad); err != nil {
		return err
	}
	var sizes []int
	if *sizesArg != "" {
		var err error
		if sizes, err = parseSizes(*sizesArg); err != nil {
			return err
		}
	}
	if *sizeDur <= 0 {
		return usageErrorf("--size-duration must be positive, got %v", *sizeDur)
	}
	if *mode != bench.ModeNetstack && *mode != bench.ModeTUN {
		return usageErrorf("--mode must be %s or %s, got %q", bench.ModeNetstack, bench.ModeTUN, *mode)
	}
	if *duration <= 0 {
		return usageErrorf("--duration must be positive, got %v", *duration)
	}
	suite, err := tunnelSuite(*ealg, *alg)
	if err != nil {
		return err
	}
	svg, err := newSVGOutput(*svgPath)
	if err != nil {
		return err
	}
	progress := newProgress(stderr)
	res, err := bench.RunTunnel(ctx, bench.TunnelConfig{
		Mode:         *mode,
		Suite:        suite,
		Duration:     *duration,
		ParallelSeal: *parallel,
		BatchPad:     *batchPad,
		Sizes:        sizes,
		SizeDuration: *sizeDur,
		Progress:     progress.update,
	})
	progress.done()
	if err != nil {
		return svg.finish(err)
	}
	res.Gbps = round(res.Gbps, 3)
	res.PPS = round(res.PPS, 0)
	res.PPSAB = round(res.PPSAB, 0)
	res.PPSBA = round(res.PPSBA, 0)
	res.CPUPerGbit = round(res.CPUPerGbit, 3)
	res.DurationS = round(res.DurationS, 2)
	res.LossAB = round(res.LossAB, 4)
	res.LossBA = round(res.LossBA, 4)
	res.PadPerPacket = round(res.PadPerPacket, 1)
	for i := range res.PPSBySize {
		s := &res.PPSBySize[i]
		s.PPS, s.PPSAB, s.PPSBA = round(s.PPS, 0), round(s.PPSAB, 0), round(s.PPSBA, 0)
	}
	if svg != nil {
		run := chart.TunnelRun{Impl: chart.ImplImsec, Result: res}
		run.Measured, run.Source = runSource("bench tunnel", args)
		var v []string
		if *batchPad != 0 {
			v = append(v, fmt.Sprintf("--batch-pad %d", *batchPad))
		}
		if *parallel {
			v = append(v, "--parallel-seal")
		}
		run.Variant = strings.Join(v, " ")
		if err := svg.finish(chart.TunnelSVG(&svg.buf, run)); err != nil {
			return err
		}
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "mode\t%s\n", res.Mode)
	fmt.Fprintf(tw, "algorithms\t%s / %s (inner MTU %d)\n", res.EAlg, res.Alg, res.MTU)
	fmt.Fprintf(tw, "TCP stream\t%.3f Gbit/s over %.1f s\n", res.Gbps, res.DurationS)
	fmt.Fprintf(tw, "CPU\t%.3f s per Gbit\n", res.CPUPerGbit)
	fmt.Fprintf(tw, "small packets a->b\t%.0f packets/s (loss %.2f%%)\n", res.PPSAB, 100*res.LossAB)
	fmt.Fprintf(tw, "small packets b->a\t%.0f packets/s (loss %.2f%%)\n", res.PPSBA, 100*res.LossBA)
	fmt.Fprintf(tw, "batch padding\t%.1f bytes per small packet (--batch-pad)\n", res.PadPerPacket)
	for _, s := range res.PPSBySize {
		fmt.Fprintf(tw, "%d-byte packets\t%.0f packets/s (a->b %.0f, b->a %.0f)\n", s.Size, s.PPS, s.PPSAB, s.PPSBA)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nsmall packets are %d-%d byte IP packets; packets/s counts those delivered to the receiving socket.\n"+
		"CPU is this process's user+system time (and, in tun mode, the two iperf3 processes') per Gbit carried.\n", bench.SmallMin, bench.SmallMax)
	return nil
}

const batchPadUsage = "most `BYTES` of ESP padding added to a packet so that consecutive packets to a peer have one length and leave in one GSO send (0: the default, 64; -1: never pad; at most 255)"

// checkBatchPad checks a --batch-pad value.
func checkBatchPad(n int) error {
	if n < -1 || n > 255 {
		return usageErrorf("--batch-pad must be -1 (off), 0 (default) or 1..255 bytes, got %d", n)
	}
	return nil
}

// tunnelSuite resolves --ealg and --alg to exactly one suite.
func tunnelSuite(ealg, alg string) (bench.Suite, error) {
	if alg == "" {
		alg = "hmac-sha-1-96"
		if strings.HasPrefix(ealg, "aes-gcm") {
			alg = "null"
		}
	}
	suites, err := bench.FilterSuites(bench.CodecSuites(), []string{ealg}, []string{alg})
	if err != nil {
		return bench.Suite{}, usageErrorf("%v", err)
	}
	return suites[0], nil
}

// parseSizes parses "64,512,1400" into packet sizes.
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > bench.MaxPacketSize {
			return nil, usageErrorf("--sizes: %q is not a packet size in 1..%d", f, bench.MaxPacketSize)
		}
		out = append(out, n)
	}
	return out, nil
}

// splitList flattens repeated, comma-separated flag values.
func splitList(m multiFlag) []string {
	var out []string
	for _, v := range m {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out = append(out, f)
			}
		}
	}
	return out
}

func round(v float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(v*p) / p
}

// progress shows "[n/total] label" on w: overwritten in place on a
// terminal, one line per cell otherwise.
type progress struct {
	w    io.Writer
	tty  bool
	used bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(n, total int, label string) {
	p.used = true
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K[%d/%d] %s", n, total, label)
		return
	}
	fmt.Fprintf(p.w, "[%d/%d] %s\n", n, total, label)
}

func (p *progress) done() {
	if p.tty && p.used {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}
