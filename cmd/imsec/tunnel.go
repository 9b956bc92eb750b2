package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/observe"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/ipesp"
)

func init() {
	register(command{
		name:  "tunnel",
		short: "bring up one manually keyed ESP-in-UDP tunnel (like ip xfrm state add), optionally ping through it",
		run:   runTunnel,
	})
}

const tunnelSynopsis = `tunnel --peer ADDR:PORT --out SA --in SA --inner ADDR/BITS [flags]

One ESP tunnel (RFC 4303) with keys given by hand, the way 'ip xfrm state
add' installs SAs in the kernel, but in userspace: no kernel IPsec and, by
default, no privilege. ESP goes between --listen and --peer, by default in
UDP in tunnel mode (RFC 3948); --mode picks transport mode, or plain ESP
(IP protocol 50, needs CAP_NET_RAW) to face a kernel XFRM peer. IPv4 or
IPv6, outside and inside. Everything the local end sends into the tunnel
goes to the peer, and any inner source is accepted from it.

The inner side is a userspace TCP/IP stack (a gVisor netstack) holding the
--inner address; it answers pings. With --tun NAME it is a kernel TUN
interface instead, given the --inner address and brought up (needs
CAP_NET_ADMIN); --route adds more routes through it.

An SA is comma-separated key=value fields, the keys as they are on the wire:
  spi=0x1001            SPI (256..2^32-1, decimal or 0x hex)
  ealg=aes-cbc          aes-cbc (16/24/32-byte ekey), aes-gcm (AES key || 4-byte
                        salt: 20/28/36 bytes; alg must be null or absent),
                        des-ede3-cbc (24 bytes), null (no ekey)
  ekey=HEX              encryption key
  alg=hmac-sha-1-96     hmac-sha-1-96 (20-byte akey), hmac-md5-96 (16),
                        hmac-sha-256-128 (32), null (aes-gcm only; no akey)
  akey=HEX              integrity key
--out seals what we send, --in opens what we receive: the peer's --in is
our --out and its --out our --in. Keys are never printed; --keylog writes
both SAs in Wireshark's esp_sa format (a secret file, mode 0600).

With --ping ADDR it sends --count ICMP echo requests through the tunnel,
prints each round trip and a summary, and exits 0 only if every one was
answered. Without --ping it runs until Ctrl-C and then prints its counters:
packets and bytes each way, drops by reason (auth: the keys differ;
unknown_spi: the SPIs differ; replay), keepalives.

Example, two terminals on one host:
  # terminal 1
  imsec tunnel --listen 127.0.0.1:4501 --peer 127.0.0.1:4502 --inner 100.64.7.1/24 \
    --out spi=0x1001,ealg=aes-cbc,ekey=000102030405060708090a0b0c0d0e0f,alg=hmac-sha-1-96,akey=101112131415161718191a1b1c1d1e1f20212223 \
    --in  spi=0x2001,ealg=aes-cbc,ekey=303132333435363738393a3b3c3d3e3f,alg=hmac-sha-1-96,akey=404142434445464748494a4b4c4d4e4f50515253
  # terminal 2: the mirror image, and ping terminal 1's inner address
  imsec tunnel --listen 127.0.0.1:4502 --peer 127.0.0.1:4501 --inner 100.64.7.2/24 \
    --out spi=0x2001,ealg=aes-cbc,ekey=303132333435363738393a3b3c3d3e3f,alg=hmac-sha-1-96,akey=404142434445464748494a4b4c4d4e4f50515253 \
    --in  spi=0x1001,ealg=aes-cbc,ekey=000102030405060708090a0b0c0d0e0f,alg=hmac-sha-1-96,akey=101112131415161718191a1b1c1d1e1f20212223 \
    --ping 100.64.7.1 --count 4
(Those keys are examples: make real ones with 'head -c 16 /dev/urandom | xxd -p'.)`

// tunnelFlags is the parsed command line.
type tunnelFlags struct {
	mode         string
	listen, peer netip.AddrPort
	out, in      esp.Config
	inner        netip.Prefix
	tunName      string
	routes       []netip.Prefix
	mtu          int
	keepalive    time.Duration
	follow       bool
	parallel     bool
	batchPad     int
	keylog       string
	ping         netip.Addr
	count        int
	interval     time.Duration
	wait         time.Duration
	verbose      bool
	obs          *obsFlags
}

func parseTunnelFlags(args []string, stderr io.Writer) (*tunnelFlags, error) {
	fs := newFlagSet("tunnel", tunnelSynopsis, stderr)
	mode := fs.String("mode", tun.ManualUDPEncTun, "how ESP travels: udp-enc-tun (ESP in UDP, tunnel mode; no privilege), udp-enc-trans (ESP in UDP, transport mode, RFC 3948), "+
		"tun or trans (plain ESP, IP protocol 50, tunnel or transport mode: a raw socket, CAP_NET_RAW). In the transport modes the inner side holds --inner (normally our own outer address) and sees the peer at its outer address")
	listen := fs.String("listen", "0.0.0.0:4500", "local ESP address, ADDR:PORT (or :PORT); with plain ESP (--mode tun, trans) the port is ignored")
	peer := fs.String("peer", "", "the peer's ESP address, ADDR:PORT (required; with plain ESP just ADDR)")
	out := fs.String("out", "", "outbound SA: spi=,ealg=,ekey=,alg=,akey= (required; see above)")
	in := fs.String("in", "", "inbound SA: spi=,ealg=,ekey=,alg=,akey= (required; see above)")
	inner := fs.String("inner", "", "our inner address with its prefix length, e.g. 100.64.7.2/24 (required)")
	tunName := fs.String("tun", "", "use a kernel TUN interface with this `NAME` instead of the netstack (needs CAP_NET_ADMIN)")
	var routes multiFlag
	fs.Var(&routes, "route", "with --tun: also route this `PREFIX` into the tunnel (repeatable)")
	mtu := fs.Int("mtu", 0, "inner MTU (0: what fits a 1500-byte path under the --out algorithms)")
	keepalive := fs.Duration("keepalive", 20*time.Second, "send an RFC 3948 NAT-keepalive after this long without sending (0: never)")
	follow := fs.Bool("follow-peer", false, "let authenticated ESP move the peer's address (the peer is behind a NAT that may rebind); without it the socket is connected to --peer and takes datagrams from it only")
	parallel := fs.Bool("parallel-seal", false, "seal half of each large batch on a second goroutine (more throughput where a core is free)")
	batchPad := fs.Int("batch-pad", 0, batchPadUsage)
	keylog := fs.String("keylog", "", "append both SAs to this `FILE` in Wireshark's esp_sa format (secrets; created 0600)")
	ping := fs.String("ping", "", "send ICMP echo requests to this inner `ADDR` through the tunnel, then exit")
	count := fs.Int("count", 4, "with --ping: how many echo requests")
	interval := fs.Duration("interval", time.Second, "with --ping: time between echo requests")
	wait := fs.Duration("wait", 2*time.Second, "with --ping: how long to wait for each reply")
	verbose := fs.Bool("v", false, "log data-plane events to stderr")
	obs := addObsFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return nil, err
	}
	if err := obs.check(*verbose); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if err := checkBatchPad(*batchPad); err != nil {
		return nil, err
	}
	if !slices.Contains(tun.ManualModes, *mode) {
		return nil, usageErrorf("--mode %q: want one of %s", *mode, strings.Join(tun.ManualModes, ", "))
	}
	plain := *mode == tun.ManualTun || *mode == tun.ManualTrans
	if plain && !strings.Contains(*peer, "]:") && strings.Count(*peer, ":") != 1 {
		// Plain ESP has no ports: ADDR alone is the peer.
		if a, err := netip.ParseAddr(strings.Trim(*peer, "[]")); err == nil {
			*peer = netip.AddrPortFrom(a, 1).String()
		}
	}
	f := &tunnelFlags{mode: *mode, tunName: *tunName, mtu: *mtu, keepalive: *keepalive, follow: *follow, parallel: *parallel, batchPad: *batchPad, keylog: *keylog,
		count: *count, interval: *interval, wait: *wait, verbose: *verbose}
	var err error
	if f.listen, err = addrPortArg("listen", *listen); err != nil {
		return nil, err
	}
	if *peer == "" {
		return nil, usageErrorf("--peer ADDR:PORT is required")
	}
	if f.peer, err = addrPortArg("peer", *peer); err != nil {
		return nil, err
	}
	if f.peer.Addr().IsUnspecified() || (f.peer.Port() == 0 && !plain) {
		return nil, usageErrorf("--peer %v: want the peer's own address and port", f.peer)
	}
	f.listen = netip.AddrPortFrom(f.listen.Addr().Unmap(), f.listen.Port())
	f.peer = netip.AddrPortFrom(f.peer.Addr().Unmap(), f.peer.Port())
	if f.listen.Addr().Is4() != f.peer.Addr().Is4() {
		return nil, usageErrorf("--listen %v and --peer %v: both must be IPv4 or both IPv6", f.listen, f.peer)
	}
	if f.out, err = parseSASpec("out", *out); err != nil {
		return nil, err
	}
	if f.in, err = parseSASpec("in", *in); err != nil {
		return nil, err
	}
	if *inner == "" {
		return nil, usageErrorf("--inner ADDR/BITS is required (e.g. 100.64.7.2/24)")
	}
	if f.inner, err = netip.ParsePrefix(*inner); err != nil {
		a, aerr := netip.ParseAddr(*inner)
		if aerr != nil {
			return nil, usageErrorf("--inner %q: want ADDR/BITS, e.g. 100.64.7.2/24", *inner)
		}
		f.inner = netip.PrefixFrom(a, a.BitLen())
	}
	if a := f.inner.Addr(); a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.Is4In6() {
		return nil, usageErrorf("--inner %v: want a unicast IPv4 or IPv6 address", f.inner)
	}
	for _, r := range routes {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			return nil, usageErrorf("--route %q: want PREFIX, e.g. 198.51.100.0/24", r)
		}
		f.routes = append(f.routes, p.Masked())
	}
	if len(f.routes) > 0 && f.tunName == "" {
		return nil, usageErrorf("--route needs --tun (the netstack already sends everything into the tunnel)")
	}
	if f.mtu != 0 && (f.mtu < 1280 || f.mtu > 65535) {
		return nil, usageErrorf("--mtu %d: want 1280..65535 (or 0 for automatic)", f.mtu)
	}
	if f.keepalive < 0 {
		return nil, usageErrorf("--keepalive must not be negative")
	}
	if *ping != "" {
		if f.ping, err = netip.ParseAddr(*ping); err != nil || f.ping.Zone() != "" || f.ping.IsUnspecified() {
			return nil, usageErrorf("--ping %q: want an inner IP address", *ping)
		}
		f.ping = f.ping.Unmap()
		if f.tunName != "" && !f.ping.Is4() {
			return nil, usageErrorf("--ping %v: with --tun only IPv4 can be pinged", f.ping)
		}
	} else {
		for _, name := range []string{"count", "interval", "wait"} {
			if set[name] {
				return nil, usageErrorf("--%s needs --ping", name)
			}
		}
	}
	if f.count < 1 {
		return nil, usageErrorf("--count %d: want at least 1", f.count)
	}
	if f.interval <= 0 || f.wait <= 0 {
		return nil, usageErrorf("--interval and --wait must be positive")
	}
	f.obs = obs
	return f, nil
}

// saFields are the keys of an SA spec, in the order the help gives them.
var saFields = []string{"spi", "ealg", "ekey", "alg", "akey"}

// parseSASpec parses "spi=0x1001,ealg=aes-cbc,ekey=HEX,alg=hmac-sha-1-96,akey=HEX"
// into a tunnel-mode esp.Config. Errors name the flag and the field but
// never contain key material.
func parseSASpec(flagName, spec string) (esp.Config, error) {
	c := esp.Config{Mode: esp.Tunnel}
	if spec == "" {
		return c, usageErrorf("--%s is required: spi=0x...,ealg=...,ekey=HEX,alg=...,akey=HEX", flagName)
	}
	vals := map[string]string{}
	for i, item := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(item, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if !ok {
			// Not echoed: a mistyped field may be a key.
			return c, usageErrorf("--%s: field %d is not key=value (want spi=,ealg=,ekey=,alg=,akey=)", flagName, i+1)
		}
		known := false
		for _, f := range saFields {
			known = known || f == k
		}
		if !known {
			if len(k) > 16 || strings.Trim(k, "abcdefghijklmnopqrstuvwxyz-_") != "" {
				return c, usageErrorf("--%s: field %d has an unknown name (want spi, ealg, ekey, alg, akey)", flagName, i+1)
			}
			return c, usageErrorf("--%s: unknown field %q (want spi, ealg, ekey, alg, akey)", flagName, k)
		}
		if _, dup := vals[k]; dup {
			return c, usageErrorf("--%s: %s given twice", flagName, k)
		}
		vals[k] = v
	}

	spi, ok := vals["spi"]
	if !ok || spi == "" {
		return c, usageErrorf("--%s: spi is missing (e.g. spi=0x1001)", flagName)
	}
	n, err := strconv.ParseUint(spi, 0, 32)
	if err != nil {
		return c, usageErrorf("--%s: spi %s: want a 32-bit number, decimal or 0x hex", flagName, quoteUnlessKey(spi))
	}
	if n <= esp.SPIReservedMax {
		return c, usageErrorf("--%s: spi %d is reserved (RFC 4303 §2.1): use 256 or more", flagName, n)
	}
	c.SPI = esp.SPI(n)

	ealg, ok := vals["ealg"]
	if !ok || ealg == "" {
		return c, usageErrorf("--%s: ealg is missing (aes-cbc, aes-gcm, des-ede3-cbc or null)", flagName)
	}
	c.Encryption = esp.EncAlg(strings.ToLower(ealg))
	encLens := esp.EncKeyLen(c.Encryption)
	if encLens == nil {
		return c, usageErrorf("--%s: unknown ealg %s (want aes-cbc, aes-gcm, des-ede3-cbc or null)", flagName, quoteUnlessKey(ealg))
	}
	alg, ok := vals["alg"]
	if !ok || alg == "" {
		if c.Encryption != esp.EncAESGCM {
			return c, usageErrorf("--%s: alg is missing (hmac-sha-1-96, hmac-md5-96 or hmac-sha-256-128)", flagName)
		}
		alg = string(esp.AuthNull)
	}
	c.Integrity = esp.AuthAlg(strings.ToLower(alg))
	authLen := esp.AuthKeyLen(c.Integrity)
	if authLen < 0 {
		return c, usageErrorf("--%s: unknown alg %s (want hmac-sha-1-96, hmac-md5-96, hmac-sha-256-128, or null with aes-gcm)", flagName, quoteUnlessKey(alg))
	}
	switch {
	case c.Encryption == esp.EncAESGCM && c.Integrity != esp.AuthNull:
		return c, usageErrorf("--%s: aes-gcm authenticates by itself: give alg=null or no alg, not %s", flagName, c.Integrity)
	case c.Encryption != esp.EncAESGCM && c.Integrity == esp.AuthNull:
		return c, usageErrorf("--%s: alg null is only for aes-gcm; %s needs an integrity algorithm", flagName, c.Encryption)
	}

	if c.EncKey, err = saSpecKey(flagName, "ekey", string(c.Encryption), vals, encLens); err != nil {
		return c, err
	}
	if c.AuthKey, err = saSpecKey(flagName, "akey", string(c.Integrity), vals, []int{authLen}); err != nil {
		return c, err
	}
	// The codec's own checks, for anything the above missed (its messages
	// carry no key material).
	if _, err := esp.NewOutbound(c); err != nil {
		return c, usageErrorf("--%s: %v", flagName, err)
	}
	return c, nil
}

// quoteUnlessKey quotes a bad field value for an error message, unless it
// could be key material put in the wrong field (long, or all hex digits).
func quoteUnlessKey(v string) string {
	if len(v) > 24 || strings.Trim(strings.TrimPrefix(strings.ToLower(v), "0x"), "0123456789abcdef") == "" {
		return "(value not shown)"
	}
	return strconv.Quote(v)
}

// saSpecKey decodes the hex key field of an SA spec and checks its length
// against lens (a single 0 means the algorithm takes no key).
func saSpecKey(flagName, field, alg string, vals map[string]string, lens []int) ([]byte, error) {
	v, given := vals[field]
	if len(lens) == 1 && lens[0] == 0 {
		if given && v != "" {
			return nil, usageErrorf("--%s: %s takes no %s (value not shown)", flagName, alg, field)
		}
		return nil, nil
	}
	if !given || v == "" {
		return nil, usageErrorf("--%s: %s is missing: %s takes %s", flagName, field, alg, keyLens(lens))
	}
	v = strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X")
	b, err := hex.DecodeString(v)
	if err != nil {
		var ie hex.InvalidByteError
		if errors.As(err, &ie) {
			return nil, usageErrorf("--%s: %s is not hex: invalid character at position %d (value not shown)", flagName, field, strings.IndexByte(v, byte(ie))+1)
		}
		return nil, usageErrorf("--%s: %s is not hex: odd number of digits (%d)", flagName, field, len(v))
	}
	for _, l := range lens {
		if len(b) == l {
			return b, nil
		}
	}
	return nil, usageErrorf("--%s: %s is %d bytes: %s takes %s", flagName, field, len(b), alg, keyLens(lens))
}

// keyLens writes key lengths as "16, 24 or 32 bytes (32, 48 or 64 hex digits)".
func keyLens(lens []int) string {
	join := func(f func(int) int) string {
		s := make([]string, len(lens))
		for i, l := range lens {
			s[i] = strconv.Itoa(f(l))
		}
		if len(s) == 1 {
			return s[0]
		}
		return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
	}
	return join(func(l int) int { return l }) + " bytes (" + join(func(l int) int { return 2 * l }) + " hex digits)"
}

func runTunnel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseTunnelFlags(args, stderr)
	if err != nil {
		return err
	}
	if _, err := esp.NewOutbound(f.out); err != nil {
		return usageErrorf("--out: %v", err)
	}
	if _, err := esp.NewInbound(f.in); err != nil {
		return usageErrorf("--in: %v", err)
	}
	log := f.obs.logger(stderr)
	cfg := tun.ManualConfig{Mode: f.mode, Out: f.out, In: f.in, Listen: f.listen, Peer: f.peer, Follow: f.follow, Keepalive: f.keepalive,
		Inner: f.inner, MTU: f.mtu, TUN: f.tunName, Routes: f.routes, ParallelSeal: f.parallel, BatchPad: f.batchPad,
		Logger: log}
	if f.keylog != "" {
		kf, closeKF, err := openKeyLog(f.keylog, false)
		if err != nil {
			return err
		}
		defer closeKF()
		cfg.KeyLog = kf
	}
	m, err := tun.StartManual(cfg)
	var me *tun.ManualError
	switch {
	case errors.As(err, &me) && me.Setting == "listen" && errors.Is(err, ipesp.ErrNoPrivilege):
		return fmt.Errorf("--mode %s: %w; run as root, or 'setcap cap_net_raw+ep' on imsec, or use --mode udp-enc-tun or udp-enc-trans", f.mode, me.Err)
	case errors.As(err, &me) && me.Setting == "listen":
		return fmt.Errorf("--listen %v: %w", f.listen, me.Err)
	case errors.As(err, &me) && me.Setting == "mode":
		return usageErrorf("--mode %s: %v", f.mode, me.Err)
	case errors.As(err, &me) && (me.Setting == "netstack" || me.Setting == "pump" || me.Setting == "peer" || me.Setting == "config"):
		return fmt.Errorf("%s: %w", me.Setting, me.Err)
	case errors.As(err, &me) && errors.Is(err, tun.ErrNeedsNetAdmin):
		return fmt.Errorf("--tun %w; run as root, or 'setcap cap_net_admin+ep' on imsec; without --tun the tunnel runs on a userspace netstack with no privilege", me.Err)
	case errors.As(err, &me) && me.Setting == "tun": // "NAME: why"
		return fmt.Errorf("--tun %w", me.Err)
	case errors.As(err, &me):
		return fmt.Errorf("--%s: %w", me.Setting, me.Err)
	case err != nil:
		return err
	}
	defer m.Close()
	if f.obs.on() {
		reg, err := newRegistry(observe.PumpCollector(observe.Pump{Name: "manual", Get: func() *tun.Pump { return m.Pump }}))
		if err != nil {
			return err
		}
		stop, err := f.obs.serve(ctx, stdout, log, reg, func() any { return observe.TunnelStatusOf(m.DeviceName(), m.Pump) })
		if err != nil {
			return err
		}
		defer stop()
	}
	carriage, local, remote := "ESP-in-UDP", m.LocalAddr().String(), f.peer.String()
	switch f.mode {
	case tun.ManualUDPEncTrans:
		carriage = "ESP-in-UDP transport mode"
	case tun.ManualTun:
		carriage, local, remote = "plain ESP tunnel mode", m.LocalAddr().Addr().String(), f.peer.Addr().String()
	case tun.ManualTrans:
		carriage, local, remote = "plain ESP transport mode", m.LocalAddr().Addr().String(), f.peer.Addr().String()
	}
	fmt.Fprintf(stdout, "tunnel up: %s %v (MTU %d), %s %v <-> %v; out spi %#08x %s/%s, in spi %#08x %s/%s\n",
		m.DeviceName(), f.inner, m.Device.MTU(), carriage, local, remote,
		uint32(f.out.SPI), f.out.Encryption, f.out.Integrity, uint32(f.in.SPI), f.in.Encryption, f.in.Integrity)
	if !f.ping.IsValid() {
		<-ctx.Done()
		printTunnelCounters(stdout, m.Pump.Counters())
		return nil
	}
	err = pingThrough(ctx, stdout, f, func(ctx context.Context, seq int) (time.Duration, int, error) { return m.Ping(ctx, f.ping, seq) })
	printTunnelCounters(stdout, m.Pump.Counters())
	return err
}

// pingThrough sends f.count echo requests, one every f.interval, prints
// each answer like ping(8) does and a summary, and fails unless every one
// was answered.
func pingThrough(ctx context.Context, w io.Writer, f *tunnelFlags, ping func(context.Context, int) (time.Duration, int, error)) error {
	fmt.Fprintf(w, "PING %v through the tunnel to %v: %d echo requests\n", f.ping, f.peer, f.count)
	var (
		sent, got   int
		lo, hi, sum time.Duration
		start       = time.Now()
		interrupted bool
		lastErr     error
		ticker      = time.NewTicker(f.interval)
	)
	defer ticker.Stop()
	for seq := 1; seq <= f.count; seq++ {
		if seq > 1 {
			select {
			case <-ctx.Done():
			case <-ticker.C:
			}
		}
		if ctx.Err() != nil {
			interrupted = true
			break
		}
		pctx, cancel := context.WithTimeout(ctx, f.wait)
		rtt, n, err := ping(pctx, seq)
		cancel()
		sent++
		if err != nil {
			if ctx.Err() != nil {
				interrupted = true
				break
			}
			lastErr = err
			fmt.Fprintf(w, "no reply from %v: icmp_seq=%d within %v\n", f.ping, seq, f.wait)
			continue
		}
		got++
		if got == 1 || rtt < lo {
			lo = rtt
		}
		hi = max(hi, rtt)
		sum += rtt
		fmt.Fprintf(w, "%d bytes from %v: icmp_seq=%d time=%.3f ms\n", n, f.ping, seq, millis(rtt))
	}
	fmt.Fprintf(w, "--- %v ping statistics ---\n", f.ping)
	loss := 100
	if sent > 0 {
		loss = 100 * (sent - got) / sent
	}
	fmt.Fprintf(w, "%d packets transmitted, %d received, %d%% packet loss, time %dms\n",
		sent, got, loss, time.Since(start).Milliseconds())
	if got > 0 {
		fmt.Fprintf(w, "rtt min/avg/max = %.3f/%.3f/%.3f ms\n", millis(lo), millis(sum/time.Duration(got)), millis(hi))
	}
	switch {
	case interrupted:
		return &exitError{code: 1, err: fmt.Errorf("interrupted after %d of %d echo requests (%d answered)", sent, f.count, got)}
	case got < sent:
		hint := "check that the peer is running, and look at the drop counters (below, and the peer's): auth means the keys differ (its --in must be our --out, its --out our --in), unknown_spi that the SPIs differ"
		if errors.Is(lastErr, tun.ErrClosedPump) {
			hint = "the tunnel closed"
		}
		return &exitError{code: 1, err: fmt.Errorf("%d of %d echo requests to %v went unanswered through the tunnel: %s", sent-got, sent, f.ping, hint)}
	}
	return nil
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// printTunnelCounters prints the pump's counters, drops by reason with
// what they usually mean.
func printTunnelCounters(w io.Writer, c tun.Counters) {
	fmt.Fprintf(w, "counters:\n")
	fmt.Fprintf(w, "  esp out:     %d packets, %d inner bytes, %d bytes of batch padding (--batch-pad)\n", c.TxPackets, c.TxBytes, c.TxPadBytes)
	fmt.Fprintf(w, "  esp in:      %d packets, %d inner bytes\n", c.RxPackets, c.RxBytes)
	fmt.Fprintf(w, "  keepalives:  %d sent, %d received\n", c.KeepalivesSent, c.KeepalivesReceived)
	hints := map[string]string{
		esp.ReasonAuth.String():       " (integrity check failed: the peer's --out keys are not our --in keys)",
		esp.ReasonUnknownSPI.String(): " (no --in SA has that SPI)",
		esp.ReasonReplay.String():     " (duplicate or too old)",
	}
	var drops []string
	for r := esp.ReasonNone + 1; r < esp.NumReasons; r++ {
		if n := c.Drops[r.String()]; n > 0 {
			drops = append(drops, fmt.Sprintf("%s %d%s", r, n, hints[r.String()]))
		}
	}
	fmt.Fprintf(w, "  esp drops:   %s\n", joinOrNone(drops))
	var other []string
	for _, x := range []struct {
		name string
		n    uint64
	}{
		{"spoofed", c.Spoofed}, {"no-route", c.NoRoute}, {"no-sa", c.NoSA}, {"not-ip", c.NotIP},
		{"non-esp", c.NonESP}, {"invalid", c.Invalid}, {"send-errors", c.SendErrors},
		{"read-errors", c.ReadErrors}, {"device-errors", c.DeviceErrors},
	} {
		if x.n > 0 {
			other = append(other, fmt.Sprintf("%s %d", x.name, x.n))
		}
	}
	fmt.Fprintf(w, "  other drops: %s\n", joinOrNone(other))
}

func joinOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
