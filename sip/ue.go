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
	Answer string
	// RingTime is how long an auto-answering UE rings before its 200 OK;
	// default 300 ms (negative: answer at once). Besides being what a person
	// sees, it lets the 180 travel ahead of the 200.
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

	Offer     []Suite       // default DefaultOffer
	PortS     uint16        // protected server port; port-c uses PortS-6 and PortS-5 alternately. Default 5068.
	Expires   time.Duration // asked for; default 600 s
	Keepalive time.Duration // NAT keepalive interval; default 20 s; negative: off
	// BatchPad is tun.Config.BatchPad for both tunnels' pumps (0: the
	// default; negative: no padding).
	BatchPad int

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

	// unprotected side
	outerUA  *sipgo.UserAgent
	outerSrv *sipgo.Server
	outerCli *sipgo.Client
	outerPC  net.PacketConn

	// tunnel
	dev      tun.Device
	ns       *tun.Netstack // dev, when it is one
	kernel   *tun.Kernel   // dev, when it is one
	inet     innerNet      // sockets on the inner side
	innerInj *connInjector
	pump     *tun.Pump
	peer     *tun.Peer
	dhcpIn   chan []byte
	innerUA  *sipgo.UserAgent
	inner    *sipgo.Server
	innerCli *sipgo.Client
	innerLns []io.Closer

	// media tunnel (the imsec extension; see mediatunnel.go)
	mediaNS    *tun.Netstack
	mediaPump  *tun.Pump
	mediaPeer  *tun.Peer
	mediaIn    *esp.Inbound
	curCall    *ueCall    // the call we answered, if any
	innerBound netip.Addr // the address the inner SIP listeners are bound to

	mu         sync.Mutex
	callID     string
	cseq       uint32
	inner4     netip.Addr // leased inner address
	gateway    netip.Addr // the P-CSCF's inner address
	active     *ueSet
	old        *ueSet
	registered bool
	expires    time.Time
	portCIdx   int
	closeOnce  sync.Once

	// Test hooks (same package only): tamper with what we send.
	hookRES    func(*akakeys.RES)
	hookVerify func(string) string
}

type ueSet struct {
	set    *SASet
	side   Side
	verify string // Security-Server as received, echoed in Security-Verify
}

// NewUE checks cfg and opens the unprotected SIP socket. Nothing is sent
// until Register.
func NewUE(cfg UEConfig) (*UE, error) {
	if !cfg.PCSCF.IsValid() {
		return nil, errors.New("sip: UE needs the P-CSCF address")
	}
	if cfg.IMPI == "" || cfg.IMPU == "" {
		return nil, errors.New("sip: UE needs an IMPI and an IMPU")
	}
	var impu sip.Uri
	if err := sip.ParseUri(cfg.IMPU, &impu); err != nil || impu.Host == "" {
		return nil, fmt.Errorf("sip: IMPU %q is not a SIP URI", cfg.IMPU)
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
	if cfg.PortS == 0 {
		cfg.PortS = DefaultUEPortS
	}
	if cfg.PortS < 1024 {
		return nil, fmt.Errorf("sip: UE port-s %d too low (port-c uses port-s - 6 and - 5)", cfg.PortS)
	}
	if cfg.Expires == 0 {
		cfg.Expires = DefaultUEExpires
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.RingTime == 0 {
		cfg.RingTime = 300 * time.Millisecond
	}
	switch cfg.Answer {
	case "":
		cfg.Answer = AnswerAuto
	case AnswerAuto, AnswerBusy, AnswerIgnore:
	default:
		return nil, fmt.Errorf("sip: answer mode %q: want auto, busy or ignore", cfg.Answer)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	u := &UE{cfg: cfg, name: "UE " + strings.TrimPrefix(cfg.IMPU, "sip:"), log: cfg.Logger, usim: cfg.USIM,
		dhcpIn: make(chan []byte, 8)}
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

func (u *UE) emit(to, what, detail string) { emit(u.cfg.Events, u.now(), u.name, to, what, detail) }

func (u *UE) pcscfName() string { return "P-CSCF " + u.cfg.Domain }

func (u *UE) startOuter() error {
	ua, err := newUA("imsec-ue", u.log, nil, false)
	if err != nil {
		return err
	}
	u.outerUA = ua
	if u.outerSrv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(u.log)); err != nil {
		return err
	}
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(u.local, 0)))
	if err != nil {
		return fmt.Errorf("sip: UE SIP socket: %w", err)
	}
	u.outerPC = pc
	go u.outerSrv.ServeUDP(pc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := waitPool(ctx, ua, "udp", pc.LocalAddr().String()); err != nil {
		return err
	}
	u.outerCli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(u.log), sipgo.WithClientNAT(),
		sipgo.WithClientConnectionAddr(pc.LocalAddr().String()))
	return err
}

// UEInfo is a snapshot of the UE's state.
type UEInfo struct {
	Registered bool
	InnerAddr  netip.Addr
	PCSCFInner netip.Addr
	Expires    time.Time
	EAlg, Alg  string
	SAs        []tun.SACounters // signalling
	MediaSAs   []tun.SACounters // the media tunnel's
}

// Info returns the UE's state and its SA counters.
func (u *UE) Info() UEInfo {
	u.mu.Lock()
	defer u.mu.Unlock()
	in := UEInfo{Registered: u.registered, InnerAddr: u.inner4, PCSCFInner: u.gateway, Expires: u.expires}
	if u.active != nil {
		in.EAlg, in.Alg = u.active.set.EAlg, u.active.set.Alg
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
func (u *UE) Pump() *tun.Pump { return u.pump }

// Close stops everything without de-registering.
func (u *UE) Close() error {
	u.closeOnce.Do(func() {
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
		if u.pump != nil {
			u.pump.Close()
		}
		if u.mediaPump != nil {
			u.mediaPump.Close()
		}
	})
	return nil
}
