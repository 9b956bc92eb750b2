package sip

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
)

// offer builds our Security-Client list with fresh SPIs (spi-c, spi-s,
// media) and the next port-c. The SPIs stay reserved while a set uses
// them; releaseOffer gives back those of an offer that never became one.
func (u *UE) offer() ([]Mechanism, []esp.SPI, error) {
	u.mu.Lock()
	spis, err := u.sas.pool.draw(3)
	portC := u.portC(u.portCIdx)
	u.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	spiC, spiS, mediaSPI := spis[0], spis[1], spis[2]
	// One SPI pair and port pair for every entry (RFC 3329 §2.2 lets the
	// entries share them): whichever the P-CSCF picks, the set is the same
	// but for its mode and algorithms.
	var ms []Mechanism
	for _, m := range offersFor(u.modes, u.cfg.Offer) {
		m.SPIc, m.SPIs, m.PortC, m.PortS = spiC, spiS, portC, u.cfg.PortS
		if !u.cfg.NoMedia {
			m = withParam(m, paramMediaSPI, strconv.FormatUint(uint64(mediaSPI), 10))
		}
		ms = append(ms, m)
	}
	return ms, spis, nil
}

// releaseOffer gives back the SPIs of an offer unless a set holds them.
func (u *UE) releaseOffer(spis []esp.SPI) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, ls := range u.sas.sets {
		if len(ls.spis) > 0 && ls.spis[0] == spis[0] {
			return
		}
	}
	u.sas.pool.release(spis...)
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
	// retryAfter is a 503's Retry-After (RFC 3261 §20.33): the P-CSCF
	// asks the UE not to come back sooner (TS 24.229 §5.1.1.2.1).
	retryAfter time.Duration
}

func (e *statusError) Error() string { return fmt.Sprintf("sip: %d %s", e.code, e.reason) }

// RetryAfter returns the wait a 503 asks for in its Retry-After (RFC 3261
// §20.33: seconds, perhaps followed by a comment or parameters; at most an
// hour is taken), and false for any other response or no valid value.
func RetryAfter(res *sip.Response) (time.Duration, bool) {
	h := res.GetHeader("Retry-After")
	if res.StatusCode != 503 || h == nil {
		return 0, false
	}
	v := strings.TrimSpace(h.Value())
	if i := strings.IndexAny(v, " ;("); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, false
	}
	return time.Duration(min(n, 3600)) * time.Second, true
}

// Register performs the initial registration of docs/architecture.md's Figures 2 and 3:
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
		u.innerAddr, u.innerLeases = netip.Addr{}, nil
	}
	u.mu.Unlock()
	offers, spis, err := u.offer()
	if err != nil {
		return err
	}
	defer u.releaseOffer(spis)
	contact := sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.local.String(), Port: u.outerPC.LocalAddr().(*net.UDPAddr).Port}
	local := u.outerPC.LocalAddr().(*net.UDPAddr).AddrPort()
	exp := int(u.cfg.Expires / time.Second)
	auth := u.initialAuth()
	var res *sip.Response
	for attempt := 0; ; attempt++ {
		req := u.newRegister(u.cfg.PCSCF.String(), contact, exp, offers, auth, "")
		u.emit(EvRegisterSent, u.pcscfName(), "REGISTER (unprotected)", "Security-Client: "+describeOffers(offers))
		if res, err = u.do(ctx, u.outerCli, req, local); err != nil {
			return fmt.Errorf("sip: REGISTER to %v: %w", u.cfg.PCSCF, err)
		}
		if res.StatusCode != 401 {
			return u.unexpected(res)
		}
		ck, ik, cred, err := u.answer(res, "sip:"+u.cfg.Domain)
		var sf *akakeys.SyncFailureError
		if errors.As(err, &sf) && attempt == 0 {
			u.emit(EvRegisterSent, u.pcscfName(), "REGISTER (unprotected, auts)", "SQN out of range: resynchronisation")
			auth = cred.String()
			continue
		}
		if err != nil {
			return err
		}
		return u.finishRegistration(ctx, res, offers, spis, ck, ik, cred, exp)
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
	var suites, modes []string
	for _, m := range ms {
		if s := m.Suite().String(); !slices.Contains(suites, s) {
			suites = append(suites, s)
		}
		if !slices.Contains(modes, m.EffectiveMod()) {
			modes = append(modes, m.EffectiveMod())
		}
	}
	if len(ms) == 0 {
		return ""
	}
	return fmt.Sprintf("%s, mod %s, spi-c %d spi-s %d port-c %d port-s %d", strings.Join(suites, " "), strings.Join(modes, "/"), ms[0].SPIc, ms[0].SPIs, ms[0].PortC, ms[0].PortS)
}

func (u *UE) unexpected(res *sip.Response) error {
	u.emit(EvUnexpected, "", fmt.Sprintf("got %d %s", res.StatusCode, res.Reason), "")
	if res.StatusCode == 403 {
		return fmt.Errorf("%w: %s", ErrForbidden, res.Reason)
	}
	e := &statusError{code: res.StatusCode, reason: res.Reason}
	e.retryAfter, _ = RetryAfter(res)
	return e
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
	if u.hookChallenge != nil {
		u.hookChallenge()
	}
	u.emit(EvUSIM, "", "USIM: verify AUTN (MAC-A, SQN)", "")
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
		u.emit(EvUSIM, "", "USIM: MAC-A wrong", "the network is not who it claims, or K/OPc differ")
		return ck, ik, cred, ErrNetworkAuth
	case err != nil:
		return ck, ik, cred, err
	}
	u.emit(EvUSIM, "", "USIM: RES, CK, IK computed", "")
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
func (u *UE) finishRegistration(ctx context.Context, res *sip.Response, offers []Mechanism, spis []esp.SPI, ck akakeys.CK, ik akakeys.IK, cred akakeys.Credentials, exp int) error {
	return u.finishRegistrationN(ctx, res, offers, spis, ck, ik, cred, exp, maxRechallenges)
}

// maxRechallenges is how many times the UE answers a new challenge to its
// protected REGISTER. A registrar may challenge the answer again (TS 24.229
// §5.1.1.5.1: the UE then authenticates the new challenge); Kamailio's
// ims_auth does when the answer arrives before the HSS's MAA was stored.
const maxRechallenges = 1

func (u *UE) finishRegistrationN(ctx context.Context, res *sip.Response, offers []Mechanism, spis []esp.SPI, ck akakeys.CK, ik akakeys.IK, cred akakeys.Credentials, exp int, rechallenges int) error {
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
	if srv == nil {
		return errors.New("sip: Security-Server has no ipsec-3gpp entry")
	}
	var mine *Mechanism
	for i := range offers {
		if offers[i].Suite() == srv.Suite() && offers[i].EffectiveMod() == srv.EffectiveMod() {
			mine = &offers[i]
		}
	}
	if mine == nil || srv.EffectiveProt() != "esp" {
		return fmt.Errorf("sip: P-CSCF chose %s prot=%s mod=%s, which we did not offer", srv.Suite(), srv.EffectiveProt(), srv.EffectiveMod())
	}
	set, err := NewSASet(*mine, *srv, ck, ik)
	if err != nil {
		return err
	}
	side, err := set.UESide()
	if err != nil {
		return err
	}
	ns := &liveSet{set: set, side: side, spis: spis, verify: ss.Value(), deadline: u.now().Add(DefaultTempSATimeout)}
	u.mu.Lock()
	err = u.sas.install(ns)
	u.mu.Unlock()
	if err != nil {
		return err
	}
	set.LogKeys(u.keylog, u.cfg.PCSCFESP.Addr())
	u.emit(EvSAsInstalled, "", "SAs installed", fmt.Sprintf("%s mod=%s, ESP to %v, SPIs in %#x %#x out %#x %#x",
		set.Suite, srv.EffectiveMod(), u.cfg.PCSCFESP, mine.SPIc, mine.SPIs, srv.SPIs, srv.SPIc))

	if err := u.useMode(set.Mode()); err != nil {
		u.dropSet(ns)
		return err
	}
	if TransportMode(set.Mode()) {
		if err := u.provePath(ctx); err != nil {
			u.dropSet(ns)
			return err
		}
	}
	if !u.innerAddr.IsValid() {
		if err := u.acquireAddress(ctx); err != nil {
			u.dropSet(ns)
			return err
		}
	}
	if err := u.startInner(); err != nil {
		u.dropSet(ns)
		return err
	}
	// The protected REGISTER: from our inner address and the new port-c to
	// the P-CSCF's port-s, inside the new SAs.
	dest := netip.AddrPortFrom(u.gateway, srv.PortS).String()
	contact := sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.innerAddr.String(), Port: int(mine.PortS)}
	verify := ss.Value()
	if u.hookVerify != nil {
		verify = u.hookVerify(verify)
	}
	req := u.newRegister(dest, contact, exp, offers, cred.String(), verify)
	laddr := netip.AddrPortFrom(u.innerAddr, mine.PortC)
	u.emit(EvRegisterSent, u.pcscfName(), "REGISTER (protected, RES)", fmt.Sprintf("%v -> %s inside ESP, Security-Verify echoed", laddr, dest))
	r2, err := u.sendInner(ctx, req, mine.PortC, srv.PortS)
	if err != nil {
		u.dropSet(ns)
		return fmt.Errorf("sip: protected REGISTER: %w", err)
	}
	if r2.StatusCode == 401 && rechallenges > 0 {
		// The new challenge builds a new set from the same offer: its
		// SPIs pass to it, not back to the pool.
		u.mu.Lock()
		ns.spis = nil
		u.sas.remove(ns)
		u.mu.Unlock()
		u.emit(EvUnexpected, "", "401 to the protected REGISTER", "challenged again: answering the new challenge")
		ck, ik, cred, err := u.answer(r2, "sip:"+u.cfg.Domain)
		if err != nil {
			return err
		}
		return u.finishRegistrationN(ctx, r2, offers, spis, ck, ik, cred, exp, rechallenges-1)
	}
	if r2.StatusCode != 200 {
		u.dropSet(ns)
		return u.unexpected(r2)
	}
	if exp == 0 {
		// The answer to a challenged de-registration.
		u.deregistered()
		return nil
	}
	granted := exp
	if h := r2.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil {
			granted = n
		}
	}
	u.mu.Lock()
	now := u.now()
	u.registered = true
	u.expires = now.Add(time.Duration(granted) * time.Second)
	// The 200 came through the new SAs; the old set goes once the new one
	// carries traffic, or after oldSetGrace (packets in flight on it).
	u.sas.activate(ns, u.expires.Add(DefaultSAMargin), now.Add(oldSetGrace))
	u.portCIdx++
	u.mu.Unlock()
	u.emit(EvRegistered, "", "200 OK: registered", fmt.Sprintf("inner %v, expires %ds", u.innerAddr, granted))
	if err := u.activateMedia(ctx, *mine, *srv, ck, ik); err != nil {
		// Signalling is registered either way; calls will tell if media
		// cannot get through.
		u.emit(EvMediaUnconfirm, "", "media tunnel not confirmed", err.Error())
	}
	return nil
}

// Reregister runs a new AKA over the current SAs and moves to a new SA set
// (TS 33.203 §7.4).
func (u *UE) Reregister(ctx context.Context) error {
	u.mu.Lock()
	cur := u.sas.active()
	reg := u.registered
	u.mu.Unlock()
	if !reg || cur == nil {
		return u.Register(ctx)
	}
	offers, spis, err := u.offer()
	if err != nil {
		return err
	}
	defer u.releaseOffer(spis)
	exp := int(u.cfg.Expires / time.Second)
	dest := netip.AddrPortFrom(u.gateway, cur.set.PCSCF.PortS).String()
	laddr := netip.AddrPortFrom(u.innerAddr, cur.set.UE.PortC)
	contact := sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.innerAddr.String(), Port: int(u.cfg.PortS)}
	auth := u.initialAuth()
	for attempt := 0; ; attempt++ {
		req := u.newRegister(dest, contact, exp, offers, auth, cur.verify)
		u.emit(EvRegisterSent, u.pcscfName(), "REGISTER (re-registration, protected)", "over the current SAs; new Security-Client: "+describeOffers(offers))
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
		return u.finishRegistration(ctx, res, offers, spis, ck, ik, cred, exp)
	}
}

// Deregister sends REGISTER with Expires: 0 through the SAs and deletes
// them on the 200. It carries a Security-Client as TS 24.229 §5.1.1.6.1
// says: an S-CSCF may challenge a de-registration too (Kamailio's does),
// and the answer then goes through a new temporary set, as in a
// re-registration.
func (u *UE) Deregister(ctx context.Context) error {
	u.mu.Lock()
	cur := u.sas.active()
	reg := u.registered
	u.mu.Unlock()
	if !reg || cur == nil {
		return nil
	}
	offers, spis, err := u.offer()
	if err != nil {
		return err
	}
	defer u.releaseOffer(spis)
	dest := netip.AddrPortFrom(u.gateway, cur.set.PCSCF.PortS).String()
	laddr := netip.AddrPortFrom(u.innerAddr, cur.set.UE.PortC)
	contact := sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.innerAddr.String(), Port: int(u.cfg.PortS)}
	req := u.newRegister(dest, contact, 0, offers, u.initialAuth(), cur.verify)
	u.emit(EvRegisterSent, u.pcscfName(), "REGISTER Expires: 0 (protected)", "de-registration")
	res, err := u.sendInner(ctx, req, laddr.Port(), cur.set.PCSCF.PortS)
	if err != nil {
		return fmt.Errorf("sip: de-REGISTER: %w", err)
	}
	switch res.StatusCode {
	case 200:
		u.deregistered()
		return nil
	case 401:
		ck, ik, cred, err := u.answer(res, "sip:"+u.cfg.Domain)
		if err != nil {
			return err
		}
		return u.finishRegistration(ctx, res, offers, spis, ck, ik, cred, 0)
	}
	return u.unexpected(res)
}

// deregistered deletes every SA after the 200 to a de-registration.
func (u *UE) deregistered() {
	u.reset()
	u.mu.Lock()
	media := []*esp.Inbound{u.mediaIn, u.mediaOld}
	u.mediaIn, u.mediaOld = nil, nil
	u.mu.Unlock()
	for _, in := range media {
		if in != nil {
			u.mediaPump.RemoveInbound(in.SPI())
		}
	}
	if u.mediaPeer != nil {
		u.mediaPeer.SetOutbound(nil)
	}
	u.emit(EvDeregistered, "", "200 OK: de-registered", "SAs deleted")
}
