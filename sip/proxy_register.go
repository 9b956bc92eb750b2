package sip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
)

// REGISTER in the proxy role (proxy.go). The S-CSCF authenticates: the
// P-CSCF forwards each REGISTER, builds the temporary SAs from the keys in
// the S-CSCF's 401, holds the UE's answer to the SA it came through and
// to the Security-Server it was sent (the bid-down check stays here, TS
// 33.203 §7.2), and on the 200 activates the set and keeps what the
// S-CSCF said: the registered identities (P-Associated-URI) and the route
// to it for the UE's requests (Service-Route). The SA lifecycle, the
// limits and the housekeeper are the registrar role's.

// proxyOuterRegister forwards a REGISTER from the unprotected port.
func (s *Server) proxyOuterRegister(ctx context.Context, tx sip.ServerTransaction, req *sip.Request, src netip.AddrPort, natted bool, impu string, cred *akakeys.Credentials) {
	// The IMPI names the registration; without an Authorization (a UE
	// with no ISIM) it is derived from the IMPU (TS 23.003 §13.3).
	impi := impuUser(impu)
	if cred != nil && cred.Username != "" {
		impi = cred.Username
	}
	offers, hasSec, ok := s.clientOffers(tx, req)
	if !ok {
		return
	}
	var offer *Mechanism
	if hasSec {
		chosen, err := s.policyFor(impi, src.Addr()).Choose(offers, natted)
		if err != nil {
			s.refuse(tx, req, true, EvNoCommonSecurity, 494, "Security Agreement Required", err.Error(),
				sip.NewHeader("Security-Server", FormatSecurity(s.serverOffers())))
			return
		}
		offer = &chosen
	}
	s.mu.Lock()
	reg := s.regLocked(impi, impu)
	// REGISTERs for one IMPI waiting on the S-CSCF are bounded like its
	// pending challenges: a flood naming a victim's IMPI from many
	// sources holds no more than that, and costs the S-CSCF (and the
	// HSS's SQNs) no more.
	flooded := !s.cfg.Limits.Off && reg.busy > s.cfg.Limits.PendingPerIMPI
	if !flooded {
		reg.source, reg.natted = src, natted
	}
	s.unlock()
	defer func() {
		s.mu.Lock()
		s.releaseLocked(reg)
		s.unlock()
	}()
	if flooded {
		s.overloaded.Add(1)
		s.refuse(tx, req, true, EvOverload, 503, "Service Unavailable", "too many REGISTERs for "+impi+" waiting on the S-CSCF",
			sip.NewHeader("Retry-After", retryAfter))
		return
	}
	key := pendingKey{src: src, callID: req.CallID().Value()}
	res, ok := s.forward(ctx, tx, req, reg, true)
	if !ok {
		return
	}
	switch {
	case res.StatusCode == 401:
		s.proxyChallenge(tx, req, res, reg, key, offer, true)
	case res.StatusCode == 200 && !hasSec:
		// AKA without sec-agree (--ipsec optional): registered, unprotected.
		granted := time.Duration(grantedBy(res, req, 0)) * time.Second
		s.mu.Lock()
		if granted == 0 {
			s.dropLocked(reg, "de-registered")
		} else {
			reg.registered, reg.protected = true, false
			reg.impus = uriList(res.GetHeaders("P-Associated-URI"))
			reg.serviceRoute = uriList(res.GetHeaders("Service-Route"))
			reg.expires = s.now().Add(granted)
		}
		s.unlock()
		s.emit(EvRegistered, "UE "+impu, "200 OK (from the S-CSCF)", fmt.Sprintf("registered without IPsec (--ipsec optional), expires %v", granted))
		s.relayResponse(tx, req, res, true)
	case res.StatusCode == 200:
		// A 200 to an unprotected REGISTER that asked for sec-agree would
		// leave the UE registered with no SA: refuse to carry it.
		s.refuse(tx, req, true, EvSCSCFError, 500, "Server Internal Error", "the S-CSCF registered a UE without challenging it; no SAs to build")
	default:
		s.emit(EvSCSCFError, "UE "+impu, fmt.Sprintf("%d %s (from the S-CSCF)", res.StatusCode, res.Reason), "relayed")
		s.relayResponse(tx, req, res, true)
	}
}

// proxyInnerRegister forwards a REGISTER that came through an SA set: the
// answer to a challenge (through its temporary set), a re-registration or
// a de-registration (through the active set).
func (s *Server) proxyInnerRegister(ctx context.Context, tx sip.ServerTransaction, req *sip.Request, reg *registration, key pendingKey, via *liveSet, pend *challenge, answering bool, exp int64) {
	s.mu.Lock()
	viaState := via.state
	s.mu.Unlock()
	offers, hasSec, err := securityHeaders(req, "Security-Client")
	if err == nil {
		err = checkOffers(offers)
	}
	if err != nil {
		s.respond(tx, req, 400, "Bad Security-Client", false)
		return
	}
	var offer *Mechanism
	if hasSec {
		chosen, err := s.policy().Choose(offers, s.regNATted(reg))
		if err != nil {
			s.respond(tx, req, 494, "Security Agreement Required", false)
			return
		}
		offer = &chosen
	}
	if answering {
		// The answer must come through the set built for its challenge
		// (or, for a challenge that built none, the active set), and echo
		// the Security-Server sent with it.
		if (pend.set != nil && via != pend.set) || (pend.set == nil && viaState != saActive) {
			s.failChallenge(reg, pend)
			s.refuse(tx, req, false, EvWrongSA, 403, "Forbidden", "answer not sent through the new SAs")
			return
		}
		verify, _, err := securityHeaders(req, "Security-Verify")
		if pend.set != nil && (err != nil || !VerifyMatches(verify, pend.server)) {
			s.failChallenge(reg, pend)
			s.refuse(tx, req, false, EvVerifyMismatch, 403, "Forbidden", "Security-Verify does not match the Security-Server sent (bid-down?)")
			return
		}
	} else if viaState != saActive {
		s.refuse(tx, req, false, EvWrongSA, 403, "Forbidden", "a new REGISTER through a set that is not the active one")
		return
	}
	res, ok := s.forward(ctx, tx, req, reg, false)
	if !ok {
		if answering {
			s.failChallenge(reg, pend)
		}
		return
	}
	switch {
	case res.StatusCode == 401:
		if answering {
			// Challenged again: the answered challenge's set goes once
			// this 401 has left through it.
			s.failChallenge(reg, pend)
		}
		s.proxyChallenge(tx, req, res, reg, key, offer, false)
	case res.StatusCode == 200 && grantedBy(res, req, exp) == 0:
		// Torn down after the grace, scheduled before the 200 leaves.
		s.mu.Lock()
		if answering {
			reg.forget(pend)
		}
		reg.registered = false
		reg.teardown = s.now().Add(s.cfg.TeardownGrace)
		s.scheduleLocked(reg, s.now())
		s.unlock()
		s.emitEvent(Event{Kind: EvDeregistered, To: "UE " + reg.impu, What: "200 OK (from the S-CSCF)", Detail: "de-registered; SAs deleted, lease released"})
		s.relayResponse(tx, req, res, false)
	case res.StatusCode == 200:
		granted := time.Duration(grantedBy(res, req, exp)) * time.Second
		impus := uriList(res.GetHeaders("P-Associated-URI"))
		if answering && pend.set != nil {
			s.activate(reg, pend, via, req, impus, granted)
		} else {
			// Registered again without a new AKA run (the S-CSCF may
			// skip it for an integrity-protected REGISTER): same SAs,
			// new expiry.
			s.mu.Lock()
			if answering {
				reg.forget(pend)
			}
			reg.impus = impus
			reg.expires = s.now().Add(granted)
			via.deadline = reg.expires.Add(DefaultSAMargin)
			s.unlock()
		}
		routes := uriList(res.GetHeaders("Service-Route"))
		s.mu.Lock()
		reg.serviceRoute = routes
		s.unlock()
		s.emit(EvRegistered, "UE "+reg.impu, "200 OK (from the S-CSCF)", fmt.Sprintf("expires %v, SA lifetime %v; Service-Route %s", granted, granted+DefaultSAMargin, strings.Join(routes, ", ")))
		s.relayResponse(tx, req, res, false)
	default:
		if answering {
			s.failChallenge(reg, pend)
		}
		s.emit(EvSCSCFError, "UE "+reg.impu, fmt.Sprintf("%d %s (from the S-CSCF)", res.StatusCode, res.Reason), "relayed")
		s.relayResponse(tx, req, res, false)
	}
}

// forward sends the UE's REGISTER on to the S-CSCF and returns the final
// response; when there is none it has answered the UE itself.
func (s *Server) forward(ctx context.Context, tx sip.ServerTransaction, req *sip.Request, reg *registration, outer bool) (*sip.Response, bool) {
	integrity := "yes"
	if outer {
		integrity = "no"
	}
	fwd, err := s.forwardRegister(req, integrity)
	if errors.Is(err, errTooManyHops) {
		s.refuse(tx, req, outer, EvBadRequest, 483, "Too Many Hops", "Max-Forwards exhausted")
		return nil, false
	}
	if err != nil {
		s.refuse(tx, req, outer, EvBadRequest, 400, "Bad Authorization", err.Error())
		return nil, false
	}
	s.emitEvent(Event{Kind: EvForwarded, To: "S-CSCF " + s.scscf.uri.String(), What: "REGISTER " + reg.impu,
		Detail: "Path " + s.pathURI() + ", integrity-protected=" + integrity, Addr: s.scscf.addr})
	res, err := s.toSCSCF(ctx, fwd)
	if err != nil {
		// RFC 3261 §16.7 step 6: no answer from the next hop is a 408 to a
		// proxy's client; 504 says it was the server behind us.
		s.refuse(tx, req, outer, EvSCSCFError, 504, "Server Time-out", fmt.Sprintf("S-CSCF %v: %v", s.scscf.addr, err))
		return nil, false
	}
	return res, true
}

// proxyChallenge passes the S-CSCF's 401 on: CK and IK taken out of it
// (they build the temporary SAs), Security-Server added.
func (s *Server) proxyChallenge(tx sip.ServerTransaction, req *sip.Request, res *sip.Response, reg *registration, key pendingKey, offer *Mechanism, outer bool) {
	v, www, err := takeKeys(res)
	if err != nil {
		s.refuse(tx, req, outer, EvSCSCFError, 500, "Server Internal Error", "the S-CSCF's 401: "+err.Error())
		return
	}
	s.emit(EvHSSVector, "", "401 from the S-CSCF", "RAND, AUTN in nonce; CK, IK taken out of WWW-Authenticate")
	s.sendChallenge(tx, req, reg, key, offer, v, nonceOf(www), outer, func(hs ...sip.Header) {
		s.relayResponse(tx, req, res, outer, append([]sip.Header{www}, hs...)...)
	})
}

// nonceOf is the nonce of a WWW-Authenticate header built by takeKeys.
func nonceOf(h sip.Header) string {
	c, _ := akakeys.ParseChallenge(h.Value())
	return c.Nonce
}

// impuUser is an IMPU without its scheme: the IMPI a UE without an
// Authorization header is known by.
func impuUser(impu string) string {
	for _, p := range []string{"sip:", "sips:", "tel:"} {
		if len(impu) > len(p) && impu[:len(p)] == p {
			return impu[len(p):]
		}
	}
	return impu
}
