// Package demo runs the seed's whole demonstrator in one process on
// loopback, with no privilege: HSS A and HSS B (SQLite files in a temporary
// folder), P-CSCF A and P-CSCF B, UE A behind a userspace NAT and UE B with
// a routable address (the seed's Figure 1). It registers both UEs (the
// ladders of Figures 3 and 2), shows the inner addresses and SA tables,
// exercises the tunnels, re-registers UE A once (the SA rollover),
// de-registers both and checks that every SA is gone.
package demo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/sip"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/nat"
	"github.com/imsec/imsec/tun/pcap"
)

// Config configures a demo run. Zero values are the documented defaults.
type Config struct {
	Out    io.Writer // the ladders and tables; default os.Stdout
	KeyLog io.Writer // every SA of every party, Wireshark esp_sa lines; nil: off
	Dir    string    // where the HSS databases go; default a temporary folder, removed after
	// Loopback is the address everything binds; default 127.0.0.1, or
	// ::1 with IPv6.
	Loopback netip.Addr
	// IPv6 runs the demo on IPv6 outside and inside the tunnels: the
	// P-CSCFs, the UEs and the NAT on IPv6 loopback, each P-CSCF with an
	// IPv6 pool only (A 2001:db8:a::/64, B 2001:db8:b::/64), the UEs'
	// inner addresses from DHCPv6, SIP and media over inner IPv6.
	IPv6 bool
	// CallDuration is how long the call from UE A to UE B sends media;
	// default 3 s.
	CallDuration time.Duration
	// Capture, if set, receives a pcap file (tun/pcap, LINKTYPE_RAW) of
	// the access side: every datagram both UEs' ESP-in-UDP sockets send
	// and receive, the signalling tunnel's and the media tunnel's, as
	// each UE's socket sees it (UE A's peer is the NAT's inside address).
	// With the KeyLog lines as Wireshark's esp_sa table it decrypts in
	// Wireshark or tshark. It holds only ESP and NAT keepalives: the
	// unprotected first REGISTER and its 401 (before any SA exists)
	// travel on the UE's plain SIP socket, and the P-CSCF-to-P-CSCF leg
	// (plain SIP and relayed RTP; network domain security is out of
	// scope), are not in it. Records are written whole, one Write call
	// each; Run stops writing before it returns and fails if a write did.
	Capture io.Writer
	// Events, if set, also receives every event the ladder prints (of
	// every party, after its line is printed), e.g. a
	// sip.SequenceDiagram's Event for `imsec demo --mermaid`.
	Events sip.EventFunc
}

// Summary is what a run found, for --json.
type Summary struct {
	UEs     []UESummary     `json:"ues"`
	Call    *CallSummary    `json:"call"`
	Servers []ServerSummary `json:"servers"`
	NAT     NATSummary      `json:"nat"`
	Seconds float64         `json:"duration_s"`
}

// UESummary describes one UE at the end of its registration.
type UESummary struct {
	Name       string      `json:"name"`
	IMPU       string      `json:"impu"`
	BehindNAT  bool        `json:"behind_nat"`
	InnerAddr  string      `json:"inner_addr"`
	PCSCFInner string      `json:"pcscf_inner_addr"`
	EAlg       string      `json:"ealg"`
	Alg        string      `json:"alg"`
	SAs        []SASummary `json:"sas"`
	PingRTTus  int64       `json:"ping_rtt_us"`
	// Media is what this UE's end of the call received (and sent).
	Media *sip.CallReport `json:"media_report,omitempty"`
}

// SASummary is one SA direction with its counters.
type SASummary struct {
	SPI       string `json:"spi"`
	Direction string `json:"direction"` // "in" or "out"
	Purpose   string `json:"purpose"`   // "signalling"
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
}

// CallSummary is the call from UE A to UE B as both ends saw it.
type CallSummary struct {
	From   string         `json:"from"`
	To     string         `json:"to"`
	Caller sip.CallReport `json:"caller_report"`
	Callee sip.CallReport `json:"callee_report"`
}

// ServerSummary describes one P-CSCF.
type ServerSummary struct {
	Domain         string `json:"domain"`
	SIP            string `json:"sip"`
	ESPSignalling  string `json:"esp_signalling"`
	ESPMedia       string `json:"esp_media"`
	InnerAddr      string `json:"inner_addr"`
	ESPRxPackets   uint64 `json:"esp_rx_packets"`
	ESPTxPackets   uint64 `json:"esp_tx_packets"`
	Drops          uint64 `json:"drops"`
	KeepalivesRecv uint64 `json:"keepalives_received"`
}

// NATSummary is the userspace NAT in front of UE A.
type NATSummary struct {
	Outside         string `json:"outside"`
	MappingsCreated uint64 `json:"mappings_created"`
	PacketsOut      uint64 `json:"packets_out"`
	PacketsIn       uint64 `json:"packets_in"`
}

type party struct {
	name   string
	domain string
	store  *hss.SQLiteStore
	hss    *hss.HSS
	srv    *sip.Server
	ue     *sip.UE
	impi   string
	impu   string
	natted bool
}

// Run runs the demo. It returns an error naming the step that failed.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	start := time.Now()
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.CallDuration <= 0 {
		cfg.CallDuration = 3 * time.Second
	}
	if !cfg.Loopback.IsValid() {
		cfg.Loopback = netip.MustParseAddr("127.0.0.1")
		if cfg.IPv6 {
			cfg.Loopback = netip.IPv6Loopback()
		}
	}
	if cfg.IPv6 && !cfg.Loopback.Is6() {
		return nil, fmt.Errorf("demo: IPv6 needs an IPv6 loopback address, not %v", cfg.Loopback)
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "imsec-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		cfg.Dir = d
	}
	// The ladder is printed from the parties' goroutines while Run prints
	// its tables: one lock for both.
	out := &lockedWriter{w: cfg.Out}
	ladder := sip.LadderPrinter(out)
	if cfg.Events != nil {
		print := ladder
		ladder = func(e sip.Event) {
			print(e)
			cfg.Events(e)
		}
	}
	lo := cfg.Loopback
	anyPort := netip.AddrPortFrom(lo, 0)
	step := func(format string, a ...any) { fmt.Fprintf(out, "\n== "+format+"\n", a...) }

	step("Setting up the seed's Figure 1 on %v: HSS A/B, P-CSCF A/B, a NAT in front of UE A", lo)
	parties := []*party{
		{name: "A", domain: "a.example", impi: "alice@a.example", impu: "sip:alice@a.example", natted: true},
		{name: "B", domain: "b.example", impi: "bob@b.example", impu: "sip:bob@b.example"},
	}
	type keys struct {
		k   akakeys.K
		opc akakeys.OPc
	}
	creds := map[string]keys{}
	for _, p := range parties {
		var err error
		if p.store, err = hss.OpenSQLite(filepath.Join(cfg.Dir, "hss-"+strings.ToLower(p.name)+".db"), hss.SQLiteOptions{}); err != nil {
			return nil, fmt.Errorf("HSS %s: %w", p.name, err)
		}
		defer p.store.Close()
		if p.hss, err = hss.New(p.store, hss.Config{}); err != nil {
			return nil, err
		}
		var kk keys
		rand.Read(kk.k[:])
		var op akakeys.OP
		rand.Read(op[:])
		kk.opc = akakeys.ComputeOPc(kk.k, op)
		creds[p.impi] = kk
		if err := p.store.Add(ctx, hss.Subscriber{IMPI: p.impi, IMPUs: []string{p.impu}, K: kk.k, OPc: kk.opc, OP: &op, AMF: akakeys.AMF{0x80, 0}}); err != nil {
			return nil, fmt.Errorf("HSS %s: %w", p.name, err)
		}
		sc := sip.ServerConfig{Domain: p.domain, HSS: p.hss, SIP: anyPort, ESP: anyPort, Events: ladder, KeyLog: cfg.KeyLog,
			TeardownGrace: 200 * time.Millisecond}
		if cfg.IPv6 {
			sc.Pool6 = netip.MustParsePrefix("2001:db8:" + strings.ToLower(p.name) + "::/64")
		}
		p.srv, err = sip.New(sc)
		if err != nil {
			return nil, fmt.Errorf("P-CSCF %s: %w", p.name, err)
		}
		defer p.srv.Close()
		fmt.Fprintf(out, "P-CSCF %s (%s): SIP %v, ESP-in-UDP %v (signalling) and %v (media relay), inner %v; HSS %s has %s\n",
			p.name, p.domain, p.srv.SIPAddr(), p.srv.ESPAddr(), p.srv.MediaESPAddr(), p.srv.InnerAddr(), p.name, p.impi)
	}
	a, b := parties[0], parties[1]
	a.srv.SetPeer(b.domain, b.srv.SIPAddr())
	b.srv.SetPeer(a.domain, a.srv.SIPAddr())
	fmt.Fprintf(out, "Peering (network domain security, plain SIP here): %s -> %v, %s -> %v\n", b.domain, b.srv.SIPAddr(), a.domain, a.srv.SIPAddr())
	home, err := nat.New(nat.Config{Outside: lo, Filtering: nat.AddressPortDependent, Forwards: []nat.Forward{
		{Inside: anyPort, Destination: a.srv.SIPAddr()},
		{Inside: anyPort, Destination: a.srv.ESPAddr()},
		{Inside: anyPort, Destination: a.srv.MediaESPAddr()},
	}})
	if err != nil {
		return nil, fmt.Errorf("NAT: %w", err)
	}
	defer home.Close()
	natIn := home.InsideAddrs()
	fmt.Fprintf(out, "NAT (home router of UE A): inside %v -> P-CSCF A SIP, %v -> P-CSCF A ESP, %v -> P-CSCF A media ESP; outside %v; mapping timeout %v\n",
		natIn[0], natIn[1], natIn[2], lo, nat.DefaultTimeout)

	var capture *pcap.Writer
	if cfg.Capture != nil {
		if capture, err = pcap.NewWriter(cfg.Capture, pcap.Options{}); err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
		// Deferred before the UEs' Close, so it runs after them.
		defer capture.Close()
	}
	calleeReport := make(chan sip.CallReport, 1)
	for _, p := range parties {
		kk := creds[p.impi]
		uc := sip.UEConfig{IMPI: p.impi, IMPU: p.impu, K: kk.k, OPc: kk.opc, Local: lo, Events: ladder, KeyLog: cfg.KeyLog,
			PCSCF: p.srv.SIPAddr(), PCSCFESP: p.srv.ESPAddr()}
		if cfg.IPv6 {
			uc.Inner = sip.InnerIPv6
		}
		if capture != nil {
			uc.WrapESP, uc.WrapMediaESP = pcap.TapFunc(capture), pcap.TapFunc(capture)
		}
		if p.natted {
			uc.PCSCF, uc.PCSCFESP, uc.PCSCFMediaESP = natIn[0], natIn[1], natIn[2]
		} else {
			uc.OnCallEnd = func(r sip.CallReport) { calleeReport <- r }
		}
		if p.ue, err = sip.NewUE(uc); err != nil {
			return nil, fmt.Errorf("UE %s: %w", p.name, err)
		}
		defer p.ue.Close()
	}

	sum := &Summary{}
	for _, p := range parties {
		fig := "Figure 2: no NAT"
		if p.natted {
			fig = "Figure 3: behind a NAT"
		}
		step("Registering UE %s (%s), the seed's %s", p.name, p.impu, fig)
		if err := p.ue.Register(ctx); err != nil {
			return nil, fmt.Errorf("registering UE %s: %w", p.name, err)
		}
	}

	step("Inner addresses and SA tables")
	for _, p := range parties {
		printUE(out, p)
	}

	step("Traffic inside the tunnels")
	for _, p := range parties {
		rtt, err := p.ue.Ping(ctx, 1)
		if err != nil {
			return nil, fmt.Errorf("UE %s ping through the tunnel: %w", p.name, err)
		}
		fmt.Fprintf(out, "UE %s -> P-CSCF %s inner %v: ICMP echo answered in %v\n", p.name, p.name, p.ue.Info().PCSCFInner, rtt.Round(time.Microsecond))
		res, err := p.srv.Options(ctx, p.impi)
		if err != nil || res.StatusCode != 200 {
			return nil, fmt.Errorf("P-CSCF %s OPTIONS to UE %s inside the tunnel: %v %v", p.name, p.name, res, err)
		}
	}

	step("Call: UE A (behind the NAT) calls UE B in the other domain for %v", cfg.CallDuration)
	fmt.Fprintln(out, "Signalling: UE A -> P-CSCF A (inside A's tunnel) -> P-CSCF B (peering) -> UE B (inside B's tunnel).")
	fmt.Fprintln(out, "Media: UE A -> P-CSCF A relay (inside A's media tunnel) -> P-CSCF B relay -> UE B (inside B's media tunnel), and back.")
	callerRep, err := a.ue.Call(ctx, b.impu, cfg.CallDuration, sip.MediaConfig{})
	if err != nil {
		return nil, fmt.Errorf("call from UE A to UE B: %w", err)
	}
	var calleeRep sip.CallReport
	select {
	case calleeRep = <-calleeReport:
	case <-time.After(10 * time.Second):
		return nil, errors.New("UE B never saw the end of the call")
	}
	fmt.Fprintf(out, "\nUE A's report:\n%s", callerRep)
	fmt.Fprintf(out, "UE B's report:\n%s", calleeRep)
	for name, r := range map[string]sip.CallReport{"A": *callerRep, "B": calleeRep} {
		if len(r.Received.Streams) == 0 {
			return nil, fmt.Errorf("UE %s received no media", name)
		}
	}
	sum.Call = &CallSummary{From: a.impu, To: b.impu, Caller: *callerRep, Callee: calleeRep}
	fmt.Fprintln(out, "\nPer-SA counters after the call (signalling and media tunnels):")
	for _, p := range parties {
		printUE(out, p)
	}

	step("Re-registering UE A: a new AKA run and a new SA set (TS 33.203 §7.4)")
	if err := a.ue.Reregister(ctx); err != nil {
		return nil, fmt.Errorf("re-registering UE A: %w", err)
	}
	if res, err := a.srv.Options(ctx, a.impi); err != nil || res.StatusCode != 200 {
		return nil, fmt.Errorf("OPTIONS over the new SAs: %v %v", res, err)
	}
	printServerSets(out, a)
	// Wait for the old set to go on both sides: it goes once the new one
	// carries traffic (the pings), or after its grace.
	var pingErr error
	retired := func() bool {
		a.srv.Housekeep()
		a.ue.Housekeep()
		if n := len(a.srv.Registrations()); n == 1 && len(a.srv.Registrations()[0].Sets) == 1 && len(a.ue.Info().SAs) == 4 && len(a.ue.Info().MediaSAs) == 2 {
			return true
		}
		_, pingErr = a.ue.Ping(ctx, 2)
		return pingErr != nil
	}
	if err := waitState(ctx, 5*time.Second, retired); err != nil || pingErr != nil {
		return nil, fmt.Errorf("the old SA set of UE A was not retired (ping: %v)", pingErr)
	}
	fmt.Fprintln(out, "old SA set retired on both ends once the new one carried traffic:")
	printUE(out, a)

	for _, p := range parties {
		info := p.ue.Info()
		us := UESummary{Name: "UE " + p.name, IMPU: p.impu, BehindNAT: p.natted, InnerAddr: info.InnerAddr.String(),
			PCSCFInner: info.PCSCFInner.String(), EAlg: string(info.Suite.EAlg), Alg: string(info.Suite.Alg),
			SAs: append(saSummaries(info.SAs, "signalling"), saSummaries(info.MediaSAs, "media")...)}
		if rtt, err := p.ue.Ping(ctx, 3); err == nil {
			us.PingRTTus = rtt.Microseconds()
		}
		if sum.Call != nil {
			if p == a {
				us.Media = &sum.Call.Caller
			} else {
				us.Media = &sum.Call.Callee
			}
		}
		sum.UEs = append(sum.UEs, us)
	}

	step("De-registering both UEs")
	for _, p := range parties {
		if err := p.ue.Deregister(ctx); err != nil {
			return nil, fmt.Errorf("de-registering UE %s: %w", p.name, err)
		}
	}
	for _, p := range parties {
		clean := func() bool {
			return len(p.srv.Pump().SACounters(nil)) == 0 && len(p.srv.MediaPump().SACounters(nil)) == 0 && len(p.srv.Registrations()) == 0
		}
		if err := waitState(ctx, 5*time.Second, clean); err != nil {
			return nil, fmt.Errorf("P-CSCF %s still has SAs after de-registration", p.name)
		}
		c := p.srv.Pump().Counters()
		var drops uint64
		for _, v := range c.Drops {
			drops += v
		}
		sum.Servers = append(sum.Servers, ServerSummary{Domain: p.domain, SIP: p.srv.SIPAddr().String(), ESPSignalling: p.srv.ESPAddr().String(), ESPMedia: p.srv.MediaESPAddr().String(),
			InnerAddr: p.srv.InnerAddr().String(), ESPRxPackets: c.RxPackets, ESPTxPackets: c.TxPackets, Drops: drops, KeepalivesRecv: c.KeepalivesReceived})
		fmt.Fprintf(out, "P-CSCF %s: no SAs, no registrations left; ESP received %d, sent %d, dropped %d\n", p.name, c.RxPackets, c.TxPackets, drops)
	}
	nc := home.Counters()
	sum.NAT = NATSummary{Outside: lo.String(), MappingsCreated: nc.MappingsCreated, PacketsOut: nc.Out, PacketsIn: nc.In}
	if capture != nil {
		if err := capture.Err(); err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
		fmt.Fprintf(out, "Capture: %d datagrams of the UEs' signalling and media ESP sockets so far\n", capture.Records())
	}
	sum.Seconds = time.Since(start).Seconds()
	step("Done in %.1f s: every step passed", sum.Seconds)
	return sum, nil
}

func saSummaries(sas []tun.SACounters, purpose string) []SASummary {
	var out []SASummary
	for _, s := range sas {
		dir := "out"
		if s.Inbound {
			dir = "in"
		}
		out = append(out, SASummary{SPI: fmt.Sprintf("0x%08x", uint32(s.SPI)), Direction: dir, Purpose: purpose, Packets: s.Packets, Bytes: s.Bytes})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Direction != out[j].Direction {
			return out[i].Direction < out[j].Direction
		}
		return out[i].SPI < out[j].SPI
	})
	return out
}

func printUE(w io.Writer, p *party) {
	info := p.ue.Info()
	where := "routable"
	if p.natted {
		where = "behind the NAT"
	}
	fmt.Fprintf(w, "UE %s (%s, %s): inner %v, P-CSCF inner %v, %s\n", p.name, p.impu, where, info.InnerAddr, info.PCSCFInner, info.Suite)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  SPI\tdir\tpurpose\tpackets\tbytes")
	for _, s := range append(saSummaries(info.SAs, "signalling"), saSummaries(info.MediaSAs, "media")...) {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\n", s.SPI, s.Direction, s.Purpose, s.Packets, s.Bytes)
	}
	tw.Flush()
}

func printServerSets(w io.Writer, p *party) {
	for _, r := range p.srv.Registrations() {
		inner := r.InnerAddr
		if r.InnerAddr6.IsValid() {
			inner = r.InnerAddr6
		}
		fmt.Fprintf(w, "P-CSCF %s view of %s: inner %v, ESP to %v (NAT %v)\n", p.name, r.IMPI, inner, r.Endpoint, r.NAT)
		for _, s := range r.Sets {
			fmt.Fprintf(w, "  SA set %d %-9s %s  in SPIs 0x%08x 0x%08x  out SPIs 0x%08x 0x%08x\n",
				s.ID, s.State, s.Suite, s.InboundSPI[0], s.InboundSPI[1], s.OutSPI[0], s.OutSPI[1])
		}
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// waitState waits until cond holds, at most d. The states it watches (SA
// tables, registrations) announce no change, so it polls them with a
// back-off: 1 ms doubling to 50 ms.
func waitState(ctx context.Context, d time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	wait := time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if cond() {
			return nil
		}
		wait = min(2*wait, 50*time.Millisecond)
		t.Reset(wait)
	}
}
