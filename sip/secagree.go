package sip

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/imsec/imsec/esp"
)

// Mechanism is one entry of a Security-Client, Security-Server or
// Security-Verify header (RFC 3329 §2.2) with the parameters TS 33.203
// Annex H adds for "ipsec-3gpp". Unknown parameters are kept in order so a
// Security-Verify can be compared with the Security-Server it echoes.
type Mechanism struct {
	Name  string      // mechanism name, e.g. "ipsec-3gpp" (lower case)
	Q     string      // preference "q" as written ("" when absent)
	Alg   esp.AuthAlg // integrity algorithm, e.g. "hmac-sha-1-96"
	EAlg  esp.EncAlg  // encryption algorithm; "" when absent (means "null", TS 33.203 Annex H)
	Prot  string      // "esp" (default) or "ah"
	Mod   string      // "trans" (default), "tun" or "UDP-enc-tun"
	SPIc  esp.SPI
	SPIs  esp.SPI
	PortC uint16
	PortS uint16
	Other []Param // any other parameter, in the order written
}

// Param is a generic mechanism parameter; Value is "" for a flag.
type Param struct{ Name, Value string }

// Mechanism names and mode values of RFC 3329 and TS 33.203.
const (
	MechIPsec3GPP = "ipsec-3gpp"
	ModTrans      = "trans"
	ModTun        = "tun"
	ModUDPEncTun  = "UDP-enc-tun"
	// ModUDPEncTrans is an imsec extension: transport mode in UDP
	// (RFC 3948 transport mode), for which TS 33.203 has no mod value.
	// A P-CSCF that does not know it ignores the entries that carry it.
	ModUDPEncTrans = "UDP-enc-trans"
)

// Errors of the sec-agree parser. Each wraps ErrSecAgree.
var ErrSecAgree = errors.New("sec-agree")

func secErr(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrSecAgree}, a...)...)
}

// maxMechanisms bounds how many offers one header value may carry; a UE
// offers a handful (TS 33.203 §7.1), an attacker may offer thousands.
const maxMechanisms = 64

// ParseSecurity parses the value of a Security-Client, Security-Server or
// Security-Verify header: comma-separated mechanisms, each
// `name *(; param[=value])`. Several header lines are parsed one by one and
// their results appended by the caller.
func ParseSecurity(v string) ([]Mechanism, error) {
	out := make([]Mechanism, 0, min(strings.Count(v, ",")+1, maxMechanisms))
	for part := range strings.SplitSeq(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if len(out) == maxMechanisms {
			return nil, secErr("more than %d mechanisms", maxMechanisms)
		}
		m, err := parseMechanism(part)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, secErr("empty header")
	}
	return out, nil
}

// mechParams are the parameters parseMechanism knows, by bit: a set of
// them records which were seen without a map per mechanism.
var mechParams = [...]string{"q", "alg", "ealg", "prot", "mod", "spi-c", "spi-s", "port-c", "port-s"}

func parseMechanism(s string) (Mechanism, error) {
	var m Mechanism
	first, rest, _ := strings.Cut(s, ";")
	m.Name = strings.ToLower(strings.TrimSpace(first))
	if !isToken(m.Name) {
		return m, secErr("bad mechanism name %q", first)
	}
	m.Name = own(m.Name, MechIPsec3GPP, "digest", "tls")
	var seen uint16 // bit i: mechParams[i]
	for rest != "" {
		var f string
		f, rest, _ = strings.Cut(rest, ";")
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		name, val, hasVal := strings.Cut(f, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		val = strings.TrimSpace(val)
		if !isToken(name) {
			return m, secErr("bad parameter name %q", name)
		}
		if hasVal {
			val = unquote(val)
			if val == "" {
				return m, secErr("parameter %s has an empty value", name)
			}
		}
		known := slices.Index(mechParams[:], name)
		twice := false
		if known >= 0 {
			twice = seen&(1<<known) != 0
			seen |= 1 << known
		} else {
			twice = slices.ContainsFunc(m.Other, func(p Param) bool { return p.Name == name })
		}
		if twice {
			return m, secErr("parameter %s given twice", name)
		}
		var err error
		switch name {
		case "q":
			if _, e := strconv.ParseFloat(val, 64); e != nil || !hasVal {
				err = secErr("bad q %q", val)
			}
			m.Q = own(val)
		case "alg":
			m.Alg = own(esp.AuthAlg(strings.ToLower(val)), esp.AuthHMACSHA196, esp.AuthHMACMD596, esp.AuthHMACSHA256128, esp.AuthNull)
		case "ealg":
			m.EAlg = own(esp.EncAlg(strings.ToLower(val)), esp.EncAESCBC, esp.EncNull, esp.EncDES3CBC, esp.EncAESGCM)
		case "prot":
			m.Prot = own(strings.ToLower(val), "esp", "ah")
		case "mod":
			m.Mod = canonicalMod(val)
		case "spi-c":
			m.SPIc, err = parseSPI(name, val)
		case "spi-s":
			m.SPIs, err = parseSPI(name, val)
		case "port-c":
			m.PortC, err = parsePort(name, val)
		case "port-s":
			m.PortS, err = parsePort(name, val)
		default:
			m.Other = append(m.Other, Param{Name: own(name), Value: own(val)})
		}
		if err != nil {
			return m, err
		}
	}
	return m, nil
}

// canonicalMod keeps the spelling TS 33.203 uses while accepting any case.
func canonicalMod(v string) string {
	for _, c := range []string{ModTrans, ModTun, ModUDPEncTun, ModUDPEncTrans} {
		if strings.EqualFold(v, c) {
			return c
		}
	}
	return own(v)
}

// own returns v as the one of known it equals (no allocation), else as a
// copy. A Mechanism outlives the header it was parsed from (the SA set
// keeps the UE's offer for the registration's life), and a substring of
// the header value would keep all of it alive: a few hundred bytes a UE.
func own[S ~string](v S, known ...S) S {
	for _, k := range known {
		if v == k {
			return k
		}
	}
	return S(strings.Clone(string(v)))
}

func parseSPI(name, v string) (esp.SPI, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, secErr("%s: not a 32-bit decimal number: %q", name, v)
	}
	return esp.SPI(n), nil
}

func parsePort(name, v string) (uint16, error) {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return 0, secErr("%s: not a port number: %q", name, v)
	}
	return uint16(n), nil
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// isToken reports whether s is a non-empty RFC 3261 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-.!%*_+`'~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// EffectiveEAlg returns the encryption algorithm, "null" when the parameter
// is absent (TS 33.203 Annex H).
func (m Mechanism) EffectiveEAlg() esp.EncAlg {
	if m.EAlg == "" {
		return esp.EncNull
	}
	return m.EAlg
}

// Suite is the (encryption, integrity) pair m offers or chose.
func (m Mechanism) Suite() Suite { return Suite{EAlg: m.EffectiveEAlg(), Alg: m.Alg} }

// EffectiveMod returns the mode, "trans" when absent (TS 33.203 Annex H).
func (m Mechanism) EffectiveMod() string {
	if m.Mod == "" {
		return ModTrans
	}
	return m.Mod
}

// EffectiveProt returns the protocol, "esp" when absent.
func (m Mechanism) EffectiveProt() string {
	if m.Prot == "" {
		return "esp"
	}
	return m.Prot
}

// String formats m in the order TS 33.203 examples use.
func (m Mechanism) String() string {
	return string(m.appendTo(make([]byte, 0, m.maxLen())))
}

// maxLen bounds the length of m as appendTo writes it: its strings; 25
// bytes of ";q=", ";alg=", ";ealg=", ";prot=", ";mod="; 30 of ";spi-c=",
// ";spi-s=", ";port-c=", ";port-s="; 30 digits (two SPIs, two ports).
func (m Mechanism) maxLen() int {
	n := len(m.Name) + len(m.Q) + len(m.Alg) + len(m.EAlg) + len(m.Prot) + len(m.Mod) + 25 + 30 + 30
	for _, p := range m.Other {
		n += len(p.Name) + len(p.Value) + 2
	}
	return n
}

// appendTo appends m as String formats it.
func (m Mechanism) appendTo(b []byte) []byte {
	b = append(b, m.Name...)
	add := func(k, v string) {
		if v != "" {
			b = append(append(append(append(b, ';'), k...), '='), v...)
		}
	}
	addNum := func(k string, v uint64) {
		if v != 0 {
			b = strconv.AppendUint(append(append(append(b, ';'), k...), '='), v, 10)
		}
	}
	add("q", m.Q)
	add("alg", string(m.Alg))
	add("ealg", string(m.EAlg))
	add("prot", m.Prot)
	add("mod", m.Mod)
	addNum("spi-c", uint64(m.SPIc))
	addNum("spi-s", uint64(m.SPIs))
	addNum("port-c", uint64(m.PortC))
	addNum("port-s", uint64(m.PortS))
	for _, p := range m.Other {
		b = append(append(b, ';'), p.Name...)
		if p.Value != "" {
			b = append(append(b, '='), p.Value...)
		}
	}
	return b
}

// FormatSecurity joins mechanisms into one header value, made in one
// buffer (the P-CSCF formats a Security-Server for every challenge).
func FormatSecurity(ms []Mechanism) string {
	n := 0
	for _, m := range ms {
		n += m.maxLen() + 2
	}
	b := make([]byte, 0, n)
	for i, m := range ms {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = m.appendTo(b)
	}
	return string(b)
}

// equalMechanism compares two mechanisms parameter by parameter, treating
// absent defaults as equal to their explicit value.
func equalMechanism(a, b Mechanism) bool {
	if a.Name != b.Name || a.Alg != b.Alg || a.EffectiveEAlg() != b.EffectiveEAlg() ||
		a.EffectiveProt() != b.EffectiveProt() || a.EffectiveMod() != b.EffectiveMod() ||
		a.SPIc != b.SPIc || a.SPIs != b.SPIs || a.PortC != b.PortC || a.PortS != b.PortS ||
		qValue(a.Q) != qValue(b.Q) || len(a.Other) != len(b.Other) {
		return false
	}
	for i := range a.Other {
		if a.Other[i] != b.Other[i] {
			return false
		}
	}
	return true
}

func qValue(q string) float64 {
	if q == "" {
		return 1 // RFC 3329 §2.2: absent means no preference
	}
	f, _ := strconv.ParseFloat(q, 64)
	return f
}

// VerifyMatches reports whether a Security-Verify list equals the
// Security-Server list the registrar sent (RFC 3329 §2.3.1 step 5: the server
// compares them and refuses the request on any difference — bid-down
// protection). Order matters: the Security-Verify echoes the list as sent.
func VerifyMatches(verify, server []Mechanism) bool {
	if len(verify) != len(server) {
		return false
	}
	for i := range verify {
		if !equalMechanism(verify[i], server[i]) {
			return false
		}
	}
	return true
}
