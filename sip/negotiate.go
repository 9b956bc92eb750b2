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
	ErrNoIPsec3GPP = secErr("no ipsec-3gpp mechanism offered")
	ErrNoUDPEncTun = secErr("no ipsec-3gpp offer with mod=UDP-enc-tun and prot=esp")
	ErrNoCommonAlg = secErr("no offered algorithm pair is acceptable")
)

// Choose picks the client offer to answer in Security-Server (TS 33.203
// §7.1, RFC 3329 §2.3.1): among the ipsec-3gpp offers with prot=esp and
// mod=UDP-enc-tun, the first pair in prefs that the UE offered. The returned
// mechanism is the UE's own entry (its SPIs and ports).
func Choose(offers []Mechanism, prefs []Suite) (Mechanism, error) {
	sawIPsec, sawMode := false, false
	var usable []Mechanism
	for _, m := range offers {
		if m.Name != MechIPsec3GPP {
			continue
		}
		sawIPsec = true
		if m.EffectiveProt() != "esp" || m.EffectiveMod() != ModUDPEncTun {
			continue
		}
		sawMode = true
		usable = append(usable, m)
	}
	switch {
	case !sawIPsec:
		return Mechanism{}, ErrNoIPsec3GPP
	case !sawMode:
		return Mechanism{}, ErrNoUDPEncTun
	}
	for _, p := range prefs {
		for _, m := range usable {
			if m.Suite() == p {
				return m, nil
			}
		}
	}
	return Mechanism{}, ErrNoCommonAlg
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
