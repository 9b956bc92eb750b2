package sip

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
)

// Defaults of UEConfig.
const (
	DefaultUEPortS     = 5068
	DefaultKeepalive   = 20 * time.Second
	DefaultUEExpires   = 600 * time.Second
	defaultSIPTimeout  = 8 * time.Second
	defaultDHCPTimeout = 10 * time.Second
)

// KeepaliveOff in UEConfig.Keepalive turns NAT keepalives off; ProbeOff
// in UEConfig.Probe turns the liveness probe off.
const (
	KeepaliveOff time.Duration = -1
	ProbeOff     time.Duration = -1
)

// Defaults of the liveness probe: one keepalive interval apart, so that a
// restarted P-CSCF is noticed within a keepalive interval or two.
const (
	DefaultProbe        = DefaultKeepalive
	DefaultProbeTimeout = 5 * time.Second
)

// DefaultOffer is what a UE offers in Security-Client, in order.
var DefaultOffer = []Suite{{"aes-cbc", "hmac-sha-1-96"}, {"aes-cbc", "hmac-md5-96"}}

// UEConfig configures a UE. Zero values are the documented defaults.
type UEConfig struct {
	PCSCF    netip.AddrPort // the P-CSCF's unprotected SIP address (or a NAT's inside address for it); required
	PCSCFESP netip.AddrPort // where ESP goes; default the P-CSCF's address, port 4500
	// PCSCFMediaESP is where the media tunnel's ESP goes; default the
	// PCSCFESP address with the media-port the P-CSCF announces (set it when
	// a NAT or port forward stands in between).
	PCSCFMediaESP netip.AddrPort
	// NoMedia leaves out the media tunnel (the media-spi offer).
	NoMedia bool
	// Answer is what the UE does with an incoming call: AnswerAuto (the
	// default), AnswerBusy or AnswerIgnore.
	Answer AnswerMode
	// RingTime is how long an auto-answering UE rings (180 sent) before
	// its 200 OK, as a person would; default 0: answer at once.
	RingTime time.Duration
	// Media is the synthetic media the UE sends in the calls it answers.
	Media MediaConfig
	// OnCallEnd receives the report of each call the UE answered, when the
	// caller hangs up.
	OnCallEnd func(CallReport)
	Local     netip.Addr // local address for SIP and ESP sockets; default: the one the host routes to PCSCF from
	IMPI      string     // private identity, e.g. "alice@a.example"; required
	IMPU      string     // public identity, e.g. "sip:alice@a.example"; required
	Domain    string     // home domain (Request-URI, realm); default IMPU's host

	K   akakeys.K
	OPc akakeys.OPc
	// AMF, if set, must equal the AMF inside AUTN (as SIPp's aka_AMF).
	AMF  *akakeys.AMF
	USIM *akakeys.USIM // optional: share USIM state (SQN) across UEs or restarts

	Offer []Suite // default DefaultOffer
	// Modes are the sec-agree modes the UE offers, most preferred first;
	// default DefaultModes. The offer lists every pair of Offer in each
	// mode, mode by mode; the P-CSCF picks one.
	Modes     []string
	PortS     uint16        // protected server port; port-c uses PortS-6 and PortS-5 alternately. Default 5068.
	Expires   time.Duration // asked for; default 600 s
	Keepalive time.Duration // NAT keepalive interval (RFC 3948 §2.3); 0: DefaultKeepalive; KeepaliveOff: none
	// Probe is how often Run checks, between re-registrations, that the
	// P-CSCF still holds the SAs (an OPTIONS through the tunnel; see
	// UE.Probe): a restarted P-CSCF is noticed within Probe + ProbeTimeout.
	// 0: DefaultProbe; ProbeOff: none.
	Probe time.Duration
	// ProbeTimeout bounds one probe; default DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// BatchPad is tun.Config.BatchPad for both tunnels' pumps (0: the
	// default; negative: no padding).
	BatchPad int

	// Inner is which inner addresses the UE asks for over the tunnel:
	// InnerIPv4 (DHCP; the default), InnerIPv6 (DHCPv6) or InnerDual (both).
	// SIP and media use the IPv6 address when there is one.
	Inner InnerFamily

	// TUN, if set, names a kernel TUN device to create for the inner side
	// (needs CAP_NET_ADMIN; Linux, macOS, Windows, BSDs). Default: a gVisor
	// netstack, which needs no privilege.
	TUN string

	KeyLog io.Writer
	// WrapESP, if set, wraps the ESP-in-UDP socket (a pcap tap, a test
	// network that drops or delays).
	WrapESP func(tun.PacketConn) tun.PacketConn
	// WrapMediaESP does the same for the media tunnel's ESP socket.
	WrapMediaESP func(tun.PacketConn) tun.PacketConn
	Logger       *slog.Logger
	Events       EventFunc
	Now          func() time.Time
}

// UE is the SIP client with its USIM: it registers with SIP-AKA and
// sec-agree, brings up ESP-in-UDP tunnel SAs, learns its inner address over
// the tunnel, and then signals inside it.
type UE struct {
	cfg    UEConfig
	name   string
	log    *slog.Logger
	usim   *akakeys.USIM
	keylog *esp.KeyLog
	local  netip.Addr

	lifetime // the root of everything the UE does, its goroutines; Close ends them

	// The unprotected side; set once in NewUE.
	outerUA  *sipgo.UserAgent
	outerSrv *sipgo.Server
	outerCli *sipgo.Client
	outerPC  net.PacketConn
	sipc     *sipCounters // SIP messages received (observe.go); set once in NewUE

	// The tunnel (ue_tunnel.go): set by the first Register, which callers
	// do not run concurrently with Register, Reregister or Deregister.
	ep       *tun.Endpoint // owns dev and pump
	dev      tun.Device
	ns       *tun.Netstack // dev, when it is one
	kernel   *tun.Kernel   // dev, when it is one
	inet     innerNet      // sockets on the inner side
	innerInj *connInjector
	pump     *tun.Pump
	peer     *tun.Peer
	dhcpIn   chan []byte // DHCP replies (port 68) from the intercept
	dhcp6In  chan []byte // DHCPv6 replies (port 546) from the intercept
	innerUA  *sipgo.UserAgent
	inner    *sipgo.Server
	innerCli *sipgo.Client
	innerLns []io.Closer

	// The media tunnel (the imsec extension; see mediatunnel.go), like
	// the tunnel set by registration.
	mediaEp    *tun.Endpoint // owns mediaNS and mediaPump
	mediaNS    *tun.Netstack
	mediaPump  *tun.Pump
	mediaPeer  *tun.Peer
	innerBound netip.Addr // the address the inner SIP listeners are bound to
	// modes is what the UE offers: cfg.Modes less what it cannot carry
	// (plain ESP without a raw socket, trans on a kernel TUN). Set once
	// by startTunnel.
	modes []string

	mu sync.Mutex
	// Guarded by mu.
	callID        string
	cseq          uint32
	innerAddr     netip.Addr   // the leased inner address SIP and media use (innerLeases' IPv6 one if any; transport mode: our own address)
	gateway       netip.Addr   // the P-CSCF's inner address of innerAddr's family (transport mode: its own address)
	innerLeases   []netip.Addr // every leased inner address (IPv4 first)
	mode          string       // the mode of the newest SA set
	sas           saSets       // the SA sets towards the P-CSCF (salifecycle.go)
	mediaIn       *esp.Inbound // the media SA we receive on
	mediaOld      *esp.Inbound // the one it replaced, until mediaOldUntil
	mediaOldUntil time.Time
	curCall       *ueCall // the call we answered, if any
	registered    bool
	expires       time.Time
	portCIdx      int
	wake          chan struct{} // pokes the housekeeper

	// Test hooks (same package only): tamper with what we send, look at
	// what we receive.
	hookRES       func(*akakeys.RES)
	hookChallenge func() // a 401 arrived, before the USIM runs on it
	hookVerify    func(string) string
	hookInvite    func(*sip.Request) // an INVITE we place, before it leaves
	hookIncoming  func(*sip.Request) // an INVITE we receive
	hookNoRinging bool               // answer without a 180 (as if it were lost)
}

// NewUE checks cfg and opens the unprotected SIP socket. Nothing is sent
// until Register.
func NewUE(cfg UEConfig) (*UE, error) {
	if !cfg.PCSCF.IsValid() {
		return nil, configErrorf("UE needs the P-CSCF address")
	}
	if cfg.IMPI == "" || cfg.IMPU == "" {
		return nil, configErrorf("UE needs an IMPI and an IMPU")
	}
	var impu sip.Uri
	if err := sip.ParseUri(cfg.IMPU, &impu); err != nil || impu.Host == "" || (impu.Scheme != "sip" && impu.Scheme != "sips") {
		return nil, configErrorf("IMPU %q is not a SIP URI such as sip:alice@a.example", cfg.IMPU)
	}
	if cfg.Domain == "" {
		cfg.Domain = impu.Host
	}
	if !cfg.PCSCFESP.IsValid() {
		cfg.PCSCFESP = netip.AddrPortFrom(cfg.PCSCF.Addr(), DefaultESPPort)
	}
	if len(cfg.Offer) == 0 {
		cfg.Offer = DefaultOffer
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = DefaultModes
	}
	if err := checkModes(cfg.Modes); err != nil {
		return nil, configErrorf("modes: %v", err)
	}
	if cfg.PortS == 0 {
		cfg.PortS = DefaultUEPortS
	}
	if cfg.PortS < 1024 {
		return nil, configErrorf("UE port-s %d too low: want 1024..65535 (port-c uses port-s - 6 and - 5)", cfg.PortS)
	}
	if cfg.Expires == 0 {
		cfg.Expires = DefaultUEExpires
	}
	switch {
	case cfg.Keepalive == 0:
		cfg.Keepalive = DefaultKeepalive
	case cfg.Keepalive < 0 && cfg.Keepalive != KeepaliveOff:
		return nil, configErrorf("keepalive %v: want a positive interval, or KeepaliveOff", cfg.Keepalive)
	}
	switch {
	case cfg.Probe == 0:
		cfg.Probe = DefaultProbe
	case cfg.Probe < 0 && cfg.Probe != ProbeOff:
		return nil, configErrorf("probe %v: want a positive interval, or ProbeOff", cfg.Probe)
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.ProbeTimeout < 0 {
		return nil, configErrorf("probe timeout %v must be positive", cfg.ProbeTimeout)
	}
	if cfg.Expires < 0 {
		return nil, configErrorf("expires %v must not be negative", cfg.Expires)
	}
	if cfg.Inner > InnerDual {
		return nil, configErrorf("unknown inner address family %v", cfg.Inner)
	}
	if cfg.Answer > AnswerIgnore {
		return nil, configErrorf("unknown answer mode %v", cfg.Answer)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	u := &UE{cfg: cfg, name: "UE " + strings.TrimPrefix(cfg.IMPU, "sip:"), log: cfg.Logger, usim: cfg.USIM, sipc: new(sipCounters),
		dhcpIn: make(chan []byte, 8), dhcp6In: make(chan []byte, 8)}
	if u.usim == nil {
		var err error
		if u.usim, err = akakeys.NewUSIM(cfg.K, cfg.OPc, akakeys.USIMConfig{}); err != nil {
			return nil, err
		}
	}
	if cfg.KeyLog != nil {
		u.keylog = esp.NewKeyLog(cfg.KeyLog)
	}
	u.local = cfg.Local
	if !u.local.IsValid() {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(cfg.PCSCF))
		if err != nil {
			return nil, fmt.Errorf("sip: no route to P-CSCF %v: %w", cfg.PCSCF, err)
		}
		u.local = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		c.Close()
	}
	u.lifetime.init()
	u.wake = make(chan struct{}, 1)
	u.sas.pool = newSPIPool()
	if err := u.startOuter(); err != nil {
		u.Close()
		return nil, err
	}
	b := make([]byte, 8)
	rand.Read(b)
	u.callID = fmt.Sprintf("%x@imsec", b)
	u.cseq = binary.BigEndian.Uint32(b) & 0x7fff
	return u, nil
}

func (u *UE) now() time.Time { return u.cfg.Now() }

// emit delivers an event; never call it with u.mu held.
func (u *UE) emit(kind EventKind, to, what, detail string) {
	if u.cfg.Events != nil {
		u.cfg.Events(Event{Kind: kind, Time: u.now(), From: u.name, To: to, What: what, Detail: detail})
	}
}

// handler wraps a sipgo request handler (lifetime.handler).
func (u *UE) handler(h func(req *sip.Request, tx sip.ServerTransaction)) func(req *sip.Request, tx sip.ServerTransaction) {
	return u.lifetime.handler(h, func(req *sip.Request, tx sip.ServerTransaction) {
		res := sip.NewResponseFromRequest(req, 505, "Version Not Supported", nil)
		res.SipVersion = sipVersion
		res.SetDestination(req.Source())
		tx.Respond(res)
	})
}

// serve runs one of sipgo's Serve loops on a goroutine that Close waits
// for; it ends when its listener is closed.
func (u *UE) serve(f func() error) {
	u.goFunc(func() {
		if err := f(); err != nil && u.ctx.Err() == nil {
			u.log.Debug("sip: UE listener stopped", "err", err)
		}
	})
}

func (u *UE) pcscfName() string { return "P-CSCF " + u.cfg.Domain }

func (u *UE) startOuter() error {
	ua, err := newUA("imsec-ue", u.log, nil, false)
	if err != nil {
		return err
	}
	u.sipc.watch(ua)
	u.outerUA = ua
	if u.outerSrv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(u.log)); err != nil {
		return err
	}
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(u.local, 0)))
	if err != nil {
		return fmt.Errorf("sip: UE SIP socket: %w", err)
	}
	u.outerPC = pc
	u.serve(func() error { return u.outerSrv.ServeUDP(pc) })
	ctx, cancel := context.WithTimeout(u.ctx, 5*time.Second)
	defer cancel()
	if err := waitPool(ctx, ua, "udp", pc.LocalAddr().String()); err != nil {
		return err
	}
	u.outerCli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(u.log), sipgo.WithClientNAT(),
		sipgo.WithClientConnectionAddr(pc.LocalAddr().String()))
	return err
}

// InnerFamily is which inner addresses a UE asks its P-CSCF for.
type InnerFamily uint8

const (
	InnerIPv4 InnerFamily = iota // DHCP (RFC 2131, RFC 3456 style) only
	InnerIPv6                    // DHCPv6 (RFC 8415) only
	InnerDual                    // both; SIP and media over IPv6
)

// ParseInnerFamily parses "ipv4", "ipv6" or "dual".
func ParseInnerFamily(s string) (InnerFamily, error) {
	switch s {
	case "ipv4":
		return InnerIPv4, nil
	case "ipv6":
		return InnerIPv6, nil
	case "dual":
		return InnerDual, nil
	}
	return 0, fmt.Errorf("inner address family %q: want ipv4, ipv6 or dual", s)
}

func (f InnerFamily) String() string {
	switch f {
	case InnerIPv4:
		return "ipv4"
	case InnerIPv6:
		return "ipv6"
	case InnerDual:
		return "dual"
	}
	return fmt.Sprintf("InnerFamily(%d)", uint8(f))
}

// UEInfo is a snapshot of the UE's state.
type UEInfo struct {
	Registered bool
	InnerAddr  netip.Addr   // the inner address SIP and media use
	InnerAddrs []netip.Addr // every inner address leased (IPv4 first)
	PCSCFInner netip.Addr   // the P-CSCF's inner address of InnerAddr's family
	Expires    time.Time
	Suite      Suite            // of the active SA set
	SAs        []tun.SACounters // signalling
	MediaSAs   []tun.SACounters // the media tunnel's
}

// Info returns the UE's state and its SA counters.
func (u *UE) Info() UEInfo {
	u.mu.Lock()
	defer u.mu.Unlock()
	in := UEInfo{Registered: u.registered, InnerAddr: u.innerAddr, InnerAddrs: append([]netip.Addr(nil), u.innerLeases...),
		PCSCFInner: u.gateway, Expires: u.expires}
	if a := u.sas.active(); a != nil {
		in.Suite = a.set.Suite
	}
	if u.pump != nil {
		in.SAs = u.pump.SACounters(nil)
	}
	if u.mediaPump != nil {
		in.MediaSAs = u.mediaPump.SACounters(nil)
	}
	return in
}

// Pump gives access to the data plane's counters (nil before Register).
func (u *UE) Pump() *tun.Pump {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pump
}

// Close stops everything without de-registering, and waits for every
// goroutine the UE started and every handler still running.
func (u *UE) Close() error {
	if !u.stop() {
		u.wg.Wait()
		return nil
	}
	for _, l := range u.innerLns {
		l.Close()
	}
	if u.innerUA != nil {
		u.innerUA.Close()
	}
	if u.outerPC != nil {
		u.outerPC.Close()
	}
	if u.outerUA != nil {
		u.outerUA.Close()
	}
	if u.ep != nil {
		u.ep.Close()
	}
	if u.mediaEp != nil {
		u.mediaEp.Close()
	}
	u.wg.Wait()
	return nil
}
