package akakeys

// HTTP Digest AKA (RFC 3310) as SIP uses it for IMS registration (TS 24.229):
// the nonce carries RAND and AUTN, the password of RFC 2617 is RES.

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
)

// AlgorithmAKAv1MD5 is the algorithm parameter of RFC 3310 §3.1.
const AlgorithmAKAv1MD5 = "AKAv1-MD5"

// QOPAuth is the quality of protection this package computes (RFC 2617 §3.2.2).
const QOPAuth = "auth"

// nonceMin is RAND || AUTN, the least an AKA nonce carries (RFC 3310 §3.2).
const nonceMin = len(RAND{}) + len(AUTN{})

// Errors of the nonce and header parsers. They are preallocated: the input
// comes from the network.
var (
	ErrNonceEncoding = errors.New("akakeys: nonce is not base64")
	ErrNonceTooShort = errors.New("akakeys: nonce shorter than RAND || AUTN (32 octets)")
	ErrNotDigest     = errors.New("akakeys: auth scheme is not Digest")
	ErrHeaderSyntax  = errors.New("akakeys: malformed Digest parameter list")
	ErrDuplicate     = errors.New("akakeys: Digest parameter repeated")
	ErrAUTSEncoding  = errors.New("akakeys: auts is not base64 of 14 octets")
	ErrNCSyntax      = errors.New("akakeys: nc is not 1 to 8 hex digits")
	ErrUnsupported   = errors.New("akakeys: unsupported Digest algorithm or qop")
)

// BuildNonce returns the AKA nonce of RFC 3310 §3.2: the base64 encoding of
// RAND || AUTN || server data. serverData may be nil.
func BuildNonce(r RAND, autn AUTN, serverData []byte) string {
	b := make([]byte, 0, nonceMin+len(serverData))
	b = append(b, r[:]...)
	b = append(b, autn[:]...)
	b = append(b, serverData...)
	return base64.StdEncoding.EncodeToString(b)
}

// ParseNonce splits an AKA nonce into RAND, AUTN and the server data that
// follows them (nil if none). Padded and unpadded base64 are accepted.
func ParseNonce(s string) (r RAND, autn AUTN, serverData []byte, err error) {
	enc := base64.StdEncoding
	if !strings.HasSuffix(s, "=") && len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	b, derr := enc.DecodeString(s)
	if derr != nil {
		return r, autn, nil, ErrNonceEncoding
	}
	if len(b) < nonceMin {
		return r, autn, nil, ErrNonceTooShort
	}
	copy(r[:], b[:16])
	copy(autn[:], b[16:32])
	if len(b) > nonceMin {
		serverData = b[nonceMin:]
	}
	return r, autn, serverData, nil
}

// Param is one auth-param this package does not interpret, kept so that a
// parsed header can be rebuilt. Names are kept as received.
type Param struct {
	Name   string
	Value  string
	Quoted bool // the value was (and will be written as) a quoted-string
}

// Challenge is the value of a WWW-Authenticate or Proxy-Authenticate header
// with the Digest scheme (RFC 2617 §3.2.1, RFC 3310 §3.1).
type Challenge struct {
	Realm     string
	Nonce     string
	Opaque    string
	Domain    string
	Algorithm string // token, e.g. AKAv1-MD5
	QOP       string // qop-options, e.g. "auth" or "auth,auth-int"
	Stale     bool
	// IK and CK are the TS 33.203 §7.2 / TS 24.229 extension parameters
	// that the S-CSCF passes to the P-CSCF (removed before the UE sees the
	// challenge), as the hex text found in the header.
	IK, CK string
	Params []Param // any other parameter, in order
}

// Credentials is the value of an Authorization or Proxy-Authorization
// header with the Digest scheme (RFC 2617 §3.2.2, RFC 3310 §3.4, TS 24.229).
type Credentials struct {
	Username  string
	Realm     string
	Nonce     string
	URI       string
	Response  string // request-digest, 32 lower-case hex digits (or "" in the initial 3GPP REGISTER)
	Algorithm string
	CNonce    string
	Opaque    string
	QOP       string // message-qop: "auth" or ""
	NC        uint32 // nonce-count; written as 8 hex digits when QOP is set
	// HasAUTS and AUTS: the auts parameter of RFC 3310 §3.4, sent by the UE
	// on a synchronisation failure.
	HasAUTS bool
	AUTS    AUTS
	// IntegrityProtected is the TS 24.229 §7.2A.2 parameter the P-CSCF adds
	// ("yes", "no", "tls-pending", "tls-yes", "ip-assoc-pending",
	// "ip-assoc-yes", "auth-done"); "" if absent.
	IntegrityProtected string
	Params             []Param // any other parameter, in order
}

// ParseChallenge parses a Digest challenge: "Digest realm=..., nonce=...".
// Parameter names are case-insensitive; unknown ones are kept in Params.
func ParseChallenge(s string) (Challenge, error) {
	var c Challenge
	seen := 0
	err := parseDigest(s, func(name, value string, quoted bool) error {
		var bit int
		switch strings.ToLower(name) {
		case "realm":
			c.Realm, bit = value, 1
		case "nonce":
			c.Nonce, bit = value, 2
		case "opaque":
			c.Opaque, bit = value, 4
		case "domain":
			c.Domain, bit = value, 8
		case "algorithm":
			c.Algorithm, bit = value, 16
		case "qop":
			c.QOP, bit = value, 32
		case "stale":
			c.Stale, bit = strings.EqualFold(value, "true"), 64
		case "ik":
			c.IK, bit = value, 128
		case "ck":
			c.CK, bit = value, 256
		default:
			c.Params = append(c.Params, Param{Name: name, Value: value, Quoted: quoted})
			return nil
		}
		if seen&bit != 0 {
			return ErrDuplicate
		}
		seen |= bit
		return nil
	})
	if err != nil {
		return Challenge{}, err
	}
	return c, nil
}

// ParseAuthorization parses Digest credentials: "Digest username=..., ...".
// Parameter names are case-insensitive; unknown ones are kept in Params.
func ParseAuthorization(s string) (Credentials, error) {
	var c Credentials
	seen := 0
	err := parseDigest(s, func(name, value string, quoted bool) error {
		var bit int
		switch strings.ToLower(name) {
		case "username":
			c.Username, bit = value, 1
		case "realm":
			c.Realm, bit = value, 2
		case "nonce":
			c.Nonce, bit = value, 4
		case "uri":
			c.URI, bit = value, 8
		case "response":
			c.Response, bit = value, 16
		case "algorithm":
			c.Algorithm, bit = value, 32
		case "cnonce":
			c.CNonce, bit = value, 64
		case "opaque":
			c.Opaque, bit = value, 128
		case "qop":
			c.QOP, bit = value, 256
		case "nc":
			n, err := parseNC(value)
			if err != nil {
				return err
			}
			c.NC, bit = n, 512
		case "auts":
			a, err := parseAUTS(value)
			if err != nil {
				return err
			}
			c.AUTS, c.HasAUTS, bit = a, true, 1024
		case "integrity-protected":
			c.IntegrityProtected, bit = value, 2048
		default:
			c.Params = append(c.Params, Param{Name: name, Value: value, Quoted: quoted})
			return nil
		}
		if seen&bit != 0 {
			return ErrDuplicate
		}
		seen |= bit
		return nil
	})
	if err != nil {
		return Credentials{}, err
	}
	return c, nil
}

func parseNC(v string) (uint32, error) {
	if len(v) == 0 || len(v) > 8 {
		return 0, ErrNCSyntax
	}
	n, err := strconv.ParseUint(v, 16, 32)
	if err != nil {
		return 0, ErrNCSyntax
	}
	return uint32(n), nil
}

func parseAUTS(v string) (AUTS, error) {
	var a AUTS
	enc := base64.StdEncoding
	if !strings.HasSuffix(v, "=") {
		enc = base64.RawStdEncoding
	}
	if enc.DecodedLen(len(v)) > len(a)+2 { // cheap bound before decoding
		return a, ErrAUTSEncoding
	}
	b, err := enc.DecodeString(v)
	if err != nil || len(b) != len(a) {
		return a, ErrAUTSEncoding
	}
	copy(a[:], b)
	return a, nil
}

// parseDigest checks the "Digest" scheme and calls f for each auth-param of
// the comma-separated list that follows (RFC 2617 §1.2, RFC 3261 §25.1).
// Quoted values are unescaped. Empty list elements are skipped, as the
// #rule allows.
func parseDigest(s string, f func(name, value string, quoted bool) error) error {
	s = trimLWS(s)
	i := 0
	for i < len(s) && isTokenChar(s[i]) {
		i++
	}
	if !strings.EqualFold(s[:i], "Digest") {
		return ErrNotDigest
	}
	if i < len(s) && !isLWS(s[i]) {
		return ErrNotDigest
	}
	s = s[i:]
	for {
		s = trimLWSLeft(s)
		for len(s) > 0 && s[0] == ',' {
			s = trimLWSLeft(s[1:])
		}
		if len(s) == 0 {
			return nil
		}
		// name
		j := 0
		for j < len(s) && isTokenChar(s[j]) {
			j++
		}
		if j == 0 {
			return ErrHeaderSyntax
		}
		name := s[:j]
		s = trimLWSLeft(s[j:])
		if len(s) == 0 || s[0] != '=' {
			return ErrHeaderSyntax
		}
		s = trimLWSLeft(s[1:])
		var value string
		quoted := false
		if len(s) > 0 && s[0] == '"' {
			v, rest, ok := unquote(s)
			if !ok {
				return ErrHeaderSyntax
			}
			value, s, quoted = v, rest, true
		} else {
			k := 0
			for k < len(s) && isTokenChar(s[k]) {
				k++
			}
			if k == 0 {
				return ErrHeaderSyntax
			}
			value, s = s[:k], s[k:]
		}
		if err := f(name, value, quoted); err != nil {
			return err
		}
		s = trimLWSLeft(s)
		if len(s) > 0 && s[0] != ',' {
			return ErrHeaderSyntax
		}
	}
}

// unquote reads a quoted-string at the start of s (which begins with '"')
// and returns its unescaped content and the rest of s.
func unquote(s string) (value, rest string, ok bool) {
	esc := false
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 >= len(s) || s[i+1] == '\r' || s[i+1] == '\n' {
				return "", "", false
			}
			esc = true
			i++
		case '"':
			if !esc {
				return s[1:i], s[i+1:], true
			}
			var b strings.Builder
			b.Grow(i)
			for k := 1; k < i; k++ {
				if s[k] == '\\' {
					k++
				}
				b.WriteByte(s[k])
			}
			return b.String(), s[i+1:], true
		case '\r', '\n':
			// A header value given to us has been unfolded already; a bare
			// CR or LF inside a quoted-string is not allowed (RFC 3261 §25.1).
			return "", "", false
		}
	}
	return "", "", false
}

func isLWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func trimLWSLeft(s string) string {
	for len(s) > 0 && isLWS(s[0]) {
		s = s[1:]
	}
	return s
}

func trimLWS(s string) string {
	s = trimLWSLeft(s)
	for len(s) > 0 && isLWS(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// isTokenChar reports whether c may appear in a token (RFC 3261 §25.1).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// appendQuoted appends name="value" with '"' and '\' escaped.
func appendQuoted(b []byte, name, value string) []byte {
	if len(b) > len("Digest ") {
		b = append(b, ", "...)
	}
	b = append(b, name...)
	b = append(b, '=', '"')
	for i := 0; i < len(value); i++ {
		if c := value[i]; c == '"' || c == '\\' {
			b = append(b, '\\')
		}
		b = append(b, value[i])
	}
	return append(b, '"')
}

// appendToken appends name=value, quoting value if it is not a token.
func appendToken(b []byte, name, value string) []byte {
	if !isToken(value) {
		return appendQuoted(b, name, value)
	}
	if len(b) > len("Digest ") {
		b = append(b, ", "...)
	}
	b = append(b, name...)
	b = append(b, '=')
	return append(b, value...)
}

func appendParams(b []byte, ps []Param) []byte {
	for _, p := range ps {
		if p.Quoted {
			b = appendQuoted(b, p.Name, p.Value)
		} else {
			b = appendToken(b, p.Name, p.Value)
		}
	}
	return b
}

// String builds the header value: Digest realm="...", nonce="...", ...
// realm and nonce are always written; the others when set.
func (c *Challenge) String() string {
	// Sized once for the values and their names and quotes (the P-CSCF
	// writes one per challenge); growing from "Digest " took four copies.
	n := 96 + len(c.Realm) + len(c.Nonce) + len(c.Domain) + len(c.Opaque) + len(c.Algorithm) + len(c.QOP) + len(c.IK) + len(c.CK)
	for _, p := range c.Params {
		n += len(p.Name) + len(p.Value) + 4
	}
	b := append(make([]byte, 0, n), "Digest "...)
	b = appendQuoted(b, "realm", c.Realm)
	b = appendQuoted(b, "nonce", c.Nonce)
	if c.Domain != "" {
		b = appendQuoted(b, "domain", c.Domain)
	}
	if c.Opaque != "" {
		b = appendQuoted(b, "opaque", c.Opaque)
	}
	if c.Stale {
		b = appendToken(b, "stale", "TRUE")
	}
	if c.Algorithm != "" {
		b = appendToken(b, "algorithm", c.Algorithm)
	}
	if c.QOP != "" {
		b = appendQuoted(b, "qop", c.QOP)
	}
	if c.IK != "" {
		b = appendQuoted(b, "ik", c.IK)
	}
	if c.CK != "" {
		b = appendQuoted(b, "ck", c.CK)
	}
	return string(appendParams(b, c.Params))
}

// String builds the header value: Digest username="...", realm="...", ...
// username, realm, nonce, uri and response are always written (the initial
// 3GPP REGISTER carries nonce="" and response=""); the others when set.
// nc is written as 8 hex digits whenever qop is set (or nc is not 0).
func (c *Credentials) String() string {
	b := []byte("Digest ")
	b = appendQuoted(b, "username", c.Username)
	b = appendQuoted(b, "realm", c.Realm)
	b = appendQuoted(b, "nonce", c.Nonce)
	b = appendQuoted(b, "uri", c.URI)
	b = appendQuoted(b, "response", c.Response)
	if c.Algorithm != "" {
		b = appendToken(b, "algorithm", c.Algorithm)
	}
	if c.CNonce != "" {
		b = appendQuoted(b, "cnonce", c.CNonce)
	}
	if c.Opaque != "" {
		b = appendQuoted(b, "opaque", c.Opaque)
	}
	if c.QOP != "" {
		b = appendToken(b, "qop", c.QOP)
	}
	if c.QOP != "" || c.NC != 0 {
		var nc [8]byte
		b = appendToken(b, "nc", string(formatNC(nc[:0], c.NC)))
	}
	if c.HasAUTS {
		b = appendQuoted(b, "auts", base64.StdEncoding.EncodeToString(c.AUTS[:]))
	}
	if c.IntegrityProtected != "" {
		b = appendQuoted(b, "integrity-protected", c.IntegrityProtected)
	}
	return string(appendParams(b, c.Params))
}

func formatNC(b []byte, n uint32) []byte {
	const digits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, digits[n>>uint(shift)&0xf])
	}
	return b
}

// Response computes the request-digest of RFC 2617 §3.2.2.1 for c with the
// given method and password:
//
//	HA1 = MD5(username ":" realm ":" password)
//	HA2 = MD5(method ":" uri)
//	qop=auth: response = MD5(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)
//	no qop:   response = MD5(HA1 ":" nonce ":" HA2)   (RFC 2069 form)
//
// all hashes written as 32 lower-case hex digits. For AKAv1-MD5 the
// password is RES as raw octets (RFC 3310 §3.3), which may hold any byte.
// Algorithms other than MD5 and AKAv1-MD5 (and their absence), and qop
// values other than auth, give ErrUnsupported.
func Response(c *Credentials, method string, password []byte) (string, error) {
	var out [32]byte
	if err := response(&out, c, method, password); err != nil {
		return "", err
	}
	return string(out[:]), nil
}

func response(out *[32]byte, c *Credentials, method string, password []byte) error {
	switch {
	case c.Algorithm == "", strings.EqualFold(c.Algorithm, "MD5"), strings.EqualFold(c.Algorithm, AlgorithmAKAv1MD5):
	default:
		return ErrUnsupported
	}
	if c.QOP != "" && !strings.EqualFold(c.QOP, QOPAuth) {
		return ErrUnsupported
	}
	var ha1, ha2 [32]byte
	h := md5.New()
	h.Write([]byte(c.Username))
	h.Write([]byte{':'})
	h.Write([]byte(c.Realm))
	h.Write([]byte{':'})
	h.Write(password)
	var sum [md5.Size]byte
	hex.Encode(ha1[:], h.Sum(sum[:0]))

	h.Reset()
	h.Write([]byte(method))
	h.Write([]byte{':'})
	h.Write([]byte(c.URI))
	hex.Encode(ha2[:], h.Sum(sum[:0]))

	h.Reset()
	h.Write(ha1[:])
	h.Write([]byte{':'})
	h.Write([]byte(c.Nonce))
	h.Write([]byte{':'})
	if c.QOP != "" {
		var nc [8]byte
		h.Write(formatNC(nc[:0], c.NC))
		h.Write([]byte{':'})
		h.Write([]byte(c.CNonce))
		h.Write([]byte{':'})
		h.Write([]byte(c.QOP))
		h.Write([]byte{':'})
	}
	h.Write(ha2[:])
	hex.Encode(out[:], h.Sum(sum[:0]))
	return nil
}

// SetResponse fills c.Response for method with password (the UE side; for
// AKAv1-MD5 the password is RES). It sets c.HasAUTS to false.
func (c *Credentials) SetResponse(method string, password []byte) error {
	c.HasAUTS = false
	r, err := Response(c, method, password)
	if err != nil {
		return err
	}
	c.Response = r
	return nil
}

// SetSyncFailure turns c into the credentials a UE sends on a
// synchronisation failure (RFC 3310 §3.4): the auts parameter carries AUTS
// and the response is computed with an empty password, RES being unknown.
func (c *Credentials) SetSyncFailure(method string, auts AUTS) error {
	r, err := Response(c, method, nil)
	if err != nil {
		return err
	}
	c.Response, c.AUTS, c.HasAUTS = r, auts, true
	return nil
}

// Verify is the registrar's check of credentials answering an AKAv1-MD5
// challenge: it recomputes the response with XRES as the password and
// compares it with c.Response in constant time (the hex case of c.Response
// is ignored). Credentials carrying auts never verify here: see
// VerifySyncFailure.
func Verify(c *Credentials, method string, xres RES) bool {
	if c.HasAUTS {
		return false
	}
	return verify(c, method, xres[:])
}

// VerifySyncFailure checks the response of credentials that carry auts,
// computed with the empty password (RFC 3310 §3.4). It proves nothing about
// the UE, since anyone can compute it: what authenticates a
// re-synchronisation is MAC-S inside AUTS, checked by the HSS (VerifyAUTS).
func VerifySyncFailure(c *Credentials, method string) bool {
	if !c.HasAUTS {
		return false
	}
	return verify(c, method, nil)
}

func verify(c *Credentials, method string, password []byte) bool {
	var want [32]byte
	if err := response(&want, c, method, password); err != nil {
		return false
	}
	if len(c.Response) != len(want) {
		return false
	}
	var got [32]byte
	for i := 0; i < len(got); i++ {
		ch := c.Response[i]
		if 'A' <= ch && ch <= 'F' {
			ch += 'a' - 'A'
		}
		got[i] = ch
	}
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
