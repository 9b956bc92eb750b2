package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	sipgosip "github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/akakeys/hss/cx"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/observe"
	"github.com/imsec/imsec/sip"
)

func init() {
	register(command{
		name:  "pcscf",
		short: "run a P-CSCF: SIP-AKA registrar with sec-agree and the ESP-in-UDP gateway",
		run:   runPCSCF,
	})
}

const pcscfSynopsis = `pcscf --domain DOMAIN (--db FILE|URL | --hss ADDR:3868 | --scscf sip:HOST:PORT) [flags]

The server side of IMS access security (TS 33.203) with NAT traversal: a
registrar that challenges with AKAv1-MD5 (RFC 3310) from the HSS in --db,
negotiates ESP with sec-agree (RFC 3329, mod=UDP-enc-tun), installs the SAs
in its own userspace ESP-in-UDP gateway (RFC 3948, --esp), gives each UE an
inner address over its tunnel (DHCP, RFC 3456 style, from --pool; DHCPv6
from --pool6) and then serves SIP inside the tunnels. No root, no kernel
IPsec. Every address may be IPv6: --sip [::]:5060 serves IPv4 and IPv6 UEs
on one dual-stack socket (and so does the ESP socket it implies).

Subscribers come from 'imsec sub add --db FILE ...'; with --hss ADDR:PORT the
registrar asks an HSS over Diameter Cx ('imsec hss') instead (MAR, SAR). A ladder of every
registration step is printed as it happens; -v adds SIP traces.

Example:
  imsec sub add --db hss.db --impi alice@a.example --impu sip:alice@a.example \
    --k 465b5ce8b199b49faa5f0a2ee238a6bc --op cdc202d5123e20f62b6d676ac72cb318
  imsec pcscf --domain a.example --db hss.db --sip 127.0.0.1:5060 \
    --peer b.example=127.0.0.2:5060

Proxy role: with --scscf sip:HOST:PORT the P-CSCF stands in front of a real
S-CSCF (Kamailio's ims_registrar_scscf, say) as TS 24.229 §5.2 describes:
it forwards each REGISTER with Path, P-Visited-Network-ID and the
Authorization's integrity-protected flag, builds the UE's SAs from the ck=
and ik= of the S-CSCF's 401 (and removes them), and sends the UE's calls
along the Service-Route of its 200. The S-CSCF and its HSS authenticate;
--db and --hss are not used. README: "Joining an IMS core".

Calls: the P-CSCF is a back-to-back user agent for its UEs' calls. A call to
a domain named with --peer goes to that P-CSCF in plain SIP (the server-to-
server leg is network domain security, out of scope here); media is relayed
through the P-CSCF, in each UE's separate media tunnel (--media-esp).

Settings can also come from --config FILE, a JSON object of flag names
({"domain": "a.example", "db": "hss.db", "ipsec": "optional"}); flags win.`

func runPCSCF(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pcscf", pcscfSynopsis, stderr)
	config := fs.String("config", "", "JSON file of settings (keys are these flag names)")
	domain := fs.String("domain", "", "home domain and digest realm (required)")
	db := fs.String("db", "", dbFlagHelp+" (required unless --hss or --scscf)")
	hssAddr := fs.String("hss", "", "ADDR:PORT of an HSS on Diameter Cx ('imsec hss'); then --db is not used")
	scscf := fs.String("scscf", "", "sip:HOST[:PORT] of an S-CSCF: run as its P-CSCF (proxy role) instead of as the registrar")
	visited := fs.String("visited-network", "", "P-Visited-Network-ID on forwarded REGISTERs with --scscf (default: --domain)")
	hssRealm := fs.String("hss-realm", "", "the HSS's realm (Destination-Realm; default: --domain)")
	originHost := fs.String("origin-host", "", "this P-CSCF's Diameter Origin-Host with --hss (default: pcscf.DOMAIN)")
	sipAddr := fs.String("sip", "0.0.0.0:5060", "unprotected SIP address, UDP and TCP")
	espAddr := fs.String("esp", "", "ESP-in-UDP address (default: the --sip address, port 4500)")
	mediaESP := fs.String("media-esp", "", "the media relay's ESP-in-UDP address (default: --esp with port+1)")
	var peers multiFlag
	fs.Var(&peers, "peer", "DOMAIN=ADDR:PORT: route calls for DOMAIN to that P-CSCF's SIP address, and accept its INVITEs; repeatable")
	callTimeout := fs.Duration("call-timeout", sip.DefaultCallTimeout, "how long a call may ring before 408")
	pool := fs.String("pool", sip.DefaultPool.String(), "inner IPv4 address pool (DHCP); its first address is the P-CSCF's; none: no IPv4 pool (needs --pool6)")
	pool6 := fs.String("pool6", "", "inner IPv6 address pool (DHCPv6, at most a /120), e.g. 2001:db8:64::/64; its first address after the prefix's own is the P-CSCF's (default: none)")
	portS := fs.Uint("port-s", sip.DefaultPortS, "protected server port (port-c is port-s+1 and +2)")
	ipsec := fs.String("ipsec", "required", "required: refuse REGISTER without Security-Client; optional: allow AKA over plain SIP (SIPp)")
	allowNull := fs.Bool("allow-null", false, "also accept null encryption (integrity only), as a last resort")
	prefer := fs.String("prefer", "aes-cbc/hmac-sha-1-96,aes-cbc/hmac-md5-96,des-ede3-cbc/hmac-sha-1-96,des-ede3-cbc/hmac-md5-96",
		"the ealg/alg pairs to accept, most preferred first (chosen from the UE's Security-Client offers)")
	modes := fs.String("modes", strings.Join(sip.DefaultModes, ","), modesUsagePCSCF)
	expires := fs.Duration("expires", sip.DefaultExpires, "registration lifetime when the UE asks for none")
	maxExpires := fs.Duration("max-expires", sip.DefaultMaxExpires, "longest registration granted")
	tempSA := fs.Duration("temp-sa-timeout", sip.DefaultTempSATimeout, "how long temporary SAs wait for the protected REGISTER")
	rateLimit := fs.String("rate-limit", "on", "on: the flood limits (per-source REGISTER rate, pending challenges, temporary SAs per source); off: none, for load tests where one host plays many UEs")
	sourceRate := fs.Float64("source-rate", sip.DefaultSourceRate, "unprotected REGISTERs per second per source address (a token bucket; 503 past it)")
	sourceBurst := fs.Int("source-burst", sip.DefaultSourceBurst, "the token bucket's size")
	maxRegRate := fs.Float64("max-register-rate", 0, "overload ceiling: new registrations per second, all sources together (0: none); past it the first REGISTER gets 503 with Retry-After. Set it a little under what 'imsec bench register' measures here")
	maxInFlight := fs.Int("max-in-flight", sip.DefaultMaxInFlight, "overload control: shed new registrations (503, Retry-After) while more REGISTERs than this are being handled")
	tcpPerSource := fs.Int("tcp-per-source", 0, "unprotected TCP connections one source address (an IPv6 /64) may hold (0: 32; -1: no cap)")
	tcpMax := fs.Int("tcp-max", 0, "unprotected TCP connections in all (0: 10000, or half the file limit if lower; -1: no cap)")
	tcpIdle := fs.Duration("tcp-idle", 0, "close an unprotected TCP connection idle this long (0: 10m; negative: never)")
	tcpHeader := fs.Duration("tcp-header-timeout", 0, "close an unprotected TCP connection that takes longer than this to send one message header (0: 32s, RFC 3261's 64*T1; negative: never)")
	batchPad := fs.Int("batch-pad", 0, batchPadUsage)
	keylog := fs.String("keylog", "", "write every SA to this file in Wireshark's esp_sa format (secrets!)")
	verbose := fs.Bool("v", false, "log SIP traces and data-plane events to stderr")
	obs := addObsFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if err := loadConfig(fs, *config); err != nil {
		return err
	}
	if err := obs.check(*verbose); err != nil {
		return err
	}
	log := obs.logger(stderr)
	setSIPGoLogger(log, *verbose)
	cfg := sip.ServerConfig{Domain: *domain, Expires: *expires, MaxExpires: *maxExpires, TempSATimeout: *tempSA, AllowNull: *allowNull}
	var err error
	if *domain == "" {
		return usageErrorf("--domain is required")
	}
	roles := 0
	for _, set := range []bool{*db != "", *hssAddr != "", *scscf != ""} {
		if set {
			roles++
		}
	}
	if roles == 0 {
		return usageErrorf("--db, --hss or --scscf is required (create a database with 'imsec sub add --db FILE ...')")
	}
	if roles > 1 {
		return usageErrorf("--db, --hss and --scscf exclude each other: the registrar asks an HSS (--db, --hss), the proxy an S-CSCF (--scscf)")
	}
	if *visited != "" && *scscf == "" {
		return usageErrorf("--visited-network needs --scscf")
	}
	cfg.SCSCF, cfg.VisitedNetwork = *scscf, *visited
	if cfg.SIP, err = addrPortArg("sip", *sipAddr); err != nil {
		return err
	}
	if *espAddr != "" {
		if cfg.ESP, err = addrPortArg("esp", *espAddr); err != nil {
			return err
		}
	}
	if *mediaESP != "" {
		if cfg.MediaESP, err = addrPortArg("media-esp", *mediaESP); err != nil {
			return err
		}
	}
	cfg.Peers = map[string]netip.AddrPort{}
	for _, p := range peers {
		d, a, ok := strings.Cut(p, "=")
		if !ok || d == "" {
			return usageErrorf("--peer %q: want DOMAIN=ADDR:PORT", p)
		}
		ap, err := addrPortArg("peer", a)
		if err != nil {
			return err
		}
		cfg.Peers[d] = ap
	}
	if *callTimeout <= 0 {
		return usageErrorf("--call-timeout must be positive")
	}
	cfg.CallTimeout = *callTimeout
	if *pool6 != "" {
		if cfg.Pool6, err = netip.ParsePrefix(*pool6); err != nil || !cfg.Pool6.Addr().Is6() || cfg.Pool6.Addr().Is4In6() || cfg.Pool6.Bits() > 120 {
			return usageErrorf("--pool6 %q: want an IPv6 prefix of at most /120, e.g. 2001:db8:64::/64", *pool6)
		}
	}
	switch {
	case *pool == "none" && *pool6 == "":
		return usageErrorf("--pool none needs --pool6: a P-CSCF must lease inner addresses of some IP version")
	case *pool == "none":
	default:
		if cfg.Pool, err = netip.ParsePrefix(*pool); err != nil || !cfg.Pool.Addr().Is4() || cfg.Pool.Bits() > 30 {
			return usageErrorf("--pool %q: want an IPv4 prefix of at most /30, e.g. 100.64.0.0/16, or none", *pool)
		}
	}
	if *portS == 0 || *portS > 65533 {
		return usageErrorf("--port-s %d: want 1..65533", *portS)
	}
	cfg.PortS = uint16(*portS)
	for _, pair := range strings.Split(*prefer, ",") {
		suite, err := sip.ParseSuite(pair)
		if err != nil {
			return usageErrorf("--prefer %q: want ealg/alg pairs such as aes-cbc/hmac-sha-1-96 (ealg: aes-cbc, des-ede3-cbc, null; alg: hmac-sha-1-96, hmac-md5-96)", pair)
		}
		if suite.EAlg == esp.EncNull && !*allowNull {
			return usageErrorf("--prefer %q: null encryption also needs --allow-null", pair)
		}
		cfg.Preference = append(cfg.Preference, suite)
	}
	if cfg.Modes, err = modesArg(*modes); err != nil {
		return err
	}
	if cfg.IPsec, err = sip.ParseIPsecPolicy(*ipsec); err != nil {
		return usageErrorf("--ipsec: %v", err)
	}
	if err := checkBatchPad(*batchPad); err != nil {
		return err
	}
	cfg.BatchPad = *batchPad
	switch *rateLimit {
	case "on":
	case "off":
		cfg.Limits.Off = true
	default:
		return usageErrorf("--rate-limit %q: want on or off", *rateLimit)
	}
	if *sourceRate <= 0 || *sourceBurst < 1 {
		return usageErrorf("--source-rate and --source-burst must be positive")
	}
	cfg.Limits.SourceRate, cfg.Limits.SourceBurst = *sourceRate, *sourceBurst
	if *maxRegRate < 0 || *maxInFlight < 1 {
		return usageErrorf("--max-register-rate must be 0 (none) or positive, --max-in-flight positive")
	}
	cfg.Limits.RegisterRate, cfg.Limits.MaxInFlight = *maxRegRate, *maxInFlight
	if *tcpPerSource < -1 || *tcpMax < -1 {
		return usageErrorf("--tcp-per-source and --tcp-max: want a count, 0 for the default or -1 for no cap")
	}
	cfg.Limits.TCP.MaxPerSource, cfg.Limits.TCP.MaxConns = *tcpPerSource, *tcpMax
	cfg.Limits.TCP.IdleTimeout, cfg.Limits.TCP.HeaderTimeout = *tcpIdle, *tcpHeader
	if *expires <= 0 || *maxExpires < *expires || *tempSA <= 0 {
		return usageErrorf("--expires, --max-expires and --temp-sa-timeout must be positive, with max >= expires")
	}
	switch {
	case *scscf != "":
		// The proxy role: the S-CSCF's HSS authenticates.
	case *hssAddr != "":
		if _, err := addrPortArg("hss", *hssAddr); err != nil {
			return err
		}
		realm, host := *hssRealm, *originHost
		if realm == "" {
			realm = *domain
		}
		if host == "" {
			host = "pcscf." + *domain
		}
		cli, err := cx.NewClient(cx.ClientConfig{Addr: *hssAddr, OriginHost: host, OriginRealm: *domain, DestinationRealm: realm,
			ServerName: "sip:" + host, Logger: log})
		if err != nil {
			return err
		}
		defer cli.Close()
		cfg.HSS = cli
	default:
		store, err := openServedStore(ctx, *db)
		if err != nil {
			return err
		}
		defer store.Close()
		if cfg.HSS, err = hss.New(store, hss.Config{}); err != nil {
			return err
		}
	}
	kl, closeKL, err := openKeyLog(*keylog, false)
	if err != nil {
		return err
	}
	defer closeKL()
	cfg.KeyLog = kl
	cfg.Logger = log
	var ev *observe.Events
	var hssMetrics *observe.HSS
	if obs.on() {
		ev = observe.NewEvents()
		if cfg.HSS != nil {
			hssMetrics = observe.NewHSS(cfg.HSS)
			cfg.HSS = hssMetrics
		}
	}
	cfg.Events = obs.events(stdout, log, ev)
	srv, err := sip.New(cfg)
	if errors.Is(err, sip.ErrConfig) {
		return usageErrorf("%v", err)
	}
	if err != nil {
		return err
	}
	defer srv.Close()
	if obs.on() {
		cs := []prometheus.Collector{ev}
		if hssMetrics != nil {
			cs = append(cs, hssMetrics)
		}
		reg, err := newRegistry(cs...)
		if err == nil {
			err = observe.PCSCF(reg, srv)
		}
		if err != nil {
			return err
		}
		stop, err := obs.serve(ctx, stdout, log, reg, func() any { return observe.PCSCFStatus(srv, *domain) })
		if err != nil {
			return err
		}
		defer stop()
	}
	inner := fmt.Sprintf("inner %v (pool %v)", srv.InnerAddr(), cfg.Pool)
	switch {
	case !cfg.Pool.IsValid():
		inner = fmt.Sprintf("inner %v (pool6 %v)", srv.InnerAddr6(), cfg.Pool6)
	case cfg.Pool6.IsValid():
		inner += fmt.Sprintf(" and %v (pool6 %v)", srv.InnerAddr6(), cfg.Pool6)
	}
	fmt.Fprintf(stdout, "P-CSCF %s: SIP %v (UDP+TCP), ESP-in-UDP %v, media relay ESP %v, %s, protected port-s %d, IPsec %s\n",
		*domain, srv.SIPAddr(), srv.ESPAddr(), srv.MediaESPAddr(), inner, cfg.PortS, cfg.IPsec)
	if *scscf != "" {
		fmt.Fprintf(stdout, "P-CSCF %s: proxy role: REGISTERs and calls go to the S-CSCF %s\n", *domain, *scscf)
	}
	for d, a := range cfg.Peers {
		fmt.Fprintf(stdout, "P-CSCF %s: calls for %s go to %v\n", *domain, d, a)
	}
	werr := srv.Wait(ctx)
	c := srv.Pump().Counters()
	st := srv.Stats()
	fmt.Fprintf(stdout, "P-CSCF %s: stopping; ESP rx %d tx %d packets, drops %v, keepalives received %d; %d requests refused by a flood limit; TCP: %d accepted, %d refused (per source %d, in all %d), %d idle and %d half-sent closed\n",
		*domain, c.RxPackets, c.TxPackets, c.Drops, c.KeepalivesReceived, st.Overloaded,
		st.TCP.Accepted, st.TCP.RefusedPerSource+st.TCP.RefusedTotal, st.TCP.RefusedPerSource, st.TCP.RefusedTotal, st.TCP.IdleTimeouts, st.TCP.HeaderTimeouts)
	return werr
}

var sipgoLoggerOnce sync.Once

// cliLogger logs to stderr: warnings only, or debug (with SIP traces) with -v.
func cliLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	l := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	setSIPGoLogger(l, verbose)
	return l
}

// setSIPGoLogger points sipgo's logger at l. sipgo's transaction layer
// logs through a package global: it is set once per process (the first
// command's choice wins; tests run several).
func setSIPGoLogger(l *slog.Logger, verbose bool) {
	sipgoLoggerOnce.Do(func() {
		sipgosip.SetDefaultLogger(l)
		sipgosip.SIPDebug = verbose
	})
}
