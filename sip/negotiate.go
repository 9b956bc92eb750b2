package sip

// Suite is one (encryption, integrity) pair a registrar is willing to use.
type Suite struct{ EAlg, Alg string }

// DefaultPreference is the registrar's default order: AES-CBC before
// DES-EDE3-CBC (interop only), HMAC-SHA-1-96 before HMAC-MD5-96. Null
// encryption is not in it: it is only chosen when AllowNull is set.
var DefaultPreference = []Suite{
	{"aes-cbc", "hmac-sha-1-96"},
	{"aes-cbc", "hmac-md5-96"},
	{"des-ede3-cbc", "hmac-sha-1-96"},
	{"des-ede3-cbc", "hmac-md5-96"},
}

// NullSuites are appended to a preference when null encryption is allowed.
var NullSuites = []Suite{{"null", "hmac-sha-1-96"}, {"null", "hmac-md5-96"}}

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
			if m.EffectiveEAlg() == p.EAlg && m.Alg == p.Alg {
				return m, nil
			}
		}
	}
	return Mechanism{}, ErrNoCommonAlg
}
