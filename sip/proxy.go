package sip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
)

// The proxy role (ServerConfig.SCSCF): a real S-CSCF registers and
// authenticates the UEs, and the P-CSCF does what TS 24.229 §5.2 and TS
// 33.203 §7 ask of a P-CSCF in front of one. This file holds the message
// edits and the S-CSCF link; proxy_register.go the REGISTER flows.
//
// What the P-CSCF changes on a REGISTER it forwards (TS 24.229 §5.2.2):
//   - Security-Client and Security-Verify are removed, and "sec-agree"
//     from Require and Proxy-Require: sec-agree is between UE and P-CSCF.
//   - Path names the P-CSCF (RFC 3327), with "path" in Require and
//     Supported, so the S-CSCF sends terminating requests through it.
//   - P-Visited-Network-ID names the network the UE is in.
//   - The Authorization gets integrity-protected="no" on the unprotected
//     port and "yes" when the REGISTER came through an SA (TS 24.229
//     §5.2.2.1, §7.2A.2), so the S-CSCF knows what the P-CSCF vouches for.
//
// And on the S-CSCF's 401, ck= and ik= are taken out of WWW-Authenticate
// (they are the SA keys: the UE computes its own) before it goes on.

// scscfLink is where the S-CSCF is: its URI as configured and the address
// it resolves to.
type scscfLink struct {
	uri  sip.Uri
	addr netip.AddrPort
}

// parseSCSCF parses ServerConfig.SCSCF: "sip:HOST[:PORT]" with an address
// or a name that resolves.
func parseSCSCF(s string) (*scscfLink, error) {
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil || u.Host == "" || !strings.EqualFold(u.Scheme, "sip") {
		return nil, configErrorf("S-CSCF %q: want a SIP URI such as sip:scscf.ims.example:6060 or sip:198.51.100.7:5060", s)
	}
	if u.Port == 0 {
		u.Port = DefaultSIPPort
	}
	ua, err := net.ResolveUDPAddr("udp", net.JoinHostPort(u.Host, strconv.Itoa(u.Port)))
	if err != nil {
		return nil, configErrorf("S-CSCF %q: %v", s, err)
	}
	ap := ua.AddrPort()
	return &scscfLink{uri: u, addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// proxying tells whether the P-CSCF runs in the proxy role.
func (s *Server) proxying() bool { return s.scscf != nil }

// pathURI is the P-CSCF's Path entry: how the S-CSCF reaches its UEs.
func (s *Server) pathURI() string {
	return fmt.Sprintf("<sip:term@%s;lr>", netip.AddrPortFrom(s.hostAddr(), s.SIPAddr().Port()))
}

// forwardRegister builds the REGISTER for the S-CSCF from the UE's.
// integrity is the Authorization's integrity-protected value.
func (s *Server) forwardRegister(req *sip.Request, integrity string) (*sip.Request, error) {
	fwd := req.Clone()
	fwd.SetSource(req.Source())
	fwd.SetTransport("UDP")
	for fwd.RemoveHeader("Security-Client") {
	}
	for fwd.RemoveHeader("Security-Verify") {
	}
	// The UE's Route names us; the next hop is the S-CSCF we know.
	for fwd.RemoveHeader("Route") {
	}
	dropOptionTag(fwd, "Proxy-Require", "sec-agree")
	dropOptionTag(fwd, "Require", "sec-agree")
	addOptionTag(fwd, "Require", "path")
	addOptionTag(fwd, "Supported", "path")
	fwd.PrependHeader(sip.NewHeader("Path", s.pathURI()))
	fwd.AppendHeader(sip.NewHeader("P-Visited-Network-ID", quoteIfNeeded(s.cfg.VisitedNetwork)))
	if h := fwd.GetHeader("Authorization"); h != nil {
		cred, err := akakeys.ParseAuthorization(h.Value())
		if err != nil {
			return nil, err
		}
		cred.IntegrityProtected = integrity
		fwd.RemoveHeader("Authorization")
		fwd.AppendHeader(sip.NewHeader("Authorization", cred.String()))
	}
	if mf := fwd.MaxForwards(); mf != nil {
		if mf.Val() <= 1 {
			return nil, errTooManyHops
		}
		// A fresh header: sipgo's clone shares this one with req.
		next := sip.MaxForwardsHeader(mf.Val() - 1)
		fwd.RemoveHeader("Max-Forwards")
		fwd.AppendHeader(&next)
	}
	return fwd, nil
}

var errTooManyHops = fmt.Errorf("sip: Max-Forwards exhausted")

// toSCSCF sends a forwarded request to the S-CSCF from our SIP socket,
// with our Via on top, and waits for the final response.
func (s *Server) toSCSCF(ctx context.Context, fwd *sip.Request) (*sip.Response, error) {
	if err := sipgo.ClientRequestAddVia(s.outerCli, fwd); err != nil {
		return nil, err
	}
	laddr := netip.AddrPortFrom(s.hostAddr(), s.SIPAddr().Port())
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SCSCFTimeout)
	defer cancel()
	return requester{cli: s.outerCli, prep: func(ctx context.Context, req *sip.Request) error {
		return prepareRequest(ctx, s.outerCli, s.outerUA, nil, nil, req, laddr, s.scscf.addr)
	}}.send(ctx, fwd)
}

// relayHeaders returns the headers of the S-CSCF's response that go on to
// the UE: all but the transaction's own, which the response to the UE
// takes from the UE's request.
func relayHeaders(res *sip.Response) []sip.Header {
	var hs []sip.Header
	for _, h := range res.Headers() {
		switch strings.ToLower(h.Name()) {
		case "via", "from", "to", "call-id", "cseq", "content-length", "content-type":
			continue
		}
		hs = append(hs, sip.HeaderClone(h))
	}
	return hs
}

// relayResponse answers the UE's request with the S-CSCF's response res: its
// code, reason, To tag and headers, with hdrs replacing those of the same
// name.
func (s *Server) relayResponse(tx sip.ServerTransaction, req *sip.Request, res *sip.Response, outer bool, hdrs ...sip.Header) {
	var out []sip.Header
	for _, h := range relayHeaders(res) {
		if !slices.ContainsFunc(hdrs, func(r sip.Header) bool { return strings.EqualFold(r.Name(), h.Name()) }) {
			out = append(out, h)
		}
	}
	out = append(out, hdrs...)
	r := s.response(req, res.StatusCode, res.Reason, outer, out...)
	if to, rto := r.To(), res.To(); to != nil && rto != nil {
		if tag, ok := rto.Params.Get("tag"); ok {
			to.Params.Remove("tag")
			to.Params.Add("tag", tag)
		}
	}
	s.send(tx, r)
}

// takeKeys parses the S-CSCF's AKA challenge: the vector's RAND and AUTN
// (from the nonce), CK and IK (TS 24.229 §5.2.2.1: the ck and ik
// parameters), and the header value without them for the UE.
func takeKeys(res *sip.Response) (akakeys.Vector, sip.Header, error) {
	h := res.GetHeader("WWW-Authenticate")
	if h == nil {
		return akakeys.Vector{}, nil, fmt.Errorf("401 without WWW-Authenticate")
	}
	ch, err := akakeys.ParseChallenge(h.Value())
	if err != nil {
		return akakeys.Vector{}, nil, err
	}
	if !strings.EqualFold(ch.Algorithm, "AKAv1-MD5") {
		return akakeys.Vector{}, nil, fmt.Errorf("challenge algorithm %q, not AKAv1-MD5", ch.Algorithm)
	}
	var v akakeys.Vector
	if v.RAND, v.AUTN, _, err = akakeys.ParseNonce(ch.Nonce); err != nil {
		return akakeys.Vector{}, nil, err
	}
	if err := decodeKey(v.CK[:], ch.CK, "ck"); err != nil {
		return akakeys.Vector{}, nil, err
	}
	if err := decodeKey(v.IK[:], ch.IK, "ik"); err != nil {
		return akakeys.Vector{}, nil, err
	}
	ch.CK, ch.IK = "", ""
	return v, sip.NewHeader("WWW-Authenticate", ch.String()), nil
}

func decodeKey(dst []byte, hexText, name string) error {
	if hexText == "" {
		return fmt.Errorf("no %s= in the challenge (the S-CSCF must pass the keys to its P-CSCF)", name)
	}
	if len(hexText) != 2*len(dst) {
		return fmt.Errorf("%s= is %d hex digits, want %d", name, len(hexText), 2*len(dst))
	}
	for i := range dst {
		b, err := strconv.ParseUint(hexText[2*i:2*i+2], 16, 8)
		if err != nil {
			return fmt.Errorf("%s= is not hex", name)
		}
		dst[i] = byte(b)
	}
	return nil
}

// grantedBy is the registration lifetime a 200 grants the contact of req
// (RFC 3261 §10.3: its Contact's expires, else Expires); def if neither.
func grantedBy(res *sip.Response, req *sip.Request, def int64) int64 {
	var want *sip.Uri
	if c := req.Contact(); c != nil {
		want = &c.Address
	}
	var first int64 = -1
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		v, ok := c.Params.Get("expires")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			continue
		}
		if want != nil && sameContact(c.Address, *want) {
			return n
		}
		if first < 0 {
			first = n
		}
	}
	if first >= 0 {
		return first
	}
	if h := res.GetHeader("Expires"); h != nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(h.Value()), 10, 64); err == nil && n >= 0 {
			return n
		}
	}
	return def
}

// sameContact compares the user, host and port of two contact URIs.
func sameContact(a, b sip.Uri) bool {
	return a.User == b.User && strings.EqualFold(a.Host, b.Host) && a.Port == b.Port
}

// uriList splits a header value of name-addrs ("<sip:a@x>, <tel:+1>")
// into the URIs.
func uriList(hs []sip.Header) []string {
	var out []string
	for _, h := range hs {
		for part := range strings.SplitSeq(h.Value(), ",") {
			p := strings.TrimSpace(part)
			if i := strings.IndexByte(p, '<'); i >= 0 {
				if j := strings.IndexByte(p[i:], '>'); j > 0 {
					p = p[i+1 : i+j]
				}
			}
			if p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// dropOptionTag removes tag from every header called name, and the header
// when nothing is left in it.
func dropOptionTag(req *sip.Request, name, tag string) {
	hs := req.GetHeaders(name)
	if len(hs) == 0 {
		return
	}
	var keep []string
	for _, h := range hs {
		for t := range strings.SplitSeq(h.Value(), ",") {
			if t = strings.TrimSpace(t); t != "" && !strings.EqualFold(t, tag) {
				keep = append(keep, t)
			}
		}
	}
	for req.RemoveHeader(name) {
	}
	if len(keep) > 0 {
		req.AppendHeader(sip.NewHeader(name, strings.Join(keep, ", ")))
	}
}

// addOptionTag makes sure tag is in header name.
func addOptionTag(req *sip.Request, name, tag string) {
	var tags []string
	for _, h := range req.GetHeaders(name) {
		for t := range strings.SplitSeq(h.Value(), ",") {
			if t = strings.TrimSpace(t); t != "" {
				if strings.EqualFold(t, tag) {
					return
				}
				tags = append(tags, t)
			}
		}
	}
	for req.RemoveHeader(name) {
	}
	req.AppendHeader(sip.NewHeader(name, strings.Join(append(tags, tag), ", ")))
}

// quoteIfNeeded writes s as a token when it is one, else as a quoted
// string (P-Visited-Network-ID takes either, RFC 7976).
func quoteIfNeeded(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-.!%*_+`'~", c) >= 0) {
			return strconv.Quote(s)
		}
	}
	return s
}
