package sip

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Identities. The P-CSCF binds public identities (IMPUs) to the private
// identity (IMPI) that authenticated, and asserts them on the UE's behalf:
//
//   - A REGISTER's To must name one of its IMPI's IMPUs in the HSS (TS
//     24.229 §5.4.1.2.1 at the S-CSCF; here the registrar does it): 403
//     otherwise, before any vector is spent.
//   - A registration registers the IMPI's whole implicit set (TS 23.228
//     §4.3.3.3: here every IMPU the HSS lists), announced in
//     P-Associated-URI; calls to any of them reach the UE.
//   - Requests from a UE carry the identity the P-CSCF asserts (TS 24.229
//     §5.2.6.3.3, RFC 3325): P-Asserted-Identity from the registered set,
//     the UE's P-Preferred-Identity honoured only within it, any
//     P-Asserted-Identity of the UE's own removed, and a From outside the set
//     replaced by the asserted identity (an anonymous From, RFC 3323, stays
//     anonymous).

// anonymousAOR is RFC 3323's anonymous From.
const anonymousAOR = "sip:anonymous@anonymous.invalid"

// normAOR is the address of record of a URI string (a header value or a
// bare URI), "" when it does not parse.
func normAOR(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '<'); i >= 0 {
		if j := strings.IndexByte(s[i:], '>'); j > 0 {
			s = s[i+1 : i+j]
		}
	}
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil || u.Host == "" {
		return ""
	}
	return aor(u)
}

// owns tells whether aor is one of the registration's public identities.
// Called with Server.mu held.
func (reg *registration) owns(a string) bool {
	if a == "" {
		return false
	}
	if a == reg.impu {
		return true
	}
	for _, u := range reg.impus {
		if normAOR(u) == a {
			return true
		}
	}
	return false
}

// impuIn tells whether impu is in the list the HSS gave.
func impuIn(impu string, impus []string) bool {
	for _, u := range impus {
		if normAOR(u) == impu {
			return true
		}
	}
	return false
}

// assertion is what the P-CSCF asserts for one request from a UE.
type assertion struct {
	id        sip.Uri // the asserted public identity
	from      sip.Uri // the From the next hop sees
	anonymous bool    // the UE asked for an anonymous From
	rewritten bool    // the UE's From was outside its set and was replaced
	refused   string  // a P-Preferred-Identity outside the set (ignored), for the ladder
}

// assertIdentity decides the identity of a request from reg's UE. Called
// with Server.mu held.
func (reg *registration) assertIdentity(req *sip.Request) assertion {
	var a assertion
	def := reg.impu
	if h := req.GetHeader("P-Preferred-Identity"); h != nil {
		for part := range strings.SplitSeq(h.Value(), ",") {
			p := normAOR(part)
			if reg.owns(p) {
				def = p
				break
			}
			a.refused = strings.TrimSpace(part)
		}
		if def != reg.impu {
			a.refused = ""
		}
	}
	sip.ParseUri(def, &a.id)
	a.from = a.id
	if f := req.From(); f != nil {
		fa := aor(f.Address)
		switch {
		case fa == anonymousAOR:
			a.anonymous, a.from = true, f.Address
		case reg.owns(fa):
			a.from = f.Address
		default:
			a.rewritten = true
		}
	}
	return a
}
