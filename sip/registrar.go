package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
)

// The registrar: REGISTER on the unprotected port (the first AKA run,
// with or without sec-agree) and on the protected port-s (the answer
// through the temporary SAs, re-registration, de-registration), as TS
// 24.229 §5.2.2 and TS 33.203 §6-7 describe the P-CSCF's part. The SA sets
// themselves live in salifecycle.go and pcscf_sas.go.

// registerTimeout bounds one REGISTER's work (the HSS round trips).
const registerTimeout = 10 * time.Second

// challenge is an AKA challenge sent and not yet answered.
type challenge struct {
	key    pendingKey
	v      akakeys.Vector
	nonce  string
	set    *liveSet    // the temporary set it installed; nil without sec-agree
	server []Mechanism // the Security-Server list sent
	issued time.Time
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
func requestExpires(req *sip.Request) int64 {
	parse := func(v string) (int64, bool) {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			// RFC 3261 §20.19: values too large to represent count as the
			// largest; anything else is no value at all.
			if errors.Is(err, strconv.ErrRange) {
				return 1<<62 - 1, true
			}
			return 0, false
		}
		return int64(min(n, 1<<62-1)), true
	}
	if c := req.Contact(); c != nil {
		if v, ok := c.Params.Get("expires"); ok {
			if n, ok := parse(v); ok {
				return n
			}
		}
	}
	if h := req.GetHeader("Expires"); h != nil {
		if n, ok := parse(h.Value()); ok {
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

// refuse answers a REGISTER with a refusal and says why on the ladder.
func (s *Server) refuse(tx sip.ServerTransaction, req *sip.Request, outer bool, kind EventKind, code int, reason, why string, hdrs ...sip.Header) {
	s.emit(kind, "", fmt.Sprintf("%d %s", code, reason), why)
	s.respond(tx, req, code, reason, outer, hdrs...)
}

func (s *Server) onOuterRegister(req *sip.Request, tx sip.ServerTransaction) {
	defer s.ovl.enter()()
	ctx, cancel := context.WithTimeout(s.ctx, registerTimeout)
	defer cancel()
	src := parseAddrPort(req.Source())
	// The source's token first: past its rate, nothing else is done.
	s.mu.Lock()
	ok := s.limits.allow(src.Addr(), s.now())
	s.mu.Unlock()
	if !ok {
		s.overloaded.Add(1)
		s.respond(tx, req, 503, "Service Unavailable", true, sip.NewHeader("Retry-After", retryAfter))
		return
	}
	to := req.To()
	if to == nil || req.From() == nil || req.Via() == nil || req.CallID() == nil || req.CSeq() == nil {
		s.refuse(tx, req, true, EvBadRequest, 400, "Bad Request", "To, From, Via, Call-ID and CSeq are mandatory (RFC 3261 §8.1.1)")
		return
	}
	impu := aor(to.Address)
	via := req.Via()
	// An IPv6 sent-by may come bracketed and in any of its spellings: the
	// addresses are compared, not the strings.
	viaHost := strings.TrimSuffix(strings.TrimPrefix(via.Host, "["), "]")
	viaAddr, viaErr := netip.ParseAddr(viaHost)
	natted := viaErr != nil || viaAddr.Unmap() != src.Addr() || (via.Port != 0 && via.Port != int(src.Port()))
	if s.tracing() {
		detail := "unprotected, from " + src.String()
		if natted {
			detail += fmt.Sprintf(", NAT detected: Via %s != source %s, nathelper on", net.JoinHostPort(viaHost, strconv.Itoa(via.Port)), src)
		}
		s.emitEvent(Event{Kind: EvRegisterReceived, What: "received REGISTER " + impu, Detail: detail, Addr: src, Transport: req.Transport(), NAT: natted})
	}

	var cred *akakeys.Credentials
	if h := req.GetHeader("Authorization"); h != nil {
		c, err := akakeys.ParseAuthorization(h.Value())
		if err != nil {
			s.respond(tx, req, 400, "Bad Authorization", true)
			return
		}
		cred = &c
	}
	if (cred == nil || cred.Response == "") && !strings.EqualFold(req.Transport(), "UDP") {
		// It would draw a new challenge: the work overload control sheds
		// (over UDP shedFilter has decided already, statelessly).
		now := s.now()
		why, sig := s.ovl.shedReason(now, s.ovl.inFlight.Load()-1, len(s.dhcpIn), 0)
		s.ovl.pace.count(now, why != "")
		if why != "" {
			s.shed(why, sig)
			s.respond(tx, req, 503, "Service Unavailable", true, sip.NewHeader("Retry-After", s.ovl.retryAfter(now)))
			return
		}
	}
	if s.proxying() {
		s.proxyOuterRegister(ctx, tx, req, src, natted, impu, cred)
		return
	}
	impi := ""
	if cred != nil && cred.Username != "" {
		// The IMPI the UE names must own the IMPU it registers: otherwise
		// any subscriber could register as anyone (and take their calls).
		impi = cred.Username
		impus, err := s.cfg.HSS.IMPUs(ctx, impi)
		if err != nil {
			s.refuse(tx, req, true, EvUnknownIdentity, 403, "Forbidden", "unknown IMPI "+impi)
			return
		}
		if !impuIn(impu, impus) {
			s.refuse(tx, req, true, EvIdentityMismatch, 403, "Forbidden", impu+" is not a public identity of "+impi)
			return
		}
	} else {
		var err error
		if impi, err = s.cfg.HSS.LookupIMPU(ctx, impu); err != nil {
			s.refuse(tx, req, true, EvUnknownIdentity, 403, "Forbidden", "unknown IMPU "+impu)
			return
		}
	}
	offers, hasSec, ok := s.clientOffers(tx, req)
	if !ok {
		return
	}
	exp := requestExpires(req)

	s.mu.Lock()
	reg := s.regLocked(impi, impu)
	defer func() {
		s.mu.Lock()
		s.releaseLocked(reg)
		s.unlock()
	}()
	reg.source, reg.natted = src, natted

	key := pendingKey{src: src, callID: req.CallID().Value()}

	// An answer to a plain (no sec-agree) challenge: the one sent to this
	// source and Call-ID.
	if pend := reg.pendingByKey(key); cred != nil && cred.Response != "" && pend != nil && !hasSec && s.cfg.IPsec == IPsecOptional {
		if cred.HasAUTS {
			s.unlock()
			s.resyncAndChallenge(ctx, tx, req, reg, key, cred, nil, true)
			return
		}
		reg.forget(pend)
		if cred.Nonce != pend.nonce || !s.digestBound(cred, req, impi) || !akakeys.Verify(cred, "REGISTER", pend.v.XRES) {
			s.unlock()
			s.refuse(tx, req, true, EvWrongResponse, 403, "Forbidden", "wrong digest response")
			return
		}
		s.consumedLocked(reg, pend.v)
		s.unlock()
		s.acceptPlain(ctx, tx, req, reg, exp)
		return
	}
	s.unlock()

	var chosen Mechanism
	var err error
	if hasSec {
		if chosen, err = s.policyFor(impi, src.Addr()).Choose(offers, natted); err != nil {
			s.refuse(tx, req, true, EvNoCommonSecurity, 494, "Security Agreement Required", err.Error(),
				sip.NewHeader("Security-Server", FormatSecurity(s.serverOffers())))
			return
		}
	}
	if cred != nil && cred.HasAUTS {
		s.resyncAndChallenge(ctx, tx, req, reg, key, cred, offerPtr(hasSec, chosen), true)
		return
	}
	s.challenge(ctx, tx, req, reg, key, offerPtr(hasSec, chosen), akakeys.Vector{}, true)
}

// clientOffers reads an unprotected REGISTER's Security-Client: 400 for a
// malformed one, 421 for none when IPsec is required (both answered here,
// ok false).
func (s *Server) clientOffers(tx sip.ServerTransaction, req *sip.Request) (offers []Mechanism, hasSec, ok bool) {
	offers, hasSec, err := securityHeaders(req, "Security-Client")
	if err == nil {
		err = checkOffers(offers)
	}
	if err != nil {
		s.refuse(tx, req, true, EvBadRequest, 400, "Bad Security-Client", err.Error())
		return nil, false, false
	}
	if !hasSec && s.cfg.IPsec == IPsecRequired {
		s.refuse(tx, req, true, EvIPsecRequired, 421, "Extension Required", "no Security-Client and --ipsec required",
			sip.NewHeader("Require", "sec-agree"))
		return nil, false, false
	}
	return offers, hasSec, true
}

func offerPtr(ok bool, m Mechanism) *Mechanism {
	if !ok {
		return nil
	}
	return &m
}

// serverOffers is what a 494 lists: our modes and algorithms, without
// SPIs or ports.
func (s *Server) serverOffers() []Mechanism { return offersFor(s.cfg.Modes, s.cfg.Preference) }

// policy is how this P-CSCF picks among a UE's offers.
func (s *Server) policy() Policy { return Policy{Modes: s.cfg.Modes, Suites: s.cfg.Preference} }

// policyFor is the policy for a REGISTER of impi from src: without the
// transport modes if src is already another IMPI's address inside its SAs
// (a transport mode UE is known by its address, and two UEs behind one NAT
// share one).
func (s *Server) policyFor(impi string, src netip.Addr) Policy {
	p := s.policy()
	s.mu.Lock()
	other := s.byAddr[src.Unmap()]
	s.mu.Unlock()
	if other != nil && other.impi != impi {
		p.Modes = slices.DeleteFunc(slices.Clone(p.Modes), TransportMode)
	}
	return p
}

// regNATted reports whether reg's last unprotected REGISTER came through
// a NAT (its Via differed from its source).
func (s *Server) regNATted(reg *registration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return reg.natted
}

// resyncAndChallenge handles an auts: the HSS checks MAC-S, recovers
// SQN_MS, and hands a fresh vector for a new challenge.
func (s *Server) resyncAndChallenge(ctx context.Context, tx sip.ServerTransaction, req *sip.Request, reg *registration, key pendingKey, cred *akakeys.Credentials, offer *Mechanism, outer bool) {
	s.mu.Lock()
	pend := reg.pendingByKey(key)
	s.mu.Unlock()
	if pend == nil || cred.Nonce != pend.nonce {
		s.refuse(tx, req, outer, EvStaleNonce, 403, "Forbidden", "auts for an unknown nonce")
		return
	}
	s.emit(EvHSSResync, "HSS", "resync", "auts from the UE: SQN out of range")
	v, err := s.cfg.HSS.Resync(ctx, reg.impi, pend.v.RAND, cred.AUTS)
	if err != nil {
		s.refuse(tx, req, outer, EvHSSError, 403, "Forbidden", "resync refused: "+err.Error())
		return
	}
	s.emit(EvHSSResynced, "", "HSS resynchronised", fmt.Sprintf("next SQN %x", v.SQN))
	s.mu.Lock()
	if reg.vector != nil && reg.vector.v.RAND == pend.v.RAND {
		reg.vector = nil // the USIM refused it: no other challenge may reuse it
	}
	s.mu.Unlock()
	s.challenge(ctx, tx, req, reg, key, offer, v, outer)
}

// sharedVector returns the IMPI's unused vector for another unprotected
// challenge, if it has one still fresh. Without one, the first caller is
// told to draw it (draw true: it must close reg.drawing when done), and
// callers meanwhile wait for that draw instead of drawing their own: a
// flood of concurrent REGISTERs for one IMPI burns one SQN, not one each.
// ok is false when ctx ended while waiting.
func (s *Server) sharedVector(ctx context.Context, reg *registration) (v akakeys.Vector, draw, ok bool) {
	for {
		s.mu.Lock()
		if v, ok := s.sharedVectorLocked(reg); ok {
			s.mu.Unlock()
			return v, false, true
		}
		wait := reg.drawing
		if wait == nil {
			reg.drawing = make(chan struct{})
			s.mu.Unlock()
			return akakeys.Vector{}, true, true
		}
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return akakeys.Vector{}, false, false
		}
	}
}

// sharedVectorLocked returns the IMPI's unused vector for another
// unprotected challenge, if it has one still fresh.
func (s *Server) sharedVectorLocked(reg *registration) (akakeys.Vector, bool) {
	if reg.vector == nil || s.now().Sub(reg.vector.issued) > s.cfg.TempSATimeout {
		return akakeys.Vector{}, false
	}
	return reg.vector.v, true
}

// consumedLocked retires a vector the UE answered: no challenge may use it
// again, so the challenges still pending with it (sent to other sources, or
// stale) go, with their temporary sets.
func (s *Server) consumedLocked(reg *registration, v akakeys.Vector) {
	if reg.vector != nil && reg.vector.v.RAND == v.RAND {
		reg.vector = nil
	}
	for _, ch := range slices.Clone(reg.pending) {
		if ch.v.RAND == v.RAND {
			reg.forget(ch)
			if ch.set != nil && ch.set.state == saTemporary {
				reg.sas.remove(ch.set)
			}
		}
	}
}

// challenge issues a 401 with a vector and, with sec-agree, installs a
// temporary SA set. The vector is v if given (after a resynchronisation);
// on the unprotected side, the IMPI's unused vector if it has one (so that
// a flood of REGISTERs for an IMPI draws one vector, not one each); else a
// fresh one from the HSS.
func (s *Server) challenge(ctx context.Context, tx sip.ServerTransaction, req *sip.Request, reg *registration, key pendingKey, offer *Mechanism, v akakeys.Vector, outer bool) {
	drawing := false // this handler draws the IMPI's shared vector
	if v == (akakeys.Vector{}) && outer {
		var ok bool
		if v, drawing, ok = s.sharedVector(ctx, reg); !ok {
			s.refuse(tx, req, outer, EvHSSError, 503, "Service Unavailable", "no vector in time")
			return
		}
	}
	if v == (akakeys.Vector{}) {
		var err error
		v, err = s.cfg.HSS.Vector(ctx, reg.impi)
		if drawing {
			s.mu.Lock()
			if err == nil {
				reg.vector = &sharedVector{v: v, issued: s.now()}
			}
			close(reg.drawing)
			reg.drawing = nil
			s.mu.Unlock()
		}
		if err != nil {
			s.refuse(tx, req, outer, EvHSSError, 403, "Forbidden", "HSS: "+err.Error())
			return
		}
		if s.tracing() {
			s.emit(EvHSSVector, "HSS", "MAR: vector for "+reg.impi, fmt.Sprintf("SQN %x", v.SQN))
			s.emitEvent(Event{Kind: EvHSSVector, What: "MAA: RAND, AUTN, XRES, CK, IK"})
		}
	}
	nonce := akakeys.BuildNonce(v.RAND, v.AUTN, nil)
	c := akakeys.Challenge{Realm: s.cfg.Domain, Nonce: nonce, Algorithm: "AKAv1-MD5", QOP: "auth"}
	s.sendChallenge(tx, req, reg, key, offer, v, nonce, outer, func(hs ...sip.Header) {
		s.respond(tx, req, 401, "Unauthorized", outer, append([]sip.Header{sip.NewHeader("WWW-Authenticate", c.String())}, hs...)...)
	})
}

// sendChallenge records a challenge (vector v, sent as nonce) to key,
// installs its temporary SA set when the UE offered sec-agree, and sends
// the 401 by reply, with the Security-Server to add. The registrar role
// builds the 401 itself; the proxy role relays the S-CSCF's.
func (s *Server) sendChallenge(tx sip.ServerTransaction, req *sip.Request, reg *registration, key pendingKey, offer *Mechanism, v akakeys.Vector, nonce string, outer bool, reply func(...sip.Header)) {
	ch := &challenge{key: key, v: v, nonce: nonce, issued: s.now()}
	var secHdr sip.Header
	s.mu.Lock()
	// The new challenge replaces one to the same source and Call-ID; past
	// the bounds of Limits, another source's challenges stay (the real UE's
	// among them) and the flooding source's own go first.
	if old := reg.pendingByKey(key); old != nil {
		reg.forget(old)
		if old.set != nil && old.set.state == saTemporary {
			reg.sas.remove(old.set)
		}
	}
	perSource, perIMPI := s.cfg.Limits.PendingPerSource, s.cfg.Limits.PendingPerIMPI
	if s.cfg.Limits.Off {
		perSource = perIMPI
	}
	if !reg.makeRoomLocked(key.src.Addr(), perSource, perIMPI) {
		s.unlock()
		s.overloaded.Add(1)
		s.refuse(tx, req, outer, EvOverload, 503, "Service Unavailable", "too many pending challenges for "+reg.impi, sip.NewHeader("Retry-After", retryAfter))
		return
	}
	if offer != nil {
		set, err := s.installTemporaryLocked(reg, ch, *offer, v, outer)
		if err != nil {
			s.unlock()
			s.overloaded.Add(1)
			s.refuse(tx, req, outer, EvOverload, 503, "Service Unavailable", err.Error(), sip.NewHeader("Retry-After", retryAfter))
			return
		}
		ch.set = set
		ch.server = []Mechanism{set.set.PCSCF}
		secHdr = sip.NewHeader("Security-Server", FormatSecurity(ch.server))
	}
	reg.pending = append(reg.pending, ch)
	s.unlock()
	var hdrs []sip.Header
	detail := "RAND, AUTN in nonce"
	if secHdr != nil {
		hdrs = append(hdrs, secHdr)
		detail += "; Security-Server: " + secHdr.Value()
	}
	s.emit(EvChallenge, "UE "+reg.impu, "401 Unauthorized", detail)
	reply(hdrs...)
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
func (s *Server) acceptPlain(ctx context.Context, tx sip.ServerTransaction, req *sip.Request, reg *registration, exp int64) {
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
	s.unlock()
	if granted == 0 {
		s.emit(EvDeregistered, "UE "+reg.impu, "200 OK", "de-registered (no IPsec)")
	} else {
		s.emit(EvRegistered, "UE "+reg.impu, "200 OK", fmt.Sprintf("registered without IPsec (--ipsec optional), expires %v", granted))
	}
	s.respond(tx, req, 200, "OK", true, s.okHeaders(req, reg, impus, granted)...)
}

// grant clamps the requested Expires (seconds; -1 for none) to
// [MinExpires, MaxExpires]; 0 means de-register.
func (s *Server) grant(exp int64) time.Duration {
	if exp == 0 {
		return 0
	}
	d := s.cfg.Expires
	if exp > 0 {
		// Compare in seconds: a huge Expires must not overflow Duration.
		if exp > int64(s.cfg.MaxExpires/time.Second) {
			return s.cfg.MaxExpires
		}
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
		at := s.SIPAddr()
		if reg.protected {
			at = netip.AddrPortFrom(s.innerFor(parseAddrPort(req.Source()).Addr()), s.cfg.PortS)
		}
		route := "<sip:orig@" + at.String() + ";lr>"
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

func (s *Server) onInnerRegister(req *sip.Request, tx sip.ServerTransaction) {
	defer s.ovl.enter()()
	ctx, cancel := context.WithTimeout(s.ctx, registerTimeout)
	defer cancel()
	src := parseAddrPort(req.Source())
	s.mu.Lock()
	reg := s.byAddr[src.Addr()]
	if reg != nil {
		reg.busy++
		defer func() {
			s.mu.Lock()
			s.releaseLocked(reg)
			s.unlock()
		}()
	}
	s.mu.Unlock()
	if reg == nil || req.To() == nil || aor(req.To().Address) != reg.impu {
		s.respond(tx, req, 403, "Forbidden", false)
		return
	}
	// Which SA set did it come through? The UE sends from the set's port-c.
	key := pendingKey{src: src}
	if cid := req.CallID(); cid != nil {
		key.callID = cid.Value()
	}
	s.mu.Lock()
	reg.sas.prove() // the request came through one of the sets: answers go back through it
	via := reg.sas.byUEPortC(src.Port())
	var viaState saState
	var viaID int
	if via != nil {
		viaState, viaID = via.state, via.id
	}
	// The challenge this answers: the one whose temporary set it came
	// through, else the one sent to this address and Call-ID (an auts, or
	// an answer through the wrong set).
	pend := reg.pendingBySet(via)
	if pend == nil {
		pend = reg.pendingByKey(key)
	}
	s.mu.Unlock()
	if via == nil {
		s.refuse(tx, req, false, EvWrongSA, 403, "Forbidden", "protected REGISTER from a port-c of no SA set")
		return
	}
	exp := requestExpires(req)
	if s.tracing() {
		s.emitEvent(Event{Kind: EvRegisterReceived, What: "received REGISTER " + reg.impu,
			Detail: fmt.Sprintf("protected (SA set %d, %s), from %s", viaID, viaState, src), Addr: src, Transport: req.Transport()})
	}

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
	if s.proxying() {
		s.proxyInnerRegister(ctx, tx, req, reg, key, via, pend, answering, exp)
		return
	}

	// De-registration over an established set needs no new AKA run: the
	// request is integrity protected.
	if exp == 0 && viaState == saActive && !answering {
		s.deregister(tx, req, reg)
		return
	}
	if !answering {
		// Re-registration: a new AKA run and a new SA set (TS 33.203 §7.4).
		offers, hasSec, err := securityHeaders(req, "Security-Client")
		if err == nil {
			err = checkOffers(offers)
		}
		if err != nil || !hasSec {
			s.respond(tx, req, 400, "Security-Client required on the protected port", false)
			return
		}
		chosen, err := s.policy().Choose(offers, s.regNATted(reg))
		if err != nil {
			s.respond(tx, req, 494, "Security Agreement Required", false)
			return
		}
		s.challenge(ctx, tx, req, reg, key, &chosen, akakeys.Vector{}, false)
		return
	}
	if cred.HasAUTS {
		offers, _, _ := securityHeaders(req, "Security-Client")
		chosen, err := s.policy().Choose(offers, s.regNATted(reg))
		if err != nil {
			s.respond(tx, req, 494, "Security Agreement Required", false)
			return
		}
		s.resyncAndChallenge(ctx, tx, req, reg, pend.key, cred, &chosen, false)
		return
	}
	// The answer must come through the set it was challenged for.
	if pend.set == nil || via != pend.set {
		s.failChallenge(reg, pend)
		s.refuse(tx, req, false, EvWrongSA, 403, "Forbidden", "answer not sent through the new SAs")
		return
	}
	verify, _, err := securityHeaders(req, "Security-Verify")
	if err != nil || !VerifyMatches(verify, pend.server) {
		s.failChallenge(reg, pend)
		s.refuse(tx, req, false, EvVerifyMismatch, 403, "Forbidden", "Security-Verify does not match the Security-Server sent (bid-down?)")
		return
	}
	if s.hookRechallenge != nil && s.hookRechallenge() {
		// Tests: challenge the answer again, as an S-CSCF may.
		s.failChallenge(reg, pend)
		offers, _, _ := securityHeaders(req, "Security-Client")
		if chosen, err := s.policy().Choose(offers, s.regNATted(reg)); err == nil {
			s.challenge(ctx, tx, req, reg, key, &chosen, akakeys.Vector{}, false)
			return
		}
	}
	if !s.digestBound(cred, req, reg.impi) || !akakeys.Verify(cred, "REGISTER", pend.v.XRES) {
		s.failChallenge(reg, pend)
		s.refuse(tx, req, false, EvWrongResponse, 403, "Forbidden", "RES != XRES (or the digest names another realm, user or URI)")
		return
	}
	s.emit(EvAuthenticated, "", "RES == XRES", "SA set "+strconv.Itoa(viaID)+" established")
	impus, _ := s.cfg.HSS.IMPUs(ctx, reg.impi)
	granted := s.grant(exp)
	if granted == 0 {
		granted = s.cfg.MinExpires
	}
	s.activate(reg, pend, via, req, impus, granted)
	if s.tracing() {
		s.emit(EvRegistered, "UE "+reg.impu, "200 OK", fmt.Sprintf("expires %v, SA lifetime %v", granted, granted+DefaultSAMargin))
	}
	s.respond(tx, req, 200, "OK", false, s.okHeaders(req, reg, impus, granted)...)
}

// activate registers reg after the answer to pend came through its
// temporary set via: the set becomes active, and its media SAs with it.
func (s *Server) activate(reg *registration, pend *challenge, via *liveSet, req *sip.Request, impus []string, granted time.Duration) {
	s.mu.Lock()
	defer s.unlock()
	now := s.now()
	reg.forget(pend)
	s.consumedLocked(reg, pend.v)
	reg.registered, reg.protected, reg.impus = true, true, impus
	reg.teardown = time.Time{}
	reg.expires = now.Add(granted)
	// The set it replaces stays until the new one carries traffic, or one
	// temporary-SA lifetime at the latest.
	reg.sas.activate(via, reg.expires.Add(DefaultSAMargin), now.Add(s.cfg.TempSATimeout))
	if c := req.Contact(); c != nil {
		reg.contact = c.Address.String()
	}
	if note := s.activateMediaLocked(reg, via); note != "" {
		s.emitLocked(EvMediaSAs, "", "media SAs installed", note)
	}
}

// failChallenge forgets a failed answer; its temporary SAs go after
// TeardownGrace (the 403 is sent through them), by the housekeeper.
func (s *Server) failChallenge(reg *registration, pend *challenge) {
	s.mu.Lock()
	defer s.unlock()
	reg.forget(pend)
	if pend.set != nil && pend.set.state == saTemporary {
		pend.set.deadline = s.now().Add(s.cfg.TeardownGrace)
		s.poke()
	}
}

// deregister answers a de-registration; the registration, its SAs and its
// lease go after TeardownGrace (so the 200 and a retransmission still
// leave), by the housekeeper.
func (s *Server) deregister(tx sip.ServerTransaction, req *sip.Request, reg *registration) {
	// The teardown is scheduled before the 200 leaves: once the UE has
	// it, the registration is on its way out (the SAs stay for the grace,
	// for the 200 and its retransmissions).
	s.mu.Lock()
	reg.registered = false
	reg.teardown = s.now().Add(s.cfg.TeardownGrace)
	s.scheduleLocked(reg, s.now())
	s.unlock()
	s.emit(EvDeregistered, "UE "+reg.impu, "200 OK", "de-registered; SAs deleted, lease released")
	s.respond(tx, req, 200, "OK", false, sip.NewHeader("Expires", "0"))
}
