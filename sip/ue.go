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
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/dhcp"
	"github.com/imsec/imsec/tun/udp"
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

// startTunnel brings up the device, the ESP socket and the pump (once).
func (u *UE) startTunnel() error {
	if u.pump != nil {
		return nil
	}
	var dev tun.Device
	if u.cfg.TUN != "" {
		k, err := tun.CreateKernel(u.cfg.TUN, tun.InnerMTU(1500))
		if err != nil {
			return fmt.Errorf("sip: kernel TUN %q (needs CAP_NET_ADMIN; run without --tun for the netstack): %w", u.cfg.TUN, err)
		}
		if err := k.SetUp(); err != nil {
			k.Close()
			return fmt.Errorf("sip: bring up %s: %w", u.cfg.TUN, err)
		}
		dev, u.kernel, u.inet = k, k, hostNet{}
	} else {
		ns, err := tun.NewNetstack(tun.NetstackOptions{MTU: tun.InnerMTU(1500), Name: "ue"})
		if err != nil {
			return err
		}
		dev, u.ns, u.inet = ns, ns, ns
	}
	u.dev = dev
	conn, err := udp.Listen(netip.AddrPortFrom(u.local, 0))
	if err != nil {
		dev.Close()
		return err
	}
	var pc tun.PacketConn = conn
	if u.cfg.WrapESP != nil {
		pc = u.cfg.WrapESP(conn)
	}
	u.pump, err = tun.NewPump(tun.Config{Device: dev, Conn: pc, Intercept: u.intercept, BatchPad: u.cfg.BatchPad, Logger: u.log, Now: u.cfg.Now})
	if err != nil {
		dev.Close()
		conn.Close()
		return err
	}
	ka := u.cfg.Keepalive
	if ka < 0 {
		ka = 0
	}
	all := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	u.peer, err = u.pump.AddPeer(tun.PeerConfig{Name: u.pcscfName(), Endpoint: u.cfg.PCSCFESP, Allowed: all, Routes: all, Keepalive: ka})
	return err
}

// intercept takes DHCP replies (to port 68) for the client.
func (u *UE) intercept(_ *tun.Peer, pkt []byte) bool {
	if !dhcp.IsToClient(pkt) {
		return false
	}
	select {
	case u.dhcpIn <- append([]byte(nil), pkt...):
	default:
	}
	return true
}

// portC returns the port-c for a new set: it alternates so that a new set
// never shares a port-c with the one it replaces.
func (u *UE) portC(idx int) uint16 { return u.cfg.PortS - 6 + uint16(idx%2) }

func randSPI() uint32 {
	for {
		var b [4]byte
		rand.Read(b[:])
		if v := binary.BigEndian.Uint32(b[:]); v > esp.SPIReservedMax {
			return v
		}
	}
}

// offer builds our Security-Client list with fresh SPIs and the next port-c.
func (u *UE) offer() []Mechanism {
	spiC, spiS := randSPI(), randSPI()
	for spiS == spiC {
		spiS = randSPI()
	}
	portC := u.portC(u.portCIdx)
	mediaSPI := randSPI()
	for mediaSPI == spiC || mediaSPI == spiS {
		mediaSPI = randSPI()
	}
	var ms []Mechanism
	for _, s := range u.cfg.Offer {
		m := Mechanism{Name: MechIPsec3GPP, Alg: s.Alg, EAlg: s.EAlg, Prot: "esp", Mod: ModUDPEncTun,
			SPIc: spiC, SPIs: spiS, PortC: portC, PortS: u.cfg.PortS}
		if !u.cfg.NoMedia {
			m = withParam(m, paramMediaSPI, strconv.FormatUint(uint64(mediaSPI), 10))
		}
		ms = append(ms, m)
	}
	return ms
}

// newRegister builds a REGISTER with our Call-ID and the next CSeq.
func (u *UE) newRegister(dest string, contact sip.Uri, expires int, offers []Mechanism, auth string, verify string) *sip.Request {
	domain := sip.Uri{Scheme: "sip", Host: u.cfg.Domain}
	req := sip.NewRequest(sip.REGISTER, domain)
	var impu sip.Uri
	sip.ParseUri(u.cfg.IMPU, &impu)
	u.mu.Lock()
	u.cseq++
	cseq := u.cseq
	u.mu.Unlock()
	req.AppendHeader(&sip.FromHeader{Address: impu, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}}})
	req.AppendHeader(&sip.ToHeader{Address: impu})
	cid := sip.CallIDHeader(u.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.REGISTER})
	ch := &sip.ContactHeader{Address: contact}
	ch.Params.Add("expires", strconv.Itoa(expires))
	req.AppendHeader(ch)
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
	if len(offers) > 0 {
		req.AppendHeader(sip.NewHeader("Security-Client", FormatSecurity(offers)))
		req.AppendHeader(sip.NewHeader("Require", "sec-agree"))
		req.AppendHeader(sip.NewHeader("Proxy-Require", "sec-agree"))
	}
	if verify != "" {
		req.AppendHeader(sip.NewHeader("Security-Verify", verify))
	}
	req.AppendHeader(sip.NewHeader("Supported", "path, sec-agree"))
	if auth != "" {
		req.AppendHeader(sip.NewHeader("Authorization", auth))
	}
	req.SetDestination(dest)
	return req
}

// initialAuth is the TS 24.229 §5.1.1.2 Authorization of an unprotected
// REGISTER: the IMPI, empty nonce and response.
func (u *UE) initialAuth() string {
	c := akakeys.Credentials{Username: u.cfg.IMPI, Realm: u.cfg.Domain, URI: "sip:" + u.cfg.Domain}
	return c.String()
}

// do sends an unprotected request from our SIP socket and waits for the
// final response. A request over 1300 bytes goes over TCP (RFC 3261
// §18.1.1), on a host connection sipgo dials to the P-CSCF.
func (u *UE) do(ctx context.Context, cli *sipgo.Client, req *sip.Request, laddr netip.AddrPort) (*sip.Response, error) {
	raddr, err := netip.ParseAddrPort(req.Destination())
	if err != nil {
		return nil, err
	}
	return sendRequest(ctx, cli, u.outerUA, nil, nil, req, laddr, raddr)
}

// Errors a registration reports.
var (
	ErrNetworkAuth = errors.New("sip: the network failed authentication (AUTN MAC-A wrong: wrong K/OP/OPc or AMF?)")
	ErrForbidden   = errors.New("sip: registration refused (403)")
)

// statusError is a final response that is not what we wanted.
type statusError struct {
	code   int
	reason string
}

func (e *statusError) Error() string { return fmt.Sprintf("sip: %d %s", e.code, e.reason) }

// Register performs the initial registration of the seed's Figures 2 and 3:
// unprotected REGISTER, 401 with AKA challenge and Security-Server, SAs,
// DHCP and pinhole ping through the tunnel, protected REGISTER, 200.
func (u *UE) Register(ctx context.Context) error {
	if err := u.startTunnel(); err != nil {
		return err
	}
	// A fresh registration learns its inner address again: the P-CSCF may
	// have restarted and forgotten the lease.
	u.mu.Lock()
	if !u.registered {
		u.inner4 = netip.Addr{}
	}
	u.mu.Unlock()
	offers := u.offer()
	contact := sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.local.String(), Port: u.outerPC.LocalAddr().(*net.UDPAddr).Port}
	local := u.outerPC.LocalAddr().(*net.UDPAddr).AddrPort()
	exp := int(u.cfg.Expires / time.Second)
	auth := u.initialAuth()
	var res *sip.Response
	var err error
	for attempt := 0; ; attempt++ {
		req := u.newRegister(u.cfg.PCSCF.String(), contact, exp, offers, auth, "")
		u.emit(u.pcscfName(), "REGISTER (unprotected)", "Security-Client: "+describeOffers(offers))
		if res, err = u.do(ctx, u.outerCli, req, local); err != nil {
			return fmt.Errorf("sip: REGISTER to %v: %w", u.cfg.PCSCF, err)
		}
		if res.StatusCode != 401 {
			return u.unexpected(res)
		}
		ck, ik, cred, err := u.answer(res, "sip:"+u.cfg.Domain)
		var sf *akakeys.SyncFailureError
		if errors.As(err, &sf) && attempt == 0 {
			u.emit(u.pcscfName(), "REGISTER (unprotected, auts)", "SQN out of range: resynchronisation")
			auth = cred.String()
			continue
		}
		if err != nil {
			return err
		}
		return u.finishRegistration(ctx, res, offers, ck, ik, cred, exp)
	}
}

func userOf(impu string) string {
	var uri sip.Uri
	if sip.ParseUri(impu, &uri) == nil && uri.User != "" {
		return uri.User
	}
	return "ue"
}

func describeOffers(ms []Mechanism) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.EffectiveEAlg()+"/"+m.Alg)
	}
	if len(ms) == 0 {
		return ""
	}
	return fmt.Sprintf("%s, %s, spi-c %d spi-s %d port-c %d port-s %d", strings.Join(parts, " "), ms[0].Mod, ms[0].SPIc, ms[0].SPIs, ms[0].PortC, ms[0].PortS)
}

func (u *UE) unexpected(res *sip.Response) error {
	u.emit("", fmt.Sprintf("got %d %s", res.StatusCode, res.Reason), "")
	if res.StatusCode == 403 {
		return fmt.Errorf("%w: %s", ErrForbidden, res.Reason)
	}
	return &statusError{res.StatusCode, res.Reason}
}

// answer runs the USIM on a 401: it returns CK, IK and the credentials with
// the response, or on a sync failure the credentials carrying auts and a
// *akakeys.SyncFailureError.
func (u *UE) answer(res *sip.Response, uri string) (akakeys.CK, akakeys.IK, akakeys.Credentials, error) {
	h := res.GetHeader("WWW-Authenticate")
	if h == nil {
		return akakeys.CK{}, akakeys.IK{}, akakeys.Credentials{}, errors.New("sip: 401 without WWW-Authenticate")
	}
	ch, err := akakeys.ParseChallenge(h.Value())
	if err != nil {
		return akakeys.CK{}, akakeys.IK{}, akakeys.Credentials{}, fmt.Errorf("sip: bad challenge: %w", err)
	}
	if !strings.EqualFold(ch.Algorithm, "AKAv1-MD5") {
		return akakeys.CK{}, akakeys.IK{}, akakeys.Credentials{}, fmt.Errorf("sip: challenge algorithm %q, want AKAv1-MD5", ch.Algorithm)
	}
	r, autn, _, err := akakeys.ParseNonce(ch.Nonce)
	if err != nil {
		return akakeys.CK{}, akakeys.IK{}, akakeys.Credentials{}, err
	}
	cred := akakeys.Credentials{Username: u.cfg.IMPI, Realm: ch.Realm, Nonce: ch.Nonce, URI: uri, Algorithm: "AKAv1-MD5",
		Opaque: ch.Opaque, QOP: "auth", NC: 1, CNonce: randHex(8)}
	u.emit("", "USIM: verify AUTN (MAC-A, SQN)", "")
	if u.cfg.AMF != nil && [2]byte(autn[6:8]) != *u.cfg.AMF {
		return akakeys.CK{}, akakeys.IK{}, cred, fmt.Errorf("sip: AUTN carries AMF %x, want %x", autn[6:8], u.cfg.AMF[:])
	}
	resp, ck, ik, err := u.usim.Authenticate(r, autn)
	var sf *akakeys.SyncFailureError
	switch {
	case errors.As(err, &sf):
		if e := cred.SetSyncFailure("REGISTER", sf.AUTS); e != nil {
			return ck, ik, cred, e
		}
		return ck, ik, cred, sf
	case errors.Is(err, akakeys.ErrMACFailure):
		u.emit("", "USIM: MAC-A wrong", "the network is not who it claims, or K/OPc differ")
		return ck, ik, cred, ErrNetworkAuth
	case err != nil:
		return ck, ik, cred, err
	}
	u.emit("", "USIM: RES, CK, IK computed", "")
	if u.hookRES != nil {
		u.hookRES(&resp)
	}
	if err := cred.SetResponse("REGISTER", resp[:]); err != nil {
		return ck, ik, cred, err
	}
	return ck, ik, cred, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// finishRegistration builds the SAs from the 401, and sends the protected
// REGISTER through them.
func (u *UE) finishRegistration(ctx context.Context, res *sip.Response, offers []Mechanism, ck akakeys.CK, ik akakeys.IK, cred akakeys.Credentials, exp int) error {
	ss := res.GetHeader("Security-Server")
	if ss == nil {
		return errors.New("sip: 401 without Security-Server (the P-CSCF did not agree to IPsec)")
	}
	server, err := ParseSecurity(ss.Value())
	if err != nil {
		return err
	}
	var srv *Mechanism
	for i := range server {
		if server[i].Name == MechIPsec3GPP {
			srv = &server[i]
			break
		}
	}
	if srv == nil || srv.EffectiveMod() != ModUDPEncTun {
		return errors.New("sip: Security-Server has no ipsec-3gpp mod=UDP-enc-tun entry")
	}
	var mine *Mechanism
	for i := range offers {
		if offers[i].Alg == srv.Alg && offers[i].EffectiveEAlg() == srv.EffectiveEAlg() {
			mine = &offers[i]
		}
	}
	if mine == nil {
		return fmt.Errorf("sip: P-CSCF chose %s/%s, which we did not offer", srv.EffectiveEAlg(), srv.Alg)
	}
	set, err := NewSASet(*mine, *srv, ck, ik)
	if err != nil {
		return err
	}
	side, err := set.UESide()
	if err != nil {
		return err
	}
	for _, in := range side.Inbound {
		if err := u.pump.AddInbound(u.peer, in); err != nil {
			return err
		}
	}
	ns := &ueSet{set: set, side: side, verify: ss.Value()}
	u.mu.Lock()
	prev := u.active
	u.applyOutboundLocked(ns, prev)
	u.mu.Unlock()
	set.LogKeys(u.keylog)
	u.emit("", "SAs installed", fmt.Sprintf("%s/%s mod=UDP-enc-tun, ESP to %v, SPIs in %#x %#x out %#x %#x",
		set.EAlg, set.Alg, u.cfg.PCSCFESP, mine.SPIc, mine.SPIs, srv.SPIs, srv.SPIc))

	if !u.inner4.IsValid() {
		if err := u.acquireAddress(ctx); err != nil {
			u.dropSet(ns)
			return err
		}
	}
	if err := u.startInner(); err != nil {
		return err
	}
	// The protected REGISTER: from our inner address and the new port-c to
	// the P-CSCF's port-s, inside the new SAs.
	dest := netip.AddrPortFrom(u.gateway, srv.PortS).String()
	contact := sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.inner4.String(), Port: int(mine.PortS)}
	verify := ss.Value()
	if u.hookVerify != nil {
		verify = u.hookVerify(verify)
	}
	req := u.newRegister(dest, contact, exp, offers, cred.String(), verify)
	laddr := netip.AddrPortFrom(u.inner4, mine.PortC)
	u.emit(u.pcscfName(), "REGISTER (protected, RES)", fmt.Sprintf("%v -> %s inside ESP, Security-Verify echoed", laddr, dest))
	r2, err := u.sendInner(ctx, req, mine.PortC, srv.PortS)
	if err != nil {
		u.dropSet(ns)
		return fmt.Errorf("sip: protected REGISTER: %w", err)
	}
	if r2.StatusCode != 200 {
		u.dropSet(ns)
		return u.unexpected(r2)
	}
	granted := exp
	if h := r2.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil {
			granted = n
		}
	}
	u.mu.Lock()
	u.old = prev
	u.active = ns
	u.registered = true
	u.expires = u.now().Add(time.Duration(granted) * time.Second)
	u.portCIdx++
	u.mu.Unlock()
	u.emit("", "200 OK: registered", fmt.Sprintf("inner %v, expires %ds", u.inner4, granted))
	if err := u.activateMedia(ctx, *mine, *srv, ck, ik); err != nil {
		// Signalling is registered either way; calls will tell if media
		// cannot get through.
		u.emit("", "media tunnel not confirmed", err.Error())
	}
	if prev != nil {
		// The 200 came through the new SAs; drop the old set once packets
		// in flight on it have had time to arrive.
		time.AfterFunc(2*time.Second, func() {
			u.mu.Lock()
			old := u.old
			if old == prev {
				u.old = nil
			}
			u.mu.Unlock()
			if old == prev {
				u.dropSet(prev)
				u.emit("", "old SAs deleted", "")
			}
		})
	}
	return nil
}

// activateMedia brings up (once) and rekeys the media tunnel when the
// P-CSCF agreed to it in Security-Server.
func (u *UE) activateMedia(ctx context.Context, mine, srv Mechanism, ck akakeys.CK, ik akakeys.IK) error {
	ueSPI, _, ok1 := mediaParams(mine)
	pSPI, port, ok2 := mediaParams(srv)
	if !ok1 || !ok2 || port == 0 {
		return nil // no media extension on this set
	}
	if u.mediaPump == nil {
		ns, err := tun.NewNetstack(tun.NetstackOptions{MTU: tun.InnerMTU(1500), Name: "ue-media",
			Addresses: []netip.Prefix{netip.PrefixFrom(u.inner4, 32)}})
		if err != nil {
			return err
		}
		conn, err := udp.Listen(netip.AddrPortFrom(u.local, 0))
		if err != nil {
			ns.Close()
			return err
		}
		var pc tun.PacketConn = conn
		if u.cfg.WrapMediaESP != nil {
			pc = u.cfg.WrapMediaESP(conn)
		}
		if u.mediaPump, err = tun.NewPump(tun.Config{Device: ns, Conn: pc, BatchPad: u.cfg.BatchPad, Logger: u.log, Now: u.cfg.Now}); err != nil {
			ns.Close()
			conn.Close()
			return err
		}
		u.mediaNS = ns
		ep := u.cfg.PCSCFMediaESP
		if !ep.IsValid() {
			ep = netip.AddrPortFrom(u.cfg.PCSCFESP.Addr(), port)
		}
		ka := max(u.cfg.Keepalive, 0)
		all := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		if u.mediaPeer, err = u.mediaPump.AddPeer(tun.PeerConfig{Name: u.pcscfName() + " media", Endpoint: ep, Allowed: all, Routes: all, Keepalive: ka}); err != nil {
			return err
		}
	}
	mp, cfgs, err := newMediaPair(srv.EffectiveEAlg(), srv.Alg, ck, ik, ueSPI, pSPI)
	if err != nil {
		return err
	}
	logMediaKeys(u.keylog, cfgs)
	if err := u.mediaPump.AddInbound(u.mediaPeer, mp.in); err != nil {
		return err
	}
	u.mediaPeer.SetOutbound(mp.out)
	if old := u.mediaIn; old != nil {
		time.AfterFunc(2*time.Second, func() { u.mediaPump.RemoveInbound(old.SPI()) })
	}
	u.mediaIn = mp.in
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rtt, err := u.mediaPump.Ping(pctx, u.mediaPeer, u.inner4, u.gateway, 0x1ee, uint16(ueSPI))
	if err != nil {
		return fmt.Errorf("pinhole ping through the media tunnel: %w", err)
	}
	u.emit(u.pcscfName()+" media", "ICMP echo (inside the media tunnel)", fmt.Sprintf("SPIs in %#x out %#x, to %v, answered in %v",
		ueSPI, pSPI, u.mediaPeer.Endpoint(), rtt.Round(time.Microsecond)))
	return nil
}

// applyOutboundLocked installs the outbound selectors of the newest set
// first, then the previous one, with the newest set's default.
func (u *UE) applyOutboundLocked(sets ...*ueSet) {
	var sel []tun.OutboundSA
	var def *esp.Outbound
	for _, s := range sets {
		if s == nil {
			continue
		}
		sel = append(sel, s.side.Outbound...)
		if def == nil {
			def = s.side.Default
		}
	}
	u.peer.SetOutboundSAs(def, sel)
}

// dropSet removes a set's inbound SAs and its outbound selectors.
func (u *UE) dropSet(s *ueSet) {
	for _, in := range s.side.Inbound {
		u.pump.RemoveInbound(in.SPI())
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	var keep []*ueSet
	for _, x := range []*ueSet{u.active, u.old} {
		if x != nil && x != s {
			keep = append(keep, x)
		}
	}
	u.applyOutboundLocked(keep...)
}

// acquireAddress runs DHCP through the tunnel, then pings the P-CSCF's
// inner address (the pinhole ping: it also proves the path both ways).
func (u *UE) acquireAddress(ctx context.Context) error {
	cl, err := dhcp.NewClient([]byte(u.cfg.IMPI))
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, defaultDHCPTimeout)
	defer cancel()
	u.emit(u.pcscfName(), "DHCPDISCOVER (inside ESP)", "first packet through the SAs: opens the NAT pinhole")
	lease, err := cl.Acquire(dctx, func(p []byte) error { return u.pump.Inject(u.peer, p) }, u.dhcpIn)
	if err != nil {
		return fmt.Errorf("sip: no inner address over the tunnel: %w", err)
	}
	if err := u.addAddress(lease.Addr); err != nil {
		return err
	}
	u.mu.Lock()
	u.inner4, u.gateway = lease.Addr.Addr(), lease.Router
	u.mu.Unlock()
	u.emit("", "inner address "+lease.Addr.String(), "from DHCP over the tunnel; P-CSCF inner "+lease.Router.String())
	pctx, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	rtt, err := u.pump.Ping(pctx, u.peer, lease.Addr.Addr(), lease.Router, 0x1ec, 1)
	if err != nil {
		return fmt.Errorf("sip: pinhole ping to %v: %w", lease.Router, err)
	}
	u.emit(u.pcscfName(), "ICMP echo (inside ESP)", fmt.Sprintf("pinhole ping answered in %v", rtt.Round(time.Microsecond)))
	return nil
}

// addAddress puts the leased address on the inner side (and on the media
// tunnel's netstack, if any). An address already there is fine: a fresh
// start often gets the same lease back.
func (u *UE) addAddress(p netip.Prefix) error {
	has := func(ps []netip.Prefix) bool {
		for _, q := range ps {
			if q.Addr() == p.Addr() {
				return true
			}
		}
		return false
	}
	if u.mediaNS != nil && !has(u.mediaNS.Addresses()) {
		if err := u.mediaNS.AddAddress(netip.PrefixFrom(p.Addr(), 32)); err != nil {
			return err
		}
	}
	if u.ns != nil {
		if has(u.ns.Addresses()) {
			return nil
		}
		return u.ns.AddAddress(p)
	}
	if err := u.kernel.AddAddress(p); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("sip: address %v on %s: %w", p, u.kernel.Name(), err)
	}
	return nil
}

// stopInner closes the SIP listeners on the inner side (the address they
// were bound to is gone).
func (u *UE) stopInner() {
	for _, l := range u.innerLns {
		l.Close()
	}
	u.innerLns = nil
	if u.innerUA != nil {
		u.innerUA.Close()
		u.innerUA = nil
	}
}

// startInner serves SIP on our protected ports on the inner side (UDP on
// port-s and both port-c, TCP on port-s and for connections we dial).
func (u *UE) startInner() error {
	if u.innerUA != nil && u.innerBound == u.inner4 {
		return nil
	}
	u.stopInner()
	u.innerBound = u.inner4
	ua, err := newUA("imsec-ue", u.log, nil, true)
	if err != nil {
		return err
	}
	u.innerUA = ua
	if u.inner, err = sipgo.NewServer(ua, sipgo.WithServerLogger(u.log)); err != nil {
		return err
	}
	u.inner.OnInvite(u.onInvite)
	u.inner.OnAck(u.onAck)
	u.inner.OnBye(u.onBye)
	u.inner.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		u.emit(u.pcscfName(), "200 OK to OPTIONS", "inside ESP, from port-s over "+req.Transport())
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.SetDestination(req.Source())
		tx.Respond(res)
	})
	if u.innerCli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(u.log), sipgo.WithClientHostname(u.inner4.String())); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, port := range []uint16{u.cfg.PortS, u.portC(0), u.portC(1)} {
		ap := netip.AddrPortFrom(u.inner4, port)
		pc, err := u.inet.ListenUDP(ap)
		if err != nil {
			return err
		}
		u.innerLns = append(u.innerLns, pc)
		go u.inner.ServeUDP(pc)
		if err := waitPool(ctx, ua, "udp", ap.String()); err != nil {
			return err
		}
	}
	ln, err := u.inet.ListenTCP(netip.AddrPortFrom(u.inner4, u.cfg.PortS))
	if err != nil {
		return err
	}
	u.innerLns = append(u.innerLns, ln)
	go u.inner.ServeTCP(ln)
	u.innerInj = newConnInjector(&net.TCPAddr{IP: u.inner4.AsSlice(), Port: int(u.portC(0))})
	u.innerLns = append(u.innerLns, u.innerInj)
	go u.inner.ServeTCP(u.innerInj)
	return nil
}

// sendInner sends a request inside the tunnel from our port-c to the
// P-CSCF's port-s (over TCP when it is large).
func (u *UE) sendInner(ctx context.Context, req *sip.Request, portC, pcscfPortS uint16) (*sip.Response, error) {
	return sendRequest(ctx, u.innerCli, u.innerUA, u.inet, u.innerInj, req,
		netip.AddrPortFrom(u.inner4, portC), netip.AddrPortFrom(u.gateway, pcscfPortS))
}

// Reregister runs a new AKA over the current SAs and moves to a new SA set
// (TS 33.203 §7.4).
func (u *UE) Reregister(ctx context.Context) error {
	u.mu.Lock()
	cur := u.active
	reg := u.registered
	u.mu.Unlock()
	if !reg || cur == nil {
		return u.Register(ctx)
	}
	offers := u.offer()
	exp := int(u.cfg.Expires / time.Second)
	dest := netip.AddrPortFrom(u.gateway, cur.set.PCSCF.PortS).String()
	laddr := netip.AddrPortFrom(u.inner4, cur.set.UE.PortC)
	contact := sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.inner4.String(), Port: int(u.cfg.PortS)}
	auth := u.initialAuth()
	for attempt := 0; ; attempt++ {
		req := u.newRegister(dest, contact, exp, offers, auth, cur.verify)
		u.emit(u.pcscfName(), "REGISTER (re-registration, protected)", "over the current SAs; new Security-Client: "+describeOffers(offers))
		res, err := u.sendInner(ctx, req, laddr.Port(), cur.set.PCSCF.PortS)
		if err != nil {
			return fmt.Errorf("sip: re-REGISTER: %w", err)
		}
		if res.StatusCode != 401 {
			return u.unexpected(res)
		}
		ck, ik, cred, err := u.answer(res, "sip:"+u.cfg.Domain)
		var sf *akakeys.SyncFailureError
		if errors.As(err, &sf) && attempt == 0 {
			auth = cred.String()
			continue
		}
		if err != nil {
			return err
		}
		return u.finishRegistration(ctx, res, offers, ck, ik, cred, exp)
	}
}

// Deregister sends REGISTER with Expires: 0 through the SAs and deletes
// them on the 200.
func (u *UE) Deregister(ctx context.Context) error {
	u.mu.Lock()
	cur := u.active
	reg := u.registered
	u.mu.Unlock()
	if !reg || cur == nil {
		return nil
	}
	dest := netip.AddrPortFrom(u.gateway, cur.set.PCSCF.PortS).String()
	laddr := netip.AddrPortFrom(u.inner4, cur.set.UE.PortC)
	contact := sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.inner4.String(), Port: int(u.cfg.PortS)}
	req := u.newRegister(dest, contact, 0, nil, "", cur.verify)
	u.emit(u.pcscfName(), "REGISTER Expires: 0 (protected)", "de-registration")
	res, err := u.sendInner(ctx, req, laddr.Port(), cur.set.PCSCF.PortS)
	if err != nil {
		return fmt.Errorf("sip: de-REGISTER: %w", err)
	}
	if res.StatusCode != 200 {
		return u.unexpected(res)
	}
	u.reset()
	if u.mediaIn != nil {
		u.mediaPump.RemoveInbound(u.mediaIn.SPI())
		u.mediaPeer.SetOutbound(nil)
		u.mediaIn = nil
	}
	u.emit("", "200 OK: de-registered", "SAs deleted")
	return nil
}

// Ping sends an ICMP echo to the P-CSCF's inner address through the
// netstack and the tunnel.
func (u *UE) Ping(ctx context.Context, seq int) (time.Duration, error) {
	u.mu.Lock()
	src, dst := u.inner4, u.gateway
	u.mu.Unlock()
	if !dst.IsValid() {
		return 0, errors.New("sip: no inner address yet")
	}
	if u.ns != nil {
		return u.ns.Ping(ctx, dst, seq, []byte("imsec"))
	}
	return u.pump.Ping(ctx, u.peer, src, dst, 0x1ed, uint16(seq))
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
