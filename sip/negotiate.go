package sip

import (
	"fmt"
	"slices"
	"strings"

	"github.com/imsec/imsec/esp"
)

// Suite is one (encryption, integrity) pair of a sec-agree offer or
// preference.
type Suite struct {
	EAlg esp.EncAlg
	Alg  esp.AuthAlg
}

func (s Suite) String() string { return string(s.EAlg) + "/" + string(s.Alg) }

// DefaultPreference is the registrar's default order: AES-CBC before
// DES-EDE3-CBC (interop only), HMAC-SHA-1-96 before HMAC-MD5-96. Null
// encryption is not in it: it is only chosen when AllowNull is set.
var DefaultPreference = []Suite{
	{esp.EncAESCBC, esp.AuthHMACSHA196},
	{esp.EncAESCBC, esp.AuthHMACMD596},
	{esp.EncDES3CBC, esp.AuthHMACSHA196},
	{esp.EncDES3CBC, esp.AuthHMACMD596},
}

// NullSuites are appended to a preference when null encryption is allowed.
var NullSuites = []Suite{{esp.EncNull, esp.AuthHMACSHA196}, {esp.EncNull, esp.AuthHMACMD596}}

// Negotiation errors, each wrapping ErrSecAgree.
var (
	ErrNoIPsec3GPP  = secErr("no ipsec-3gpp mechanism offered")
	ErrNoCommonMode = secErr("no ipsec-3gpp offer with prot=esp in a mode we accept")
	ErrNATNoUDPEnc  = secErr("a NAT is between us and no offer is UDP-encapsulated (mod=UDP-enc-tun): plain ESP does not cross a NAT")
	ErrNoCommonAlg  = secErr("no offered algorithm pair is acceptable")
)

// DefaultModes is the mode preference of both ends when none is
// configured: ESP in UDP, tunnel mode, the one mode that crosses a NAT and
// needs no privilege.
var DefaultModes = []string{ModUDPEncTun}

// AllModes lists the sec-agree modes imsec knows, in the order TS 33.203
// Annex H writes them, then imsec's extension.
var AllModes = []string{ModTrans, ModTun, ModUDPEncTun, ModUDPEncTrans}

// PlainESP reports whether mode carries ESP directly in IP (protocol 50),
// not in UDP: such SAs need a raw socket (CAP_NET_RAW) and cannot cross a
// NAT (RFC 3948 §1).
func PlainESP(mode string) bool { return mode == ModTrans || mode == ModTun }

// TransportMode reports whether mode's SAs are in transport mode: the
// UE's own address is its address inside them (no DHCP, no pool address).
func TransportMode(mode string) bool { return mode == ModTrans || mode == ModUDPEncTrans }

// ParseModes parses a comma-separated mode preference such as
// "UDP-enc-tun,trans" (any case): each of AllModes at most once, most
// preferred first.
func ParseModes(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		m := canonicalMod(f)
		if !slices.Contains(AllModes, m) {
			return nil, fmt.Errorf("mode %q: want one of %s", f, strings.Join(AllModes, ", "))
		}
		if slices.Contains(out, m) {
			return nil, fmt.Errorf("mode %s given twice", m)
		}
		out = append(out, m)
	}
	return out, nil
}

// Policy is how a P-CSCF picks one of a UE's offers: the modes and the
// algorithm pairs it accepts, each most preferred first.
type Policy struct {
	Modes  []string // default DefaultModes
	Suites []Suite  // default DefaultPreference
}

// Choose picks the client offer to answer in Security-Server (TS 33.203
// §7.1, RFC 3329 §2.3.1, TS 24.229 §5.2.2 and Annex F.2.2). Only
// ipsec-3gpp offers with prot=esp count. When natted (the REGISTER's Via
// differs from its source, TS 24.229 Annex F.2.2), only modes that cross
// a NAT are eligible: the UE's UDP-enc-tun, never plain ESP. Otherwise the
// modes are tried in the policy's order. Within the first mode the UE
// offered, the first algorithm pair of the policy that the UE offered
// wins. The returned mechanism is the UE's own entry (its SPIs and ports).
func (p Policy) Choose(offers []Mechanism, natted bool) (Mechanism, error) {
	modes, suites := p.Modes, p.Suites
	if len(modes) == 0 {
		modes = DefaultModes
	}
	if len(suites) == 0 {
		suites = DefaultPreference
	}
	sawIPsec, sawMode, sawPlain := false, false, false
	var usable []Mechanism
	for _, m := range offers {
		if m.Name != MechIPsec3GPP {
			continue
		}
		sawIPsec = true
		if m.EffectiveProt() != "esp" || !slices.Contains(modes, m.EffectiveMod()) {
			continue
		}
		if natted && PlainESP(m.EffectiveMod()) {
			sawPlain = true
			continue
		}
		sawMode = true
		usable = append(usable, m)
	}
	switch {
	case !sawIPsec:
		return Mechanism{}, ErrNoIPsec3GPP
	case !sawMode && sawPlain:
		return Mechanism{}, ErrNATNoUDPEnc
	case !sawMode:
		return Mechanism{}, ErrNoCommonMode
	}
	// A mode the UE offered only with pairs we refuse falls through to
	// the next: a worse mode is still better than a 494.
	for _, mode := range modes {
		for _, su := range suites {
			for _, m := range usable {
				if m.EffectiveMod() == mode && m.Suite() == su {
					return m, nil
				}
			}
		}
	}
	return Mechanism{}, ErrNoCommonAlg
}

// Choose is Policy{Suites: prefs}.Choose(offers, false): the default modes,
// no NAT.
func Choose(offers []Mechanism, prefs []Suite) (Mechanism, error) {
	return Policy{Suites: prefs}.Choose(offers, false)
}

// offersFor is what a list of modes and algorithm pairs looks like as
// mechanisms without SPIs or ports (a 494's Security-Server), mode by
// mode.
func offersFor(modes []string, suites []Suite) []Mechanism {
	var ms []Mechanism
	for _, mode := range modes {
		for _, p := range suites {
			ms = append(ms, Mechanism{Name: MechIPsec3GPP, Alg: p.Alg, EAlg: p.EAlg, Prot: "esp", Mod: mode})
		}
	}
	return ms
}

// The algorithms TS 33.203 §6.3 (and Annex H) lets sec-agree negotiate,
// in esp's names.
var (
	secAgreeEAlgs = []esp.EncAlg{esp.EncAESCBC, esp.EncDES3CBC, esp.EncNull}
	secAgreeAlgs  = []esp.AuthAlg{esp.AuthHMACSHA196, esp.AuthHMACMD596}
)

// ParseSuite parses "ealg/alg", e.g. "aes-cbc/hmac-sha-1-96", and checks
// that sec-agree can negotiate the pair.
func ParseSuite(s string) (Suite, error) {
	e, a, ok := strings.Cut(strings.TrimSpace(s), "/")
	su := Suite{EAlg: esp.EncAlg(strings.ToLower(e)), Alg: esp.AuthAlg(strings.ToLower(a))}
	if !ok || !slices.Contains(secAgreeEAlgs, su.EAlg) || !slices.Contains(secAgreeAlgs, su.Alg) {
		return Suite{}, fmt.Errorf("suite %q: want ealg/alg with ealg one of %v and alg one of %v", s, secAgreeEAlgs, secAgreeAlgs)
	}
	return su, nil
}

// checkOffers rejects ipsec-3gpp offers that could never make an SA set
// (RFC 4303 §2.1, TS 33.203 §7.1): an SPI in the reserved range 0..255,
// spi-c equal to spi-s, a missing port, or port-c equal to port-s. They are
// the UE's mistake (or an attacker's): 400, not a server error.
func checkOffers(offers []Mechanism) error {
	for _, m := range offers {
		if m.Name != MechIPsec3GPP {
			continue
		}
		switch {
		case m.SPIc <= esp.SPIReservedMax || m.SPIs <= esp.SPIReservedMax:
			return secErr("spi-c %d / spi-s %d: SPIs 0..%d are reserved", m.SPIc, m.SPIs, esp.SPIReservedMax)
		case m.SPIc == m.SPIs:
			return secErr("spi-c equals spi-s (%d)", m.SPIc)
		case m.PortC == 0 || m.PortS == 0:
			return secErr("port-c and port-s are required")
		case m.PortC == m.PortS:
			return secErr("port-c equals port-s (%d)", m.PortC)
		}
	}
	return nil
}

// checkModes refuses a mode list with unknown or repeated modes.
func checkModes(modes []string) error {
	for i, m := range modes {
		switch {
		case !slices.Contains(AllModes, m):
			return fmt.Errorf("mode %q: want one of %s", m, strings.Join(AllModes, ", "))
		case slices.Contains(modes[:i], m):
			return fmt.Errorf("mode %s given twice", m)
		}
	}
	return nil
}
