package sip

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/sip/media"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/dhcp"
	"github.com/imsec/imsec/tun/udp"
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
	Pool     netip.Prefix // inner addresses; default DefaultPool. Its first host is the P-CSCF's.
	// PortS is the P-CSCF's protected server port; its protected client
	// ports are PortS+1 and PortS+2, used by alternate SA sets so that a
	// new set never shares ports with the one it replaces (TS 33.203 §7.4).
	PortS uint16

	IPsec      IPsecPolicy
	Preference []Suite // default DefaultPreference
	AllowNull  bool    // also accept null encryption (NullSuites), last

	Expires       time.Duration // granted when the UE asks for none; default DefaultExpires
	MaxExpires    time.Duration // default DefaultMaxExpires
	MinExpires    time.Duration // default DefaultMinExpires (423 below it)
	TempSATimeout time.Duration // temporary SAs live this long without a protected REGISTER; default 30 s
	MaxTempSets   int           // global cap on temporary SA sets; default DefaultMaxTempSets
	// TeardownGrace is how long SAs stay after the 200 to a de-registration
	// (so the 200 and its retransmissions still leave); default 2 s.
	TeardownGrace time.Duration

	// Peers is the static peer table for calls: domain -> the peer
	// P-CSCF's unprotected SIP address. INVITEs to a domain in it go there
	// in plain SIP; INVITEs arriving on the unprotected port are accepted
	// only from a peer's address.
	Peers       map[string]netip.AddrPort
	CallTimeout time.Duration // how long a call may ring; default DefaultCallTimeout

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

// Server is the P-CSCF: registrar, sec-agree and the ESP gateway, with the
// HSS behind it. New starts it; Close stops it.
type Server struct {
	cfg     ServerConfig
	name    string
	log     *slog.Logger
	gateway netip.Addr
	portCs  [2]uint16
	keylog  *esp.KeyLog

	outerUA  *sipgo.UserAgent
	outer    *sipgo.Server
	outerCli *sipgo.Client
	outerUDP net.PacketConn
	outerTCP net.Listener

	ns       *tun.Netstack
	pump     *tun.Pump
	dhcp     *dhcp.Server
	innerUA  *sipgo.UserAgent
	inner    *sipgo.Server
	innerCli *sipgo.Client
	innerInj *connInjector // TCP connections we dial from port-c
	innerLns []io.Closer

	mediaNS   *tun.Netstack
	mediaPump *tun.Pump
	relay     *media.Relay
	calls     map[string]*bcall // by the Call-ID of either leg

	mu     sync.Mutex
	regs   map[string]*registration     // by IMPI
	byAddr map[netip.Addr]*registration // by leased inner address
	spis   map[uint32]bool
	temps  int
	setSeq int

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type setState uint8

const (
	setTemporary setState = iota
	setActive
	setOld
)

func (s setState) String() string {
	return [...]string{"temporary", "active", "old"}[s]
}

// saSetState is one SA set installed in the pump for a registration.
type saSetState struct {
	id      int
	set     *SASet
	side    Side
	state   setState
	created time.Time
	// usedMark is the packet count of this set's inbound SAs when it
	// became active; when it moves, the set carries traffic and the set it
	// replaced can go.
	usedMark uint64
	inSPIs   [2]esp.SPI
	expires  time.Time
	// The media SA pair (zero without the media extension).
	mediaIn, mediaOut uint32 // our media SPI, the UE's
	media             mediaPair
}

type challenge struct {
	v      akakeys.Vector
	nonce  string
	set    *saSetState // nil without sec-agree
	server []Mechanism // the Security-Server list sent
	issued time.Time
}

type registration struct {
	impi       string
	impu       string
	impus      []string
	peer       *tun.Peer
	sets       []*saSetState
	pend       *challenge
	lease      netip.Addr
	contact    string
	registered bool
	protected  bool
	expires    time.Time
	source     netip.AddrPort // unprotected SIP source (after NAT)
	natted     bool
	mediaPeer  *tun.Peer // in the media pump, once a set with media is active
}

// New starts a P-CSCF.
func New(cfg ServerConfig) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, name: "P-CSCF " + cfg.Domain, log: cfg.Logger, regs: map[string]*registration{},
		byAddr: map[netip.Addr]*registration{}, spis: map[uint32]bool{}, stop: make(chan struct{}), calls: map[string]*bcall{}}
	s.relay = media.NewRelay(cfg.Logger)
	s.gateway = cfg.Pool.Addr().Next()
	s.portCs = [2]uint16{cfg.PortS + 1, cfg.PortS + 2}
	if cfg.KeyLog != nil {
		s.keylog = esp.NewKeyLog(cfg.KeyLog)
	}
	var err error
	if s.dhcp, err = dhcp.NewServer(dhcp.ServerConfig{Pool: cfg.Pool, Gateway: s.gateway, Now: cfg.Now}); err != nil {
		return nil, err
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
	s.wg.Add(1)
	go s.housekeeper()
	ok = true
	return s, nil
}

func (c *ServerConfig) fill() error {
	if c.Domain == "" {
		return errors.New("sip: server needs a domain")
	}
	if c.HSS == nil {
		return errors.New("sip: server needs an HSS")
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
	if !c.Pool.IsValid() {
		c.Pool = DefaultPool
	}
	if !c.Pool.Addr().Is4() || c.Pool.Bits() > 30 {
		return fmt.Errorf("sip: pool %v must be an IPv4 prefix of at most /30", c.Pool)
	}
	c.Pool = c.Pool.Masked()
	if c.PortS == 0 {
		c.PortS = DefaultPortS
	}
	if c.PortS > 65533 {
		return fmt.Errorf("sip: protected port %d leaves no room for the two client ports above it", c.PortS)
	}
	if len(c.Preference) == 0 {
		c.Preference = DefaultPreference
	}
	if c.AllowNull {
		c.Preference = append(append([]Suite{}, c.Preference...), NullSuites...)
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

// startOuter serves unprotected SIP on the host's UDP and TCP sockets.
func (s *Server) startOuter() error {
	ua, err := newUA("imsec-pcscf", s.log, nil, false)
	if err != nil {
		return err
	}
	s.outerUA = ua
	if s.outer, err = sipgo.NewServer(ua, sipgo.WithServerLogger(s.log)); err != nil {
		return err
	}
	s.outer.OnRegister(s.onOuterRegister)
	s.outer.OnInvite(s.onInvite(false))
	s.outer.OnAck(s.onAck)
	s.outer.OnBye(s.onBye(false))
	s.outer.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		s.respond(tx, req, 200, "OK", true)
	})
	if s.outerUDP, s.outerTCP, err = listenUDPAndTCP(s.cfg.SIP); err != nil {
		return err
	}
	go s.outer.ServeUDP(s.outerUDP)
	go s.outer.ServeTCP(s.outerTCP)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := waitPool(ctx, ua, "udp", s.outerUDP.LocalAddr().String()); err != nil {
		return err
	}
	s.outerCli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(s.log), sipgo.WithClientHostname(s.hostAddr().String()))
	return err
}

// startInner brings up the ESP gateway: socket, netstack, pump, DHCP, and
// the protected SIP ports on the netstack.
func (s *Server) startInner() error {
	conn, err := udp.Listen(s.cfg.ESP)
	if err != nil {
		return fmt.Errorf("sip: ESP socket %v: %w", s.cfg.ESP, err)
	}
	ns, err := tun.NewNetstack(tun.NetstackOptions{MTU: tun.InnerMTU(1500), Addresses: []netip.Prefix{netip.PrefixFrom(s.gateway, s.cfg.Pool.Bits())}, Name: "pcscf"})
	if err != nil {
		conn.Close()
		return err
	}
	s.ns = ns
	var pc tun.PacketConn = conn
	if s.cfg.WrapESP != nil {
		pc = s.cfg.WrapESP(conn)
	}
	s.pump, err = tun.NewPump(tun.Config{Device: ns, Conn: pc, Intercept: s.intercept, EchoResponder: s.gateway, BatchPad: s.cfg.BatchPad, Logger: s.log, Now: s.cfg.Now})
	if err != nil {
		ns.Close()
		conn.Close()
		return err
	}
	ua, err := newUA("imsec-pcscf", s.log, s.innerFilter, true)
	if err != nil {
		return err
	}
	s.innerUA = ua
	if s.inner, err = sipgo.NewServer(ua, sipgo.WithServerLogger(s.log)); err != nil {
		return err
	}
	s.inner.OnRegister(s.onInnerRegister)
	s.inner.OnInvite(s.onInvite(true))
	s.inner.OnAck(s.onAck)
	s.inner.OnBye(s.onBye(true))
	s.inner.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) { s.respond(tx, req, 200, "OK", false) })
	if s.innerCli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(s.log), sipgo.WithClientHostname(s.gateway.String())); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, port := range []uint16{s.cfg.PortS, s.portCs[0], s.portCs[1]} {
		ap := netip.AddrPortFrom(s.gateway, port)
		pc, err := ns.ListenUDP(ap)
		if err != nil {
			return err
		}
		s.innerLns = append(s.innerLns, pc)
		go s.inner.ServeUDP(pc)
		if err := waitPool(ctx, ua, "udp", ap.String()); err != nil {
			return err
		}
	}
	ln, err := ns.ListenTCP(netip.AddrPortFrom(s.gateway, s.cfg.PortS))
	if err != nil {
		return err
	}
	s.innerLns = append(s.innerLns, ln)
	go s.inner.ServeTCP(ln)
	s.innerInj = newConnInjector(&net.TCPAddr{IP: s.gateway.AsSlice(), Port: int(s.portCs[0])})
	s.innerLns = append(s.innerLns, s.innerInj)
	go s.inner.ServeTCP(s.innerInj)
	return nil
}

// startMedia brings up the media relay's ESP gateway: its own socket,
// netstack (with the same inner address) and pump.
func (s *Server) startMedia() error {
	conn, err := udp.Listen(s.cfg.MediaESP)
	if err != nil {
		return fmt.Errorf("sip: media ESP socket %v: %w", s.cfg.MediaESP, err)
	}
	ns, err := tun.NewNetstack(tun.NetstackOptions{MTU: tun.InnerMTU(1500), Addresses: []netip.Prefix{netip.PrefixFrom(s.gateway, s.cfg.Pool.Bits())}, Name: "pcscf-media"})
	if err != nil {
		conn.Close()
		return err
	}
	s.mediaNS = ns
	var pc tun.PacketConn = conn
	if s.cfg.WrapMediaESP != nil {
		pc = s.cfg.WrapMediaESP(conn)
	}
	s.mediaPump, err = tun.NewPump(tun.Config{Device: ns, Conn: pc, EchoResponder: s.gateway, BatchPad: s.cfg.BatchPad, Logger: s.log, Now: s.cfg.Now})
	if err != nil {
		ns.Close()
		conn.Close()
		return err
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

// InnerAddr is the P-CSCF's address inside the tunnels.
func (s *Server) InnerAddr() netip.Addr { return s.gateway }

// Pump gives access to the data plane's counters.
func (s *Server) Pump() *tun.Pump { return s.pump }

// Close stops the server, deleting every SA.
func (s *Server) Close() error {
	s.once.Do(func() {
		close(s.stop)
		if s.outerUDP != nil {
			s.outerUDP.Close()
		}
		if s.outerTCP != nil {
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
		if s.pump != nil {
			s.pump.Close()
		} else if s.ns != nil {
			s.ns.Close()
		}
		if s.relay != nil {
			s.relay.Close()
		}
		if s.mediaPump != nil {
			s.mediaPump.Close()
		}
	})
	s.wg.Wait()
	return nil
}

func (s *Server) now() time.Time { return s.cfg.Now() }

func (s *Server) emit(to, what, detail string) { emit(s.cfg.Events, s.now(), s.name, to, what, detail) }

// ---- helpers on requests ----

func parseAddrPort(s string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// aor is the address of record "sip:user@host" of a To or From URI.
func aor(u sip.Uri) string {
	scheme := u.Scheme
	if scheme == "" {
		scheme = "sip"
	}
	if u.User == "" {
		return scheme + ":" + strings.ToLower(u.Host)
	}
	return scheme + ":" + u.User + "@" + strings.ToLower(u.Host)
}

// requestExpires returns the Expires the UE asked for (Contact param, then
// the Expires header), or -1 if none.
func requestExpires(req *sip.Request) int {
	if c := req.Contact(); c != nil {
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return n
			}
		}
	}
	if h := req.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			return n
		}
	}
	return -1
}

func securityHeaders(req *sip.Request, name string) ([]Mechanism, bool, error) {
	hs := req.GetHeaders(name)
	if len(hs) == 0 {
		return nil, false, nil
	}
	var all []Mechanism
	for _, h := range hs {
		ms, err := ParseSecurity(h.Value())
		if err != nil {
			return nil, true, err
		}
		all = append(all, ms...)
	}
	return all, true, nil
}

// respond sends a response to where the request came from (RFC 3581: the
// observed source, which is what gets through a NAT). outer marks the
// unprotected side, where Via gets received/rport when a NAT is seen.
func (s *Server) respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, outer bool, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if outer {
		src := parseAddrPort(req.Source())
		if v := res.Via(); v != nil && src.IsValid() {
			if v.Host != src.Addr().String() {
				v.Params.Add("received", src.Addr().String())
			}
			if _, ok := v.Params.Get("rport"); ok || v.Port != int(src.Port()) {
				v.Params.Add("rport", strconv.Itoa(int(src.Port())))
			}
		}
	}
	res.SetDestination(req.Source())
	if err := tx.Respond(res); err != nil {
		s.log.Debug("respond failed", "code", code, "err", err)
	}
}

// ---- SPIs ----

// newSPIsLocked draws two unused SPIs above the reserved range.
func (s *Server) newSPIsLocked() (uint32, uint32) {
	var out [2]uint32
	for i := 0; i < 2; {
		var b [4]byte
		rand.Read(b[:])
		v := binary.BigEndian.Uint32(b[:])
		if v <= esp.SPIReservedMax || s.spis[v] || (i == 1 && v == out[0]) {
			continue
		}
		out[i] = v
		i++
	}
	s.spis[out[0]], s.spis[out[1]] = true, true
	return out[0], out[1]
}

// ---- the unprotected side ----

func (s *Server) onOuterRegister(req *sip.Request, tx sip.ServerTransaction) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := parseAddrPort(req.Source())
	to := req.To()
	if to == nil || req.Via() == nil || req.CallID() == nil || req.CSeq() == nil {
		s.respond(tx, req, 400, "Bad Request", true)
		return
	}
	impu := aor(to.Address)
	via := req.Via()
	natted := via.Host != src.Addr().String() || (via.Port != 0 && via.Port != int(src.Port()))
	detail := "unprotected, from " + src.String()
	if natted {
		detail += fmt.Sprintf(", NAT detected: Via %s:%d != source %s, nathelper on", via.Host, via.Port, src)
	}
	s.emit("", "received REGISTER "+impu, detail)

	var cred *akakeys.Credentials
	if h := req.GetHeader("Authorization"); h != nil {
		c, err := akakeys.ParseAuthorization(h.Value())
		if err != nil {
			s.respond(tx, req, 400, "Bad Authorization", true)
			return
		}
		cred = &c
	}
	impi := ""
	if cred != nil && cred.Username != "" {
		impi = cred.Username
	} else {
		var err error
		if impi, err = s.cfg.HSS.LookupIMPU(ctx, impu); err != nil {
			s.emit("", "403 Forbidden", "unknown IMPU "+impu)
			s.respond(tx, req, 403, "Forbidden", true)
			return
		}
	}
	offers, hasSec, err := securityHeaders(req, "Security-Client")
	if err != nil {
		s.respond(tx, req, 400, "Bad Security-Client", true)
		return
	}
	if !hasSec && s.cfg.IPsec == IPsecRequired {
		s.emit("", "421 Extension Required", "no Security-Client and --ipsec required")
		s.respond(tx, req, 421, "Extension Required", true, sip.NewHeader("Require", "sec-agree"))
		return
	}
	exp := requestExpires(req)

	s.mu.Lock()
	reg := s.regs[impi]
	if reg == nil {
		reg = &registration{impi: impi, impu: impu}
		s.regs[impi] = reg
	}
	reg.source, reg.natted = src, natted

	// An answer to a plain (no sec-agree) challenge.
	if cred != nil && cred.Response != "" && reg.pend != nil && !hasSec && s.cfg.IPsec == IPsecOptional {
		if cred.HasAUTS {
			s.mu.Unlock()
			s.resyncAndChallenge(ctx, tx, req, reg, cred, nil, true)
			return
		}
		if cred.Nonce != reg.pend.nonce || !s.digestBound(cred, req, impi) || !akakeys.Verify(cred, "REGISTER", reg.pend.v.XRES) {
			reg.pend = nil
			s.mu.Unlock()
			s.emit("", "403 Forbidden", "wrong digest response")
			s.respond(tx, req, 403, "Forbidden", true)
			return
		}
		reg.pend = nil
		s.mu.Unlock()
		s.acceptPlain(ctx, tx, req, reg, exp)
		return
	}
	s.mu.Unlock()

	var chosen Mechanism
	if hasSec {
		if chosen, err = Choose(offers, s.cfg.Preference); err != nil {
			s.emit("", "494 Security Agreement Required", err.Error())
			s.respond(tx, req, 494, "Security Agreement Required", true,
				sip.NewHeader("Security-Server", FormatSecurity(s.serverOffers())))
			return
		}
	}
	if cred != nil && cred.HasAUTS {
		s.resyncAndChallenge(ctx, tx, req, reg, cred, offerPtr(hasSec, chosen), true)
		return
	}
	s.challenge(ctx, tx, req, reg, offerPtr(hasSec, chosen), akakeys.Vector{}, true)
}

func offerPtr(ok bool, m Mechanism) *Mechanism {
	if !ok {
		return nil
	}
	return &m
}

// serverOffers is what a 494 lists: our algorithms, without SPIs or ports.
func (s *Server) serverOffers() []Mechanism {
	var ms []Mechanism
	for _, p := range s.cfg.Preference {
		ms = append(ms, Mechanism{Name: MechIPsec3GPP, Alg: p.Alg, EAlg: p.EAlg, Prot: "esp", Mod: ModUDPEncTun})
	}
	return ms
}

// resyncAndChallenge handles an auts: the HSS checks MAC-S, recovers
// SQN_MS, and hands a fresh vector for a new challenge.
func (s *Server) resyncAndChallenge(ctx context.Context, tx sip.ServerTransaction, req *sip.Request, reg *registration, cred *akakeys.Credentials, offer *Mechanism, outer bool) {
	s.mu.Lock()
	pend := reg.pend
	s.mu.Unlock()
	if pend == nil || cred.Nonce != pend.nonce {
		s.emit("", "403 Forbidden", "auts for an unknown nonce")
		s.respond(tx, req, 403, "Forbidden", outer)
		return
	}
	s.emit("HSS", "resync", "auts from the UE: SQN out of range")
	v, err := s.cfg.HSS.Resync(ctx, reg.impi, pend.v.RAND, cred.AUTS)
	if err != nil {
		s.emit("", "403 Forbidden", "resync refused: "+err.Error())
		s.respond(tx, req, 403, "Forbidden", outer)
		return
	}
	s.emit("", "HSS resynchronised", fmt.Sprintf("next SQN %x", v.SQN))
	s.challenge(ctx, tx, req, reg, offer, v, outer)
}

// challenge issues a 401 with a fresh vector (or v if given) and, with
// sec-agree, installs a temporary SA set.
func (s *Server) challenge(ctx context.Context, tx sip.ServerTransaction, req *sip.Request, reg *registration, offer *Mechanism, v akakeys.Vector, outer bool) {
	if v == (akakeys.Vector{}) {
		var err error
		if v, err = s.cfg.HSS.Vector(ctx, reg.impi); err != nil {
			s.emit("", "403 Forbidden", "HSS: "+err.Error())
			s.respond(tx, req, 403, "Forbidden", outer)
			return
		}
		s.emit("HSS", "MAR: vector for "+reg.impi, fmt.Sprintf("SQN %x", v.SQN))
		emit(s.cfg.Events, s.now(), "HSS", s.name, "MAA: RAND, AUTN, XRES, CK, IK", "")
	}
	ch := &challenge{v: v, nonce: akakeys.BuildNonce(v.RAND, v.AUTN, nil), issued: s.now()}
	var secHdr sip.Header
	if offer != nil {
		set, err := s.installTemporary(reg, *offer, v)
		if err != nil {
			s.emit("", "503 Service Unavailable", err.Error())
			s.respond(tx, req, 503, "Service Unavailable", outer, sip.NewHeader("Retry-After", "5"))
			return
		}
		ch.set = set
		ch.server = []Mechanism{set.set.PCSCF}
		secHdr = sip.NewHeader("Security-Server", FormatSecurity(ch.server))
	}
	s.mu.Lock()
	if reg.pend != nil && reg.pend.set != nil && reg.pend.set != ch.set && reg.pend.set.state == setTemporary {
		s.removeSetLocked(reg, reg.pend.set) // a new challenge replaces the old temporary set
	}
	reg.pend = ch
	s.mu.Unlock()
	c := akakeys.Challenge{Realm: s.cfg.Domain, Nonce: ch.nonce, Algorithm: "AKAv1-MD5", QOP: "auth"}
	hdrs := []sip.Header{sip.NewHeader("WWW-Authenticate", c.String())}
	detail := "RAND, AUTN in nonce"
	if secHdr != nil {
		hdrs = append(hdrs, secHdr)
		detail += "; Security-Server: " + secHdr.Value()
	}
	s.emit("UE "+reg.impu, "401 Unauthorized", detail)
	s.respond(tx, req, 401, "Unauthorized", outer, hdrs...)
}

// installTemporary builds our half of a new SA set from the UE's offer and
// installs it in the pump as temporary.
func (s *Server) installTemporary(reg *registration, offer Mechanism, v akakeys.Vector) (*saSetState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A fresh challenge replaces an unanswered temporary set.
	for _, st := range append([]*saSetState(nil), reg.sets...) {
		if st.state == setTemporary {
			s.removeSetLocked(reg, st)
		}
	}
	if s.temps >= s.cfg.MaxTempSets {
		return nil, fmt.Errorf("too many pending registrations (%d temporary SA sets)", s.temps)
	}
	// TS 33.203 §7.4: at most MaxSAPairsPerIMPI pairs; drop old sets first.
	for 2*(len(reg.sets)+1) > MaxSAPairsPerIMPI {
		victim := reg.sets[0]
		for _, st := range reg.sets {
			if st.state == setOld {
				victim = st
				break
			}
		}
		s.removeSetLocked(reg, victim)
	}
	spiC, spiS := s.newSPIsLocked()
	portC := s.portCs[0]
	for _, st := range reg.sets {
		if st.set.PCSCF.PortC == portC {
			portC = s.portCs[1]
		}
	}
	ours := Mechanism{Name: MechIPsec3GPP, Q: "0.1", Alg: offer.Alg, EAlg: offer.EffectiveEAlg(), Prot: "esp", Mod: ModUDPEncTun,
		SPIc: spiC, SPIs: spiS, PortC: portC, PortS: s.cfg.PortS}
	var mediaIn, mediaOut uint32
	if ueMedia, _, ok := mediaParams(offer); ok {
		mediaIn, _ = s.newSPIsLocked()
		mediaOut = ueMedia
		ours = withParam(ours, paramMediaSPI, strconv.FormatUint(uint64(mediaIn), 10))
		ours = withParam(ours, paramMediaPort, strconv.Itoa(int(s.MediaESPAddr().Port())))
	}
	set, err := NewSASet(offer, ours, v.CK, v.IK)
	if err != nil {
		delete(s.spis, spiC)
		delete(s.spis, spiS)
		return nil, err
	}
	side, err := set.PCSCFSide()
	if err != nil {
		return nil, err
	}
	if reg.peer == nil {
		reg.peer, err = s.pump.AddPeer(tun.PeerConfig{Name: reg.impi, FollowSource: true})
		if err != nil {
			return nil, err
		}
	}
	for _, in := range side.Inbound {
		if err := s.pump.AddInbound(reg.peer, in); err != nil {
			return nil, err
		}
	}
	s.setSeq++
	st := &saSetState{id: s.setSeq, set: set, side: side, state: setTemporary, created: s.now(),
		inSPIs: [2]esp.SPI{side.Inbound[0].SPI(), side.Inbound[1].SPI()}, expires: s.now().Add(s.cfg.TempSATimeout),
		mediaIn: mediaIn, mediaOut: mediaOut}
	if mediaIn != 0 {
		mp, cfgs, err := newMediaPair(set.EAlg, set.Alg, v.CK, v.IK, mediaIn, mediaOut)
		if err != nil {
			return nil, err
		}
		st.media = mp
		logMediaKeys(s.keylog, cfgs)
	}
	reg.sets = append(reg.sets, st)
	s.temps++
	s.applyOutboundLocked(reg)
	if err := set.LogKeys(s.keylog); err != nil {
		s.log.Warn("key log", "err", err)
	}
	s.emit("", "temporary SAs installed", fmt.Sprintf("%s/%s, SPIs in %#x %#x, out %#x %#x, expire in %v",
		set.EAlg, set.Alg, spiS, spiC, offer.SPIc, offer.SPIs, s.cfg.TempSATimeout))
	return st, nil
}

// applyOutboundLocked installs the outbound selectors of every live set,
// newest first, with the newest set's port-c→port-s SA as the default.
func (s *Server) applyOutboundLocked(reg *registration) {
	var sel []tun.OutboundSA
	var def *esp.Outbound
	for i := len(reg.sets) - 1; i >= 0; i-- {
		st := reg.sets[i]
		sel = append(sel, st.side.Outbound...)
		if def == nil {
			def = st.side.Default
		}
	}
	reg.peer.SetOutboundSAs(def, sel)
}

// removeSetLocked deletes a set's SAs from the pump.
func (s *Server) removeSetLocked(reg *registration, st *saSetState) {
	for _, spi := range st.inSPIs {
		s.pump.RemoveInbound(spi)
	}
	delete(s.spis, st.set.PCSCF.SPIc)
	delete(s.spis, st.set.PCSCF.SPIs)
	if st.mediaIn != 0 {
		delete(s.spis, st.mediaIn)
		if st.state != setTemporary {
			s.mediaPump.RemoveInbound(esp.SPI(st.mediaIn))
		}
	}
	if st.state == setTemporary {
		s.temps--
	}
	kept := reg.sets[:0]
	for _, x := range reg.sets {
		if x != st {
			kept = append(kept, x)
		}
	}
	reg.sets = kept
	if reg.peer != nil {
		s.applyOutboundLocked(reg)
	}
	if reg.pend != nil && reg.pend.set == st {
		reg.pend.set = nil
	}
}

// digestBound checks that credentials are for this registrar and request:
// the realm is our domain, the username the IMPI being registered, and the
// digest-uri names the Request-URI (RFC 2617 §3.2.2.5), so a response
// computed for another realm or request cannot be replayed here.
func (s *Server) digestBound(cred *akakeys.Credentials, req *sip.Request, impi string) bool {
	if cred.Realm != s.cfg.Domain || cred.Username != impi {
		return false
	}
	var u sip.Uri
	if err := sip.ParseUri(cred.URI, &u); err != nil {
		return false
	}
	return strings.EqualFold(u.Host, req.Recipient.Host) && (u.Port == 0 || req.Recipient.Port == 0 || u.Port == req.Recipient.Port)
}

// acceptPlain registers a UE that authenticated without sec-agree.
func (s *Server) acceptPlain(ctx context.Context, tx sip.ServerTransaction, req *sip.Request, reg *registration, exp int) {
	impus, _ := s.cfg.HSS.IMPUs(ctx, reg.impi)
	granted := s.grant(exp)
	s.mu.Lock()
	if granted == 0 {
		s.dropLocked(reg, "de-registered")
	} else {
		reg.registered, reg.protected, reg.impus = true, false, impus
		reg.expires = s.now().Add(granted)
		if c := req.Contact(); c != nil {
			reg.contact = c.Address.String()
		}
	}
	s.mu.Unlock()
	if granted == 0 {
		s.emit("UE "+reg.impu, "200 OK", "de-registered (no IPsec)")
	} else {
		s.emit("UE "+reg.impu, "200 OK", fmt.Sprintf("registered without IPsec (--ipsec optional), expires %v", granted))
	}
	s.respond(tx, req, 200, "OK", true, s.okHeaders(req, reg, impus, granted)...)
}

// grant clamps the requested Expires; 0 means de-register.
func (s *Server) grant(exp int) time.Duration {
	if exp == 0 {
		return 0
	}
	d := s.cfg.Expires
	if exp > 0 {
		d = time.Duration(exp) * time.Second
	}
	return min(max(d, s.cfg.MinExpires), s.cfg.MaxExpires)
}

func (s *Server) okHeaders(req *sip.Request, reg *registration, impus []string, granted time.Duration) []sip.Header {
	secs := strconv.Itoa(int(granted / time.Second))
	hs := []sip.Header{sip.NewHeader("Expires", secs)}
	if c := req.Contact(); c != nil {
		cc := c.Clone()
		cc.Params.Remove("expires")
		cc.Params.Add("expires", secs)
		hs = append(hs, cc)
	}
	if granted > 0 {
		route := fmt.Sprintf("<sip:orig@%s:%d;lr>", s.gateway, s.cfg.PortS)
		if !reg.protected {
			route = fmt.Sprintf("<sip:orig@%s;lr>", s.SIPAddr())
		}
		hs = append(hs, sip.NewHeader("Service-Route", route))
		if len(impus) > 0 {
			var parts []string
			for _, u := range impus {
				parts = append(parts, "<"+u+">")
			}
			hs = append(hs, sip.NewHeader("P-Associated-URI", strings.Join(parts, ", ")))
		}
	}
	return hs
}

// ---- the protected side ----

// innerFilter enforces TS 33.203 port discipline on the protected ports:
// requests only on port-s, responses only on a port-c, and only from a
// leased inner address (the pump has already checked the SA).
func (s *Server) innerFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	local := addrPortOf(info.LocalAddr)
	remote := addrPortOf(info.RemoteAddr)
	s.mu.Lock()
	reg := s.byAddr[remote.Addr()]
	s.mu.Unlock()
	if reg == nil {
		return nil, nil
	}
	isResponse := len(data) >= 7 && string(data[:7]) == "SIP/2.0"
	if isResponse == (local.Port() == s.cfg.PortS) {
		return nil, nil
	}
	return data, nil
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.UDPAddr:
		return netip.AddrPortFrom(v.AddrPort().Addr().Unmap(), v.AddrPort().Port())
	case *net.TCPAddr:
		return netip.AddrPortFrom(v.AddrPort().Addr().Unmap(), v.AddrPort().Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	return parseAddrPort(a.String())
}

func (s *Server) onInnerRegister(req *sip.Request, tx sip.ServerTransaction) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := parseAddrPort(req.Source())
	s.mu.Lock()
	reg := s.byAddr[src.Addr()]
	s.mu.Unlock()
	if reg == nil || req.To() == nil || aor(req.To().Address) != reg.impu {
		s.respond(tx, req, 403, "Forbidden", false)
		return
	}
	// Which SA set did it come through? The UE sends from the set's port-c.
	s.mu.Lock()
	var via *saSetState
	for _, st := range reg.sets {
		if st.set.UE.PortC == src.Port() {
			via = st
		}
	}
	pend := reg.pend
	s.mu.Unlock()
	if via == nil {
		s.emit("", "403 Forbidden", "protected REGISTER from a port-c of no SA set")
		s.respond(tx, req, 403, "Forbidden", false)
		return
	}
	exp := requestExpires(req)
	s.emit("", "received REGISTER "+reg.impu, fmt.Sprintf("protected (SA set %d, %s), from %s", via.id, via.state, src))

	var cred *akakeys.Credentials
	if h := req.GetHeader("Authorization"); h != nil {
		c, err := akakeys.ParseAuthorization(h.Value())
		if err != nil {
			s.respond(tx, req, 400, "Bad Authorization", false)
			return
		}
		cred = &c
	}
	answering := cred != nil && cred.Response != "" && pend != nil && cred.Nonce == pend.nonce

	// De-registration over an established set needs no new AKA run: the
	// request is integrity protected.
	if exp == 0 && via.state == setActive && !answering {
		s.deregister(tx, req, reg)
		return
	}
	if !answering {
		// Re-registration: a new AKA run and a new SA set (TS 33.203 §7.4).
		offers, hasSec, err := securityHeaders(req, "Security-Client")
		if err != nil || !hasSec {
			s.respond(tx, req, 400, "Security-Client required on the protected port", false)
			return
		}
		chosen, err := Choose(offers, s.cfg.Preference)
		if err != nil {
			s.respond(tx, req, 494, "Security Agreement Required", false)
			return
		}
		s.challenge(ctx, tx, req, reg, &chosen, akakeys.Vector{}, false)
		return
	}
	if cred.HasAUTS {
		offers, _, _ := securityHeaders(req, "Security-Client")
		chosen, err := Choose(offers, s.cfg.Preference)
		if err != nil {
			s.respond(tx, req, 494, "Security Agreement Required", false)
			return
		}
		s.resyncAndChallenge(ctx, tx, req, reg, cred, &chosen, false)
		return
	}
	// The answer must come through the set it was challenged for.
	if pend.set == nil || via != pend.set {
		s.emit("", "403 Forbidden", "answer not sent through the new SAs")
		s.failChallenge(reg, pend)
		s.respond(tx, req, 403, "Forbidden", false)
		return
	}
	verify, _, err := securityHeaders(req, "Security-Verify")
	if err != nil || !VerifyMatches(verify, pend.server) {
		s.emit("", "403 Forbidden", "Security-Verify does not match the Security-Server sent (bid-down?)")
		s.failChallenge(reg, pend)
		s.respond(tx, req, 403, "Forbidden", false)
		return
	}
	if !s.digestBound(cred, req, reg.impi) || !akakeys.Verify(cred, "REGISTER", pend.v.XRES) {
		s.emit("", "403 Forbidden", "RES != XRES (or the digest names another realm, user or URI)")
		s.failChallenge(reg, pend)
		s.respond(tx, req, 403, "Forbidden", false)
		return
	}
	s.emit("", "RES == XRES", "SA set "+strconv.Itoa(via.id)+" established")
	impus, _ := s.cfg.HSS.IMPUs(ctx, reg.impi)
	granted := s.grant(exp)
	s.mu.Lock()
	for _, st := range reg.sets {
		if st.state == setActive {
			st.state = setOld
			st.expires = s.now().Add(s.cfg.TempSATimeout) // at the latest; earlier once the new set is used
		}
	}
	via.state = setActive
	s.temps--
	via.usedMark = s.inboundPackets(via)
	reg.pend = nil
	reg.registered, reg.protected, reg.impus = true, true, impus
	if granted == 0 {
		granted = s.cfg.MinExpires
	}
	reg.expires = s.now().Add(granted)
	via.expires = reg.expires.Add(DefaultSAMargin)
	if c := req.Contact(); c != nil {
		reg.contact = c.Address.String()
	}
	s.applyOutboundLocked(reg)
	mediaNote := s.activateMediaLocked(reg, via)
	s.mu.Unlock()
	if mediaNote != "" {
		s.emit("", "media SAs installed", mediaNote)
	}
	s.emit("UE "+reg.impu, "200 OK", fmt.Sprintf("expires %v, SA lifetime %v", granted, granted+DefaultSAMargin))
	s.respond(tx, req, 200, "OK", false, s.okHeaders(req, reg, impus, granted)...)
}

// activateMediaLocked installs the media SA pair of a set that just became
// active, in the media relay's pump. It returns a line for the ladder.
func (s *Server) activateMediaLocked(reg *registration, st *saSetState) string {
	if st.mediaIn == 0 || !reg.lease.IsValid() {
		return ""
	}
	host := []netip.Prefix{netip.PrefixFrom(reg.lease, 32)}
	if reg.mediaPeer == nil {
		p, err := s.mediaPump.AddPeer(tun.PeerConfig{Name: reg.impi, FollowSource: true, Allowed: host, Routes: host})
		if err != nil {
			s.log.Warn("media peer", "impi", reg.impi, "err", err)
			return ""
		}
		reg.mediaPeer = p
	}
	if err := s.mediaPump.AddInbound(reg.mediaPeer, st.media.in); err != nil {
		s.log.Warn("media SA", "impi", reg.impi, "err", err)
		return ""
	}
	reg.mediaPeer.SetOutbound(st.media.out)
	return fmt.Sprintf("separate tunnel for RTP at %v: SPI in %#x, out %#x (keys: TS 33.220 KDF of CK||IK, label %q)",
		s.MediaESPAddr(), st.mediaIn, st.mediaOut, akakeys.MediaLabel)
}

func (s *Server) inboundPackets(st *saSetState) uint64 {
	var n uint64
	for _, spi := range st.inSPIs {
		v, _ := s.pump.InboundPackets(spi)
		n += v
	}
	return n
}

// failChallenge forgets a failed answer and deletes its temporary SAs once
// the 403 (sent through them) has left.
func (s *Server) failChallenge(reg *registration, pend *challenge) {
	s.mu.Lock()
	if reg.pend == pend {
		reg.pend = nil
	}
	s.mu.Unlock()
	time.AfterFunc(s.cfg.TeardownGrace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if pend.set != nil && pend.set.state == setTemporary {
			s.removeSetLocked(reg, pend.set)
		}
	})
}

func (s *Server) deregister(tx sip.ServerTransaction, req *sip.Request, reg *registration) {
	s.emit("UE "+reg.impu, "200 OK", "de-registered; SAs deleted, lease released")
	s.respond(tx, req, 200, "OK", false, sip.NewHeader("Expires", "0"))
	s.mu.Lock()
	reg.registered = false
	s.mu.Unlock()
	// Let the 200 (and a retransmission) leave before the SAs go.
	time.AfterFunc(s.cfg.TeardownGrace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !reg.registered && s.regs[reg.impi] == reg {
			s.dropLocked(reg, "de-registered")
		}
	})
}

// dropLocked removes a registration with all its SAs and its lease.
func (s *Server) dropLocked(reg *registration, why string) {
	for len(reg.sets) > 0 {
		s.removeSetLocked(reg, reg.sets[0])
	}
	if reg.peer != nil {
		s.pump.RemovePeer(reg.peer)
		reg.peer = nil
	}
	if reg.mediaPeer != nil {
		s.mediaPump.RemovePeer(reg.mediaPeer)
		reg.mediaPeer = nil
	}
	if reg.lease.IsValid() {
		delete(s.byAddr, reg.lease)
		s.dhcp.Release(reg.impi)
		reg.lease = netip.Addr{}
	}
	delete(s.regs, reg.impi)
	s.log.Info("registration removed", "impi", reg.impi, "why", why)
}

// intercept answers DHCP inside the tunnels (RFC 3456 style): the lease is
// bound to the peer, i.e. to the IMPI whose SAs carried the request.
func (s *Server) intercept(peer *tun.Peer, pkt []byte) bool {
	if !dhcp.IsToServer(pkt) {
		return false
	}
	reply, lease, err := s.dhcp.Handle(pkt, peer.Name())
	if err != nil {
		s.log.Debug("dhcp", "peer", peer.Name(), "err", err)
		return true
	}
	if lease.Bound {
		s.mu.Lock()
		reg := s.regs[peer.Name()]
		if reg != nil && reg.lease != lease.Addr {
			if reg.lease.IsValid() {
				delete(s.byAddr, reg.lease)
			}
			reg.lease = lease.Addr
			s.byAddr[lease.Addr] = reg
			host := []netip.Prefix{netip.PrefixFrom(lease.Addr, 32)}
			peer.SetAllowed(host)
			s.pump.SetRoutes(peer, host)
			s.emit("UE "+reg.impu, "DHCPACK", fmt.Sprintf("inner address %v (through the tunnel, bound to %s)", lease.Addr, reg.impi))
		}
		s.mu.Unlock()
	}
	if reply != nil {
		if err := s.pump.Inject(peer, reply); err != nil {
			s.log.Debug("dhcp reply", "err", err)
		}
	}
	return true
}

// ---- housekeeping ----

func (s *Server) housekeeper() {
	defer s.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Housekeep()
		}
	}
}

// Housekeep expires temporary sets, retires old sets once their successor
// carries traffic, and drops registrations past their expiry. It runs twice
// a second; tests with a fake clock call it directly.
func (s *Server) Housekeep() {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, reg := range s.regs {
		for _, st := range append([]*saSetState(nil), reg.sets...) {
			switch st.state {
			case setTemporary:
				if now.After(st.expires) {
					s.removeSetLocked(reg, st)
					emit(s.cfg.Events, now, s.name, "", "temporary SAs expired", fmt.Sprintf("%s: no protected REGISTER in %v", reg.impi, s.cfg.TempSATimeout))
				}
			case setOld:
				if now.After(st.expires) || s.successorUsedLocked(reg) {
					s.removeSetLocked(reg, st)
					emit(s.cfg.Events, now, s.name, "", "old SAs deleted", fmt.Sprintf("%s: SA set %d replaced", reg.impi, st.id))
				}
			}
		}
		if reg.registered && now.After(reg.expires) {
			emit(s.cfg.Events, now, s.name, "", "registration expired", reg.impi)
			s.dropLocked(reg, "expired")
			continue
		}
		if !reg.registered && len(reg.sets) == 0 && reg.pend == nil {
			s.dropLocked(reg, "idle")
		}
		if reg.pend != nil && now.Sub(reg.pend.issued) > s.cfg.TempSATimeout && (reg.pend.set == nil || reg.pend.set.state != setTemporary) {
			reg.pend = nil
		}
	}
}

func (s *Server) successorUsedLocked(reg *registration) bool {
	for _, st := range reg.sets {
		if st.state == setActive && s.inboundPackets(st) > st.usedMark {
			return true
		}
	}
	return false
}

// ---- status ----

// RegistrationInfo is a snapshot of one registration.
type RegistrationInfo struct {
	IMPI, IMPU string
	Registered bool
	Protected  bool
	InnerAddr  netip.Addr
	Endpoint   netip.AddrPort // where ESP to the UE goes (after NAT)
	NAT        bool
	Expires    time.Time
	Sets       []SetInfo
}

// SetInfo describes one SA set.
type SetInfo struct {
	ID         int
	State      string
	EAlg, Alg  string
	InboundSPI [2]uint32 // ours: spi-s, spi-c
	OutSPI     [2]uint32 // the UE's: spi-c, spi-s
}

// Registrations lists every registration.
func (s *Server) Registrations() []RegistrationInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []RegistrationInfo
	for _, reg := range s.regs {
		ri := RegistrationInfo{IMPI: reg.impi, IMPU: reg.impu, Registered: reg.registered, Protected: reg.protected,
			InnerAddr: reg.lease, NAT: reg.natted, Expires: reg.expires}
		if reg.peer != nil {
			ri.Endpoint = reg.peer.Endpoint()
		}
		for _, st := range reg.sets {
			ri.Sets = append(ri.Sets, SetInfo{ID: st.id, State: st.state.String(), EAlg: st.set.EAlg, Alg: st.set.Alg,
				InboundSPI: [2]uint32{st.set.PCSCF.SPIs, st.set.PCSCF.SPIc}, OutSPI: [2]uint32{st.set.UE.SPIc, st.set.UE.SPIs}})
		}
		out = append(out, ri)
	}
	return out
}

// Options sends an OPTIONS to a registered UE inside its tunnel, from the
// P-CSCF's port-c to the UE's port-s, and returns the response.
func (s *Server) Options(ctx context.Context, impi string) (*sip.Response, error) {
	return s.optionsWithBody(ctx, impi, nil)
}

// optionsWithBody is Options with a body (a large one goes over TCP).
func (s *Server) optionsWithBody(ctx context.Context, impi string, body []byte) (*sip.Response, error) {
	s.mu.Lock()
	reg := s.regs[impi]
	var st *saSetState
	if reg != nil && reg.registered && reg.protected {
		for _, x := range reg.sets {
			if x.state == setActive {
				st = x
			}
		}
	}
	var lease netip.Addr
	if reg != nil {
		lease = reg.lease
	}
	s.mu.Unlock()
	if st == nil || !lease.IsValid() {
		return nil, fmt.Errorf("sip: %s is not registered with IPsec", impi)
	}
	dst := sip.Uri{Scheme: "sip", Host: lease.String(), Port: int(st.set.UE.PortS)}
	req := sip.NewRequest(sip.OPTIONS, dst)
	req.AppendHeader(&sip.ToHeader{Address: dst})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "pcscf", Host: s.cfg.Domain}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(12)}}})
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", "text/plain"))
		req.SetBody(body)
	}
	laddr := netip.AddrPortFrom(s.gateway, st.set.PCSCF.PortC)
	raddr := netip.AddrPortFrom(lease, st.set.UE.PortS)
	s.emit("UE "+reg.impu, "OPTIONS", fmt.Sprintf("inside the tunnel, %v -> %v", laddr, raddr))
	return sendRequest(ctx, s.innerCli, s.innerUA, s.ns, s.innerInj, req, laddr, raddr)
}
