package sip

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/sip/media"
)

// Calls. Each P-CSCF is a back-to-back user agent for the calls of its UEs
// (the P-CSCF's hiding role in docs/architecture.md): it answers the caller's INVITE
// itself and places a new INVITE towards the callee, inside the callee's
// tunnel when the callee is ours, or in plain SIP to the peer domain's
// P-CSCF (the server-to-server leg is network domain security, out of the
// design's scope). It relays the media (the design's media proxy): for each m= line it opens one relay session with a
// leg on each side, inside the media tunnel's netstack towards its UE, or
// on the host towards the peer P-CSCF, and rewrites the SDP to point at
// them. CANCEL, 486 and timeouts pass through; BYE on either side ends both.

// DefaultCallTimeout bounds how long a call may ring (then 408).
const DefaultCallTimeout = 60 * time.Second

// bcall is one call through this P-CSCF: leg a faces the caller (we are
// its UAS), leg b the callee (we are its UAC).
type bcall struct {
	mu       sync.Mutex
	a, b     *dialogEnd
	sessions []*media.Session
	done     bool
}

// side is one side of a call as this P-CSCF sees it.
type callSide struct {
	inner bool          // inside a UE's tunnel (else the peer P-CSCF, on the host)
	reg   *registration // when inner
	peer  netip.AddrPort
}

// mediaLeg returns where a relay leg on this side listens.
func (s *Server) mediaLeg(cs callSide, peer netip.AddrPort) media.Leg {
	if cs.inner {
		return media.Leg{Listen: s.mediaNS.ListenUDP, Local: netip.AddrPortFrom(s.sideAddr(cs), 0), Peer: peer}
	}
	return media.Leg{Listen: media.ListenKernel, Local: netip.AddrPortFrom(s.hostAddr(), 0), Peer: peer}
}

// hostAddr is our address on the host side (the SIP socket's; loopback
// when it is bound to all addresses).
func (s *Server) hostAddr() netip.Addr {
	a := s.SIPAddr().Addr()
	if a.IsUnspecified() {
		return netip.MustParseAddr("127.0.0.1")
	}
	return a
}

// sideAddr is the address SDP and Contact name on a side.
func (s *Server) sideAddr(cs callSide) netip.Addr {
	if cs.inner {
		return s.innerFor(s.contactOf(cs.reg))
	}
	return s.hostAddr()
}

func (s *Server) contactFor(cs callSide) sip.Uri {
	if cs.inner {
		return sip.Uri{Scheme: "sip", User: "pcscf", Host: s.innerFor(s.contactOf(cs.reg)).String(), Port: int(s.cfg.PortS)}
	}
	return sip.Uri{Scheme: "sip", User: "pcscf", Host: s.hostAddr().String(), Port: int(s.SIPAddr().Port())}
}

// contactOf is reg.contactAddr under s.mu.
func (s *Server) contactOf(reg *registration) netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return reg.contactAddr()
}

// path returns how requests reach a side: inside the UE's tunnel from our
// port-c to its port-s, or on the host from our SIP socket to the peer.
func (s *Server) path(cs callSide) requester {
	if cs.inner {
		s.mu.Lock()
		st := cs.reg.sas.active()
		lease := cs.reg.contactAddr()
		s.mu.Unlock()
		return requester{cli: s.innerCli, prep: func(ctx context.Context, req *sip.Request) error {
			if st == nil {
				return fmt.Errorf("sip: %s has no active SAs", cs.reg.impi)
			}
			return prepareRequest(ctx, s.innerCli, s.innerUA, s.ns, s.innerInj, req,
				netip.AddrPortFrom(s.innerFor(lease), st.set.PCSCF.PortC), netip.AddrPortFrom(lease, st.set.UE.PortS))
		}}
	}
	laddr := netip.AddrPortFrom(s.hostAddr(), s.SIPAddr().Port())
	return requester{cli: s.outerCli, prep: func(ctx context.Context, req *sip.Request) error {
		return prepareRequest(ctx, s.outerCli, s.outerUA, nil, nil, req, laddr, nextHop(req, cs.peer))
	}}
}

// nextHop is where a request on the host side goes (RFC 3261 §8.1.2): its
// first Route, else its Request-URI, when they name an address; else def
// (the peer, or the S-CSCF, whose URIs name domains).
func nextHop(req *sip.Request, def netip.AddrPort) netip.AddrPort {
	u := req.Recipient
	if r := req.GetHeader("Route"); r != nil {
		if rh, ok := r.(*sip.RouteHeader); ok {
			u = rh.Address
		}
	}
	a, err := netip.ParseAddr(strings.Trim(u.Host, "[]"))
	if err != nil {
		return def
	}
	port := uint16(u.Port)
	if port == 0 {
		port = DefaultSIPPort
	}
	return netip.AddrPortFrom(a.Unmap(), port)
}

// onInvite handles an INVITE from one of our UEs (inner) or from a peer
// P-CSCF (outer).
func (s *Server) onInvite(inner bool) func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		s.handleInvite(inner, req, tx)
	}
}

func (s *Server) handleInvite(inner bool, req *sip.Request, tx sip.ServerTransaction) {
	src := parseAddrPort(req.Source())
	var caller callSide
	var asserted assertion
	if inner {
		s.mu.Lock()
		reg := s.byAddr[src.Addr()]
		if reg != nil {
			asserted = reg.assertIdentity(req)
		}
		s.mu.Unlock()
		if reg == nil || !reg.registered {
			s.respond(tx, req, 403, "Forbidden", false)
			return
		}
		caller = callSide{inner: true, reg: reg}
		if asserted.rewritten {
			s.emit(EvIdentityAsserted, "", "From replaced", fmt.Sprintf("%s is not %s's: the callee sees %s", aorOf(req.From()), reg.impi, aor(asserted.id)))
		}
		if asserted.refused != "" {
			s.emit(EvIdentityAsserted, "", "P-Preferred-Identity ignored", asserted.refused+" is not in the registered set")
		}
	} else {
		if !s.isPeer(src) {
			s.emit(EvCallFailed, "", "403 Forbidden", "INVITE from "+src.String()+", which is no configured peer")
			s.respond(tx, req, 403, "Forbidden", true)
			return
		}
		caller = callSide{peer: src}
	}
	target := req.Recipient
	targetAOR := aor(target)
	domain := strings.ToLower(target.Host)
	var callee callSide
	var routes []sip.Uri // leg b's Route (the proxy role's Service-Route)
	switch {
	case s.proxying() && inner:
		// Everything a UE starts goes to its S-CSCF, along the
		// Service-Route of its registration (TS 24.229 §5.2.6.3.3).
		s.mu.Lock()
		for _, r := range caller.reg.serviceRoute {
			var u sip.Uri
			if sip.ParseUri(r, &u) == nil {
				routes = append(routes, u)
			}
		}
		s.mu.Unlock()
		callee = callSide{peer: s.scscf.addr}
	case s.proxying():
		// From the S-CSCF along our Path: the Request-URI is the contact
		// our UE registered (its inner address), or one of its identities.
		s.mu.Lock()
		var reg *registration
		if a, err := netip.ParseAddr(strings.Trim(target.Host, "[]")); err == nil {
			reg = s.byAddr[a.Unmap()]
		}
		for _, r := range s.regs {
			if reg == nil && r.registered && r.protected && r.owns(targetAOR) {
				reg = r
			}
		}
		s.mu.Unlock()
		if reg == nil || !reg.registered || !reg.protected {
			s.emit(EvCallFailed, "", "480 Temporarily Unavailable", target.String()+" is no UE registered here")
			s.respond(tx, req, 480, "Temporarily Unavailable", true)
			return
		}
		callee = callSide{inner: true, reg: reg}
		target = sip.Uri{Scheme: "sip", User: target.User, Host: s.cfg.Domain}
		if reg.impu != "" {
			sip.ParseUri(reg.impu, &target)
		}
	case domain == strings.ToLower(s.cfg.Domain):
		s.mu.Lock()
		var reg *registration
		for _, r := range s.regs {
			if r.registered && r.protected && r.owns(targetAOR) {
				reg = r
			}
		}
		s.mu.Unlock()
		if reg == nil {
			s.emit(EvCallFailed, "", "480 Temporarily Unavailable", targetAOR+" is not registered")
			s.respond(tx, req, 480, "Temporarily Unavailable", !inner)
			return
		}
		callee = callSide{inner: true, reg: reg}
	default:
		s.mu.Lock()
		peer, ok := s.cfg.Peers[domain]
		s.mu.Unlock()
		if !ok {
			s.emit(EvCallFailed, "", "404 Not Found", "no peer for domain "+domain)
			s.respond(tx, req, 404, "Not Found", !inner)
			return
		}
		callee = callSide{peer: peer}
	}
	s.emit(EvInvite, "", "INVITE "+targetAOR, fmt.Sprintf("from %s, B2BUA towards %s", s.describeSide(caller), s.describeSide(callee)))
	s.respond(tx, req, 100, "Trying", !inner)

	c := &bcall{}
	aTag := newTag()
	c.a = uasDialog(req, aTag)
	c.a.path = s.path(caller)

	// Media: a relay session per m= line, and the offer rewritten to point
	// at the callee-side legs.
	offer, err := media.ParseSDP(req.Body())
	if err != nil {
		s.respond(tx, req, 488, "Not Acceptable Here", !inner)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CallTimeout)
	defer cancel()
	var calleePorts []uint16
	for i := range offer.Media {
		if offer.Media[i].Port == 0 {
			calleePorts = append(calleePorts, 0)
			c.sessions = append(c.sessions, nil)
			continue
		}
		sess, err := s.relay.Allocate(s.ctx, s.mediaLeg(caller, offer.Endpoint(i)), s.mediaLeg(callee, netip.AddrPort{}))
		if err != nil {
			c.closeMedia()
			s.respond(tx, req, 503, "Service Unavailable", !inner)
			return
		}
		c.sessions = append(c.sessions, sess)
		calleePorts = append(calleePorts, sess.LocalB().Port())
	}
	body, err := media.RewriteSDP(req.Body(), s.sideAddr(callee), calleePorts)
	if err != nil {
		c.closeMedia()
		s.respond(tx, req, 488, "Not Acceptable Here", !inner)
		return
	}

	// Leg b: our UE's identity as we assert it; a peer's as it asserted it
	// (the peer is in our trust domain, RFC 3325 §2.3).
	var fromURI sip.Uri
	if f := req.From(); f != nil {
		fromURI = f.Address
	}
	var pai []sip.Header
	if inner {
		fromURI = asserted.from
		pai = append(pai, sip.NewHeader("P-Asserted-Identity", "<"+asserted.id.String()+">"))
		if asserted.anonymous {
			pai = append(pai, sip.NewHeader("Privacy", "id"))
		}
	} else {
		for _, h := range req.GetHeaders("P-Asserted-Identity") {
			pai = append(pai, sip.NewHeader("P-Asserted-Identity", h.Value()))
		}
	}
	c.b = &dialogEnd{callID: newCallID(s.cfg.Domain), local: fromURI, localTag: newTag(), remote: target, target: target, cseq: 1}
	c.b.path = s.path(callee)
	inv := c.b.request(sip.INVITE, 1)
	for _, r := range routes {
		inv.AppendHeader(&sip.RouteHeader{Address: r})
	}
	for _, h := range pai {
		inv.AppendHeader(h)
	}
	inv.AppendHeader(&sip.ContactHeader{Address: s.contactFor(callee)})
	inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	inv.SetBody(body)
	if err := c.b.path.prep(ctx, inv); err != nil {
		c.closeMedia()
		s.respond(tx, req, 503, "Service Unavailable", !inner)
		return
	}
	s.addCall(c)
	// A CANCEL from the caller ends leg b too (sipgo answers 200 and 487).
	tx.OnCancel(func(*sip.Request) { cancel() })

	respondA := func(code int, reason string, body []byte, contact bool) {
		res := sip.NewResponseFromRequest(req, code, reason, body)
		if to := res.To(); to != nil {
			to.Params.Remove("tag")
			to.Params.Add("tag", aTag)
		}
		if contact {
			res.AppendHeader(&sip.ContactHeader{Address: s.contactFor(caller)})
		}
		if body != nil {
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		}
		res.SetDestination(req.Source())
		s.sipc.sent(res)
		if err := tx.Respond(res); err != nil {
			s.log.Debug("respond to INVITE", "err", err)
		}
	}
	final, err := runInvite(ctx, c.b.path.cli, inv, func(r *sip.Response) {
		s.emit(EvProvisional, "", fmt.Sprintf("%d %s from %s", r.StatusCode, r.Reason, s.describeSide(callee)), "relayed to the caller")
		respondA(r.StatusCode, r.Reason, nil, true)
	})
	if err != nil || final == nil {
		s.endCall(c)
		if ctx.Err() == context.DeadlineExceeded {
			s.emit(EvCallFailed, "", "408 Request Timeout", "the callee did not answer in time")
			respondA(408, "Request Timeout", nil, false)
		} else if err != nil {
			s.emit(EvCallFailed, "", "call ended before an answer", err.Error())
			respondA(480, "Temporarily Unavailable", nil, false)
		}
		return
	}
	if !final.IsSuccess() {
		s.endCall(c)
		switch {
		case ctx.Err() == context.DeadlineExceeded:
			s.emit(EvCallFailed, "", "408 Request Timeout", fmt.Sprintf("nobody answered in %v; leg to %s cancelled", s.cfg.CallTimeout, s.describeSide(callee)))
			respondA(408, "Request Timeout", nil, false)
		case final.StatusCode == 487 && ctx.Err() != nil:
			s.emit(EvCallFailed, "", "487 Request Terminated", "the caller cancelled; so did we towards "+s.describeSide(callee))
		default:
			s.emit(EvCallFailed, "", fmt.Sprintf("%d %s from %s", final.StatusCode, final.Reason, s.describeSide(callee)), "relayed to the caller")
			respondA(final.StatusCode, final.Reason, nil, false)
		}
		return
	}
	c.b.fromResponse(final)
	ack := ackFor(inv, final)
	if err := c.b.path.write(ack); err != nil {
		s.log.Debug("ACK to leg b", "err", err)
	}
	answer, err := media.ParseSDP(final.Body())
	if err != nil {
		s.endCall(c)
		c.b.bye(s.ctx)
		respondA(488, "Not Acceptable Here", nil, false)
		return
	}
	var callerPorts []uint16
	for i, sess := range c.sessions {
		if sess == nil || i >= len(answer.Media) || answer.Media[i].Port == 0 {
			callerPorts = append(callerPorts, 0)
			continue
		}
		sess.SetPeerB(answer.Endpoint(i))
		callerPorts = append(callerPorts, sess.LocalA().Port())
	}
	ans, err := media.RewriteSDP(final.Body(), s.sideAddr(caller), callerPorts)
	if err != nil {
		s.endCall(c)
		c.b.bye(s.ctx)
		respondA(488, "Not Acceptable Here", nil, false)
		return
	}
	s.emit(EvCallUp, "", "200 OK: call up", fmt.Sprintf("media relayed: %s", describeRelays(c.sessions)))
	respondA(200, "OK", ans, true)
}

// aorOf is the address of record of a From or To header ("" without one).
func aorOf(h interface{ Value() string }) string {
	if h == nil {
		return ""
	}
	return normAOR(h.Value())
}

func (s *Server) describeSide(cs callSide) string {
	switch {
	case cs.inner:
		return "UE " + strings.TrimPrefix(cs.reg.impu, "sip:") + " (in its tunnel)"
	case s.proxying() && cs.peer.Addr() == s.scscf.addr.Addr():
		return "S-CSCF " + cs.peer.String()
	}
	return "peer P-CSCF " + cs.peer.String()
}

func describeRelays(ss []*media.Session) string {
	var parts []string
	for _, s := range ss {
		if s != nil {
			parts = append(parts, fmt.Sprintf("%v<->%v", s.LocalA(), s.LocalB()))
		}
	}
	return strings.Join(parts, ", ")
}

// SetPeer adds or replaces a domain in the peer table.
func (s *Server) SetPeer(domain string, sipAddr netip.AddrPort) {
	s.mu.Lock()
	s.cfg.Peers[strings.ToLower(domain)] = sipAddr
	s.mu.Unlock()
}

func (s *Server) isPeer(src netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.cfg.Peers {
		if p.Addr() == src.Addr() {
			return true
		}
	}
	return s.scscf != nil && s.scscf.addr.Addr() == src.Addr()
}

func (c *bcall) closeMedia() {
	for _, s := range c.sessions {
		if s != nil {
			s.Close()
		}
	}
}

func (s *Server) addCall(c *bcall) {
	s.mu.Lock()
	s.calls[c.a.callID] = c
	s.calls[c.b.callID] = c
	s.mu.Unlock()
}

// endCall forgets a call and closes its relays.
func (s *Server) endCall(c *bcall) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.done = true
	c.mu.Unlock()
	s.mu.Lock()
	delete(s.calls, c.a.callID)
	if c.b != nil {
		delete(s.calls, c.b.callID)
	}
	s.mu.Unlock()
	c.closeMedia()
}

// onBye ends a call from either side: 200 to the BYE, BYE on the other leg.
func (s *Server) onBye(inner bool) func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		s.mu.Lock()
		c := s.calls[req.CallID().Value()]
		s.mu.Unlock()
		if c == nil {
			s.respond(tx, req, 481, "Call/Transaction Does Not Exist", !inner)
			return
		}
		s.respond(tx, req, 200, "OK", !inner)
		other := c.b
		if req.CallID().Value() == c.b.callID {
			other = c.a
		}
		stats := c.mediaStats()
		s.endCall(c)
		s.emit(EvBye, "", "BYE", "call ended; relayed media "+stats)
		ctx, cancel := context.WithTimeout(s.ctx, defaultSIPTimeout)
		defer cancel()
		if err := other.bye(ctx); err != nil {
			s.log.Debug("BYE on the other leg", "err", err)
		}
	}
}

func (c *bcall) mediaStats() string {
	var parts []string
	for _, s := range c.sessions {
		if s == nil {
			continue
		}
		st := s.Stats()
		parts = append(parts, fmt.Sprintf("%d/%d packets", st.AToB.Packets, st.BToA.Packets))
	}
	return strings.Join(parts, ", ")
}

// onAck absorbs the caller's ACK for our 2xx.
func (s *Server) onAck(req *sip.Request, tx sip.ServerTransaction) {}
