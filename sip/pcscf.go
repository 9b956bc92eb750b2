package sip

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/sip/internal/connlimit"
	"github.com/imsec/imsec/sip/media"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/dhcp"
)

// HSS is what the registrar needs from a home subscriber server: the
// embedded akakeys/hss.HSS, or later a Diameter Cx client.
type HSS interface {
	Vector(ctx context.Context, impi string) (akakeys.Vector, error)
	Resync(ctx context.Context, impi string, rand akakeys.RAND, auts akakeys.AUTS) (akakeys.Vector, error)
	LookupIMPU(ctx context.Context, impu string) (string, error)
	IMPUs(ctx context.Context, impi string) ([]string, error)
}

// IPsecPolicy says whether a UE must negotiate IPsec (sec-agree).
type IPsecPolicy uint8

const (
	// IPsecRequired refuses a REGISTER without Security-Client (421).
	IPsecRequired IPsecPolicy = iota
	// IPsecOptional lets a UE without sec-agree (SIPp) register with AKA
	// over plain SIP.
	IPsecOptional
)

// ParseIPsecPolicy parses "required" or "optional".
func ParseIPsecPolicy(s string) (IPsecPolicy, error) {
	switch s {
	case "required":
		return IPsecRequired, nil
	case "optional":
		return IPsecOptional, nil
	}
	return 0, fmt.Errorf("ipsec policy %q: want required or optional", s)
}

func (p IPsecPolicy) String() string {
	if p == IPsecOptional {
		return "optional"
	}
	return "required"
}

// Defaults of ServerConfig.
const (
	DefaultSIPPort       = 5060
	DefaultESPPort       = 4500
	DefaultPortS         = 5064
	DefaultExpires       = 600 * time.Second
	DefaultMaxExpires    = 3600 * time.Second
	DefaultMinExpires    = 2 * time.Second
	DefaultTempSATimeout = 30 * time.Second
	// DefaultSAMargin is added to the registration lifetime to make the SA
	// lifetime (TS 33.203 §7.1: registration expiry + 30 s).
	DefaultSAMargin = 30 * time.Second
	// MaxSAPairsPerIMPI is the TS 33.203 §7.4 bound; a set is two pairs.
	MaxSAPairsPerIMPI  = 6
	DefaultMaxTempSets = 4096
	// DefaultSCSCFTimeout is ServerConfig.SCSCFTimeout's default: half of
	// imsec's UE transaction timeout, so the UE hears the 504.
	DefaultSCSCFTimeout = defaultSIPTimeout / 2
)

// DefaultPool is the inner address pool when none is configured (RFC 6598
// shared address space, which a home NAT never hands out).
var DefaultPool = netip.MustParsePrefix("100.64.0.0/16")

// ServerConfig configures a P-CSCF. Zero values are the documented defaults.
type ServerConfig struct {
	Domain string // home domain and digest realm, e.g. "a.example" (required)
	HSS    HSS    // required

	SIP netip.AddrPort // unprotected SIP on UDP and TCP; default 0.0.0.0:5060
	ESP netip.AddrPort // ESP-in-UDP; default SIP's address, port 4500
	// MediaESP is the media relay's ESP-in-UDP socket (the media tunnels);
	// default ESP's address and port+1 (port 0 if ESP's is 0).
	MediaESP netip.AddrPort
	// Pool is the inner IPv4 pool (DHCP); default DefaultPool, unless
	// Pool6 is set and Pool is not (an IPv6-only P-CSCF). Its first host
	// is the P-CSCF's.
	Pool netip.Prefix
	// Pool6 is the inner IPv6 pool (DHCPv6, tun/dhcp.Server6), at most a
	// /120; default none. Its first address after the prefix's own is the
	// P-CSCF's. With both pools a UE may lease one address of each, bound
	// to its IMPI alike.
	Pool6 netip.Prefix
	// PortS is the P-CSCF's protected server port; its protected client
	// ports are PortS+1 and PortS+2, used by alternate SA sets so that a
	// new set never shares ports with the one it replaces (TS 33.203 §7.4).
	PortS uint16

	IPsec      IPsecPolicy
	Preference []Suite // default DefaultPreference
	// Modes are the sec-agree modes (mod=) the P-CSCF accepts, most
	// preferred first; default DefaultModes. A UE seen behind a NAT only
	// ever gets a UDP-encapsulated mode (Policy.Choose).
	Modes     []string
	AllowNull bool // also accept null encryption (NullSuites), last

	Expires       time.Duration // granted when the UE asks for none; default DefaultExpires
	MaxExpires    time.Duration // default DefaultMaxExpires
	MinExpires    time.Duration // default DefaultMinExpires (423 below it)
	TempSATimeout time.Duration // temporary SAs live this long without a protected REGISTER; default 30 s
	MaxTempSets   int           // global cap on temporary SA sets; default DefaultMaxTempSets
	// Limits bound what unauthenticated requests can make the P-CSCF
	// spend (limits.go); the zero value is the defaults.
	Limits Limits
	// TeardownGrace is how long SAs stay after the 200 to a de-registration
	// (so the 200 and its retransmissions still leave); default 2 s.
	TeardownGrace time.Duration

	// Peers is the static peer table for calls: domain -> the peer
	// P-CSCF's unprotected SIP address. INVITEs to a domain in it go there
	// in plain SIP; INVITEs arriving on the unprotected port are accepted
	// only from a peer's address.
	Peers map[string]netip.AddrPort
	// SCSCF, if set, puts the P-CSCF in the proxy role (proxy.go): a SIP
	// URI "sip:HOST[:PORT]" of the S-CSCF that registers and authenticates
	// the UEs. Without it the P-CSCF is its own registrar with HSS.
	SCSCF string
	// VisitedNetwork is P-Visited-Network-ID on forwarded REGISTERs;
	// default Domain.
	VisitedNetwork string
	// SCSCFTimeout bounds the wait for the S-CSCF's final response to a
	// forwarded REGISTER (then 504 to the UE); default
	// DefaultSCSCFTimeout, which answers before a UE gives up on its own
	// transaction.
	SCSCFTimeout time.Duration
	CallTimeout  time.Duration // how long a call may ring; default DefaultCallTimeout

	// BatchPad is tun.Config.BatchPad for both tunnels' pumps: the most ESP
	// padding a packet gets so that packets sent together have one length
	// (0: tun.DefaultBatchPad; negative: none).
	BatchPad int

	KeyLog io.Writer // Wireshark esp_sa lines for every SA; nil: off
	// WrapESP, if set, wraps the ESP-in-UDP socket (a pcap tap, a test
	// network that drops or delays).
	WrapESP func(tun.PacketConn) tun.PacketConn
	// WrapMediaESP does the same for the media relay's ESP socket.
	WrapMediaESP func(tun.PacketConn) tun.PacketConn
	Logger       *slog.Logger // default: discard
	Events       EventFunc    // the ladder; nil: none
	Now          func() time.Time
}

// Server is the P-CSCF: registrar (registrar.go, registration.go), the
// ESP gateway of the tunnels (gateway.go, pcscf_sas.go), the B2BUA for
// calls (b2bua.go) and the media relay, with the HSS behind it. New starts
// it; Close stops it and waits for every goroutine it started.
type Server struct {
	// Set once in New, read-only after.
	cfg      ServerConfig
	scscf    *scscfLink // the proxy role's S-CSCF; nil in the registrar role
	name     string
	log      *slog.Logger
	gateway  netip.Addr // our inner address: IPv4 if there is an IPv4 pool, else IPv6
	gateway6 netip.Addr // our inner IPv6 address, if there is an IPv6 pool
	portCs   [2]uint16
	keylog   *esp.KeyLog
	lifetime // the root context of every handler, the goroutines; Close ends them

	// The unprotected side (listeners.go); set once in New.
	outerUA     *sipgo.UserAgent
	outer       *sipgo.Server
	outerCli    *sipgo.Client
	outerUDP    net.PacketConn
	outerTCP    net.Listener
	outerLim    *connlimit.Listener // outerTCP with its caps and timeouts; closing it closes outerTCP
	outerStamps receiveStamper      // outerUDP, if it gives receive times; read by its one reader (shedFilter)

	// The signalling tunnels (gateway.go); set once in New.
	ep       *tun.Endpoint // owns ns and pump
	lazy     *lazySAs      // inbound SAs installed in pump on their first packet
	ns       *tun.Netstack
	pump     *tun.Pump
	dhcp     *dhcp.Server     // nil without an IPv4 pool
	dhcp6    *dhcp.Server6    // nil without an IPv6 pool
	dhcpIn   chan dhcpRequest // from the pump's intercept to the DHCP goroutine
	innerUA  *sipgo.UserAgent
	inner    *sipgo.Server
	innerCli *sipgo.Client
	innerInj *connInjector // TCP connections we dial from port-c
	innerLns []io.Closer
	protUDP  []*tun.Socket // the protected UDP ports (also in innerLns)

	// The media tunnels and the relay; set once in New.
	mediaEp   *tun.Endpoint // owns mediaNS and mediaPump
	mediaNS   *tun.Netstack
	mediaPump *tun.Pump
	relay     *media.Relay

	mu sync.Mutex
	// Guarded by mu.
	regs   map[string]*registration     // by IMPI
	byAddr map[netip.Addr]*registration // by leased inner address
	calls  map[string]*bcall            // by the Call-ID of either leg
	spis   *spiPool                     // every SPI we receive on
	limits *sourceLimits                // per-source buckets and temporary-set counts
	temps  int                          // temporary SA sets of all registrations (saSets keeps it)
	setSeq int
	evq    []Event   // events emitted under mu, delivered by unlock
	due    regQueue  // registrations by their next deadline (housekeep.go)
	hkNext time.Time // when the housekeeper plans its next round
	wake   chan struct{}
	failed chan error // a listener that died (Wait)

	overloaded  atomic.Uint64 // requests answered 503 by a limit
	ovl         *overload     // new registrations shed under load (overload.go); set once in New
	dhcpDropped atomic.Uint64 // DHCP and DHCPv6 requests from the tunnels dropped: on a full queue, malformed, unsupported, no pool, pool full
	sipc        *sipCounters  // SIP messages by method and code (observe.go); set once in New

	// hookRechallenge, set by tests before any REGISTER, makes the
	// registrar challenge a correct answer again when it returns true.
	hookRechallenge func() bool
}

// New starts a P-CSCF.
func New(cfg ServerConfig) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, name: "P-CSCF " + cfg.Domain, log: cfg.Logger, regs: map[string]*registration{},
		byAddr: map[netip.Addr]*registration{}, spis: newSPIPool(), calls: map[string]*bcall{}, limits: newSourceLimits(cfg.Limits), lazy: newLazySAs(), ovl: newOverload(cfg.Limits),
		dhcpIn: make(chan dhcpRequest, dhcpQueue), wake: make(chan struct{}, 1), failed: make(chan error, 1), sipc: new(sipCounters)}
	if cfg.SCSCF != "" {
		var err error
		if s.scscf, err = parseSCSCF(cfg.SCSCF); err != nil {
			return nil, err
		}
	}
	s.lifetime.init()
	s.relay = media.NewRelay(cfg.Logger)
	if cfg.Pool6.IsValid() {
		s.gateway6 = cfg.Pool6.Addr().Next()
		s.gateway = s.gateway6
	}
	if cfg.Pool.IsValid() {
		s.gateway = cfg.Pool.Addr().Next()
	}
	s.portCs = [2]uint16{cfg.PortS + 1, cfg.PortS + 2}
	if cfg.KeyLog != nil {
		s.keylog = esp.NewKeyLog(cfg.KeyLog)
	}
	var err error
	if cfg.Pool.IsValid() {
		if s.dhcp, err = dhcp.NewServer(dhcp.ServerConfig{Pool: cfg.Pool, Gateway: s.gateway, Now: cfg.Now}); err != nil {
			return nil, err
		}
	}
	if cfg.Pool6.IsValid() {
		if s.dhcp6, err = dhcp.NewServer6(dhcp.Server6Config{Pool: cfg.Pool6, Gateway: s.gateway6, Now: cfg.Now}); err != nil {
			return nil, err
		}
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if err := s.startInner(); err != nil {
		return nil, err
	}
	if err := s.startMedia(); err != nil {
		return nil, err
	}
	if err := s.startOuter(); err != nil {
		return nil, err
	}
	s.goFunc(s.housekeeper)
	for range dhcpWorkers {
		s.goFunc(s.serveDHCP)
	}
	ok = true
	return s, nil
}

// handler wraps a sipgo request handler (lifetime.handler); the 505 for
// another SIP version is answered in ours.
func (s *Server) handler(h func(req *sip.Request, tx sip.ServerTransaction)) func(req *sip.Request, tx sip.ServerTransaction) {
	return s.lifetime.handler(h, func(req *sip.Request, tx sip.ServerTransaction) {
		s.respond(tx, req, 505, "Version Not Supported", true)
	})
}

func (c *ServerConfig) fill() error {
	if c.Domain == "" {
		return configErrorf("server needs a domain")
	}
	if c.HSS == nil && c.SCSCF == "" {
		return configErrorf("server needs an HSS (registrar role) or an S-CSCF (proxy role)")
	}
	if c.VisitedNetwork == "" {
		c.VisitedNetwork = c.Domain
	}
	if c.SCSCFTimeout == 0 {
		c.SCSCFTimeout = DefaultSCSCFTimeout
	}
	if !c.SIP.IsValid() {
		c.SIP = netip.AddrPortFrom(netip.IPv4Unspecified(), DefaultSIPPort)
	}
	if !c.ESP.IsValid() {
		c.ESP = netip.AddrPortFrom(c.SIP.Addr(), DefaultESPPort)
	}
	if !c.MediaESP.IsValid() {
		port := c.ESP.Port()
		if port != 0 {
			port++
		}
		c.MediaESP = netip.AddrPortFrom(c.ESP.Addr(), port)
	}
	if !c.Pool.IsValid() && !c.Pool6.IsValid() {
		c.Pool = DefaultPool
	}
	if c.Pool.IsValid() {
		if !c.Pool.Addr().Is4() || c.Pool.Bits() > 30 {
			return configErrorf("pool %v must be an IPv4 prefix of at most /30, e.g. 100.64.0.0/16", c.Pool)
		}
		c.Pool = c.Pool.Masked()
	}
	if c.Pool6.IsValid() {
		if !c.Pool6.Addr().Is6() || c.Pool6.Addr().Is4In6() || c.Pool6.Addr().Zone() != "" || c.Pool6.Bits() > 120 {
			return configErrorf("IPv6 pool %v must be an IPv6 prefix of at most /120, e.g. 2001:db8:64::/64", c.Pool6)
		}
		c.Pool6 = c.Pool6.Masked()
	}
	if c.PortS == 0 {
		c.PortS = DefaultPortS
	}
	if c.PortS > 65533 {
		return configErrorf("protected port-s %d leaves no room for the two client ports above it: want 1..65533", c.PortS)
	}
	if len(c.Preference) == 0 {
		c.Preference = DefaultPreference
	}
	if c.AllowNull {
		c.Preference = append(append([]Suite{}, c.Preference...), NullSuites...)
	}
	if len(c.Modes) == 0 {
		c.Modes = DefaultModes
	}
	if err := checkModes(c.Modes); err != nil {
		return configErrorf("modes: %v", err)
	}
	if c.Expires == 0 {
		c.Expires = DefaultExpires
	}
	if c.MaxExpires == 0 {
		c.MaxExpires = DefaultMaxExpires
	}
	if c.MinExpires == 0 {
		c.MinExpires = DefaultMinExpires
	}
	if c.TempSATimeout == 0 {
		c.TempSATimeout = DefaultTempSATimeout
	}
	if c.MaxTempSets == 0 {
		c.MaxTempSets = DefaultMaxTempSets
	}
	if err := c.Limits.fill(); err != nil {
		return err
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	peers := map[string]netip.AddrPort{}
	for d, a := range c.Peers {
		peers[strings.ToLower(d)] = a
	}
	c.Peers = peers
	if c.TeardownGrace == 0 {
		c.TeardownGrace = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// MediaESPAddr is the bound ESP-in-UDP address of the media relay.
func (s *Server) MediaESPAddr() netip.AddrPort { return s.mediaPump.LocalAddr() }

// MediaPump gives access to the media tunnels' counters.
func (s *Server) MediaPump() *tun.Pump { return s.mediaPump }

// SIPAddr is the bound unprotected SIP address (UDP and TCP).
func (s *Server) SIPAddr() netip.AddrPort {
	return s.outerUDP.LocalAddr().(*net.UDPAddr).AddrPort()
}

// ESPAddr is the bound ESP-in-UDP address.
func (s *Server) ESPAddr() netip.AddrPort { return s.pump.LocalAddr() }

// InnerAddr is the P-CSCF's address inside the tunnels: its IPv4 one if it
// has an IPv4 pool, else its IPv6 one.
func (s *Server) InnerAddr() netip.Addr { return s.gateway }

// InnerAddr6 is the P-CSCF's IPv6 address inside the tunnels, if it has an
// IPv6 pool.
func (s *Server) InnerAddr6() netip.Addr { return s.gateway6 }

// innerFor is our inner address of a's family: where a UE at a talks to.
func (s *Server) innerFor(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() && s.gateway6.IsValid() {
		return s.gateway6
	}
	return s.gateway
}

// gatewayPrefixes are our inner addresses with their pools' lengths, for
// the netstacks.
func (s *Server) gatewayPrefixes() []netip.Prefix {
	var ps []netip.Prefix
	if s.cfg.Pool.IsValid() {
		ps = append(ps, netip.PrefixFrom(s.gateway, s.cfg.Pool.Bits()))
	}
	if s.gateway6.IsValid() {
		ps = append(ps, netip.PrefixFrom(s.gateway6, s.cfg.Pool6.Bits()))
	}
	return ps
}

// Pump gives access to the data plane's counters.
func (s *Server) Pump() *tun.Pump { return s.pump }

// Close stops the server, deleting every SA, and waits for every goroutine
// it started and every handler still running.
func (s *Server) Close() error {
	if !s.stop() {
		s.wg.Wait()
		return nil
	}
	if s.outerUDP != nil {
		s.outerUDP.Close()
	}
	if s.outerLim != nil {
		s.outerLim.Close()
	} else if s.outerTCP != nil {
		s.outerTCP.Close()
	}
	for _, l := range s.innerLns {
		l.Close()
	}
	if s.outerUA != nil {
		s.outerUA.Close()
	}
	if s.innerUA != nil {
		s.innerUA.Close()
	}
	if s.ep != nil {
		s.ep.Close()
	}
	if s.relay != nil {
		s.relay.Close()
	}
	if s.mediaEp != nil {
		s.mediaEp.Close()
	}
	s.wg.Wait()
	return nil
}

func (s *Server) now() time.Time { return s.cfg.Now() }

// emit delivers an event at once; never call it with s.mu held.
func (s *Server) emit(kind EventKind, to, what, detail string) {
	s.emitEvent(Event{Kind: kind, To: to, What: what, Detail: detail})
}

// emitEvent is emit with the optional fields filled in.
func (s *Server) emitEvent(e Event) {
	if s.cfg.Events == nil {
		return
	}
	e.Time, e.From = s.now(), s.name
	s.cfg.Events(e)
}

// tracing reports whether anyone takes events: the ladder's details are
// built only then (a P-CSCF under load without one skips the formatting).
func (s *Server) tracing() bool { return s.cfg.Events != nil }

// emitLocked queues an event under s.mu; unlock delivers it.
func (s *Server) emitLocked(kind EventKind, to, what, detail string) {
	if s.cfg.Events == nil {
		return
	}
	s.evq = append(s.evq, Event{Kind: kind, Time: s.now(), From: s.name, To: to, What: what, Detail: detail})
}

// unlock releases s.mu and then delivers the events queued under it, in
// order, so that no EventFunc runs with the lock held.
func (s *Server) unlock() {
	q := s.evq
	s.evq = nil
	s.mu.Unlock()
	for _, e := range q {
		s.cfg.Events(e)
	}
}
