package sip

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/imsec/imsec/esp"
)

// TS 33.203 / TS 24.229 style examples.
const uePair = `ipsec-3gpp; alg=hmac-sha-1-96; ealg=aes-cbc; spi-c=1234567; spi-s=1234568; port-c=5062; port-s=5064; mod=UDP-enc-tun, ipsec-3gpp;alg=hmac-md5-96;ealg=null;spi-c=1234567;spi-s=1234568;port-c=5062;port-s=5064;mod=trans`

func TestParseSecurity(t *testing.T) {
	ms, err := ParseSecurity(uePair)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("got %d mechanisms", len(ms))
	}
	m := ms[0]
	want := Mechanism{Name: "ipsec-3gpp", Alg: "hmac-sha-1-96", EAlg: "aes-cbc", SPIc: 1234567, SPIs: 1234568, PortC: 5062, PortS: 5064, Mod: ModUDPEncTun}
	if !equalMechanism(m, want) {
		t.Fatalf("got %+v", m)
	}
	if ms[1].EffectiveMod() != ModTrans || ms[1].EffectiveEAlg() != "null" {
		t.Fatalf("second: %+v", ms[1])
	}
}

func TestParseSecurityDefaultsAndUnknown(t *testing.T) {
	ms, err := ParseSecurity(`IPSEC-3GPP;ALG=HMAC-MD5-96;spi-c=1;spi-s=2;port-c=3;port-s=4;mod=udp-enc-tun;foo="bar";flag`)
	if err != nil {
		t.Fatal(err)
	}
	m := ms[0]
	if m.Name != "ipsec-3gpp" || m.Alg != "hmac-md5-96" || m.EffectiveEAlg() != "null" || m.EffectiveProt() != "esp" || m.Mod != ModUDPEncTun {
		t.Fatalf("%+v", m)
	}
	if len(m.Other) != 2 || m.Other[0] != (Param{"foo", "bar"}) || m.Other[1] != (Param{"flag", ""}) {
		t.Fatalf("other %+v", m.Other)
	}
}

func TestParseSecurityErrors(t *testing.T) {
	bad := []string{
		"", " , ", "ipsec 3gpp", "ipsec-3gpp;spi-c=x", "ipsec-3gpp;spi-c=4294967296",
		"ipsec-3gpp;port-c=0", "ipsec-3gpp;port-s=65536", "ipsec-3gpp;alg=", "ipsec-3gpp;alg=a;alg=b",
		"ipsec-3gpp;q=high", "ipsec-3gpp;b@d=1", strings.Repeat("digest,", 65),
	}
	for _, s := range bad {
		if _, err := ParseSecurity(s); err == nil || !errors.Is(err, ErrSecAgree) {
			t.Errorf("%q: err = %v", s, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	ms, err := ParseSecurity(uePair)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseSecurity(FormatSecurity(ms))
	if err != nil {
		t.Fatal(err)
	}
	if !VerifyMatches(again, ms) {
		t.Fatalf("round trip changed:\n%s\n%s", FormatSecurity(ms), FormatSecurity(again))
	}
}

func TestVerifyMatchesBidDown(t *testing.T) {
	server, _ := ParseSecurity(`ipsec-3gpp;q=0.1;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=10;spi-s=11;port-c=6100;port-s=6101;mod=UDP-enc-tun`)
	same, _ := ParseSecurity(`ipsec-3gpp; q=0.100; alg=hmac-sha-1-96; ealg=aes-cbc; spi-c=10; spi-s=11; port-c=6100; port-s=6101; mod=udp-enc-tun`)
	if !VerifyMatches(same, server) {
		t.Fatal("equivalent Security-Verify refused")
	}
	// Every single-parameter change must be refused.
	changes := []func(*Mechanism){
		func(m *Mechanism) { m.Alg = "hmac-md5-96" },
		func(m *Mechanism) { m.EAlg = "" },
		func(m *Mechanism) { m.EAlg = "des-ede3-cbc" },
		func(m *Mechanism) { m.Mod = ModTrans },
		func(m *Mechanism) { m.Prot = "ah" },
		func(m *Mechanism) { m.SPIc++ },
		func(m *Mechanism) { m.SPIs++ },
		func(m *Mechanism) { m.PortC++ },
		func(m *Mechanism) { m.PortS++ },
		func(m *Mechanism) { m.Q = "0.5" },
		func(m *Mechanism) { m.Name = "digest" },
		func(m *Mechanism) { m.Other = append(m.Other, Param{"x", "1"}) },
	}
	for i, ch := range changes {
		v := server[0]
		ch(&v)
		if VerifyMatches([]Mechanism{v}, server) {
			t.Errorf("change %d accepted: %s", i, v)
		}
	}
	if VerifyMatches(nil, server) || VerifyMatches(append(server, server[0]), server) {
		t.Error("length mismatch accepted")
	}
}

func TestChoose(t *testing.T) {
	offers, _ := ParseSecurity(uePair)
	m, err := Choose(offers, DefaultPreference)
	if err != nil || m.EAlg != "aes-cbc" || m.Alg != "hmac-sha-1-96" {
		t.Fatalf("%v %+v", err, m)
	}
	// Only null encryption offered: refused unless the registrar allows it.
	nullOnly, _ := ParseSecurity(`ipsec-3gpp;alg=hmac-sha-1-96;spi-c=1;spi-s=2;port-c=3;port-s=4;mod=UDP-enc-tun`)
	if _, err := Choose(nullOnly, DefaultPreference); !errors.Is(err, ErrNoCommonAlg) {
		t.Fatalf("null chosen by default: %v", err)
	}
	if m, err := Choose(nullOnly, append(append([]Suite{}, DefaultPreference...), NullSuites...)); err != nil || m.EffectiveEAlg() != "null" {
		t.Fatalf("null not chosen when allowed: %v", err)
	}
	transOnly, _ := ParseSecurity(`ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=3;port-s=4`)
	if _, err := Choose(transOnly, DefaultPreference); !errors.Is(err, ErrNoCommonMode) {
		t.Fatalf("trans-only: %v", err)
	}
	tls, _ := ParseSecurity(`tls;q=0.2, digest`)
	if _, err := Choose(tls, DefaultPreference); !errors.Is(err, ErrNoIPsec3GPP) {
		t.Fatalf("tls: %v", err)
	}
	// Preference order wins over offer order.
	md5first, _ := ParseSecurity(`ipsec-3gpp;alg=hmac-md5-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=3;port-s=4;mod=UDP-enc-tun, ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=3;port-s=4;mod=UDP-enc-tun`)
	if m, _ := Choose(md5first, DefaultPreference); m.Alg != "hmac-sha-1-96" {
		t.Fatalf("preference ignored: %+v", m)
	}
}

// offerOf builds a UE offer entry for the policy tests.
func offerOf(mode string, su Suite) Mechanism {
	return Mechanism{Name: MechIPsec3GPP, Alg: su.Alg, EAlg: su.EAlg, Mod: mode, SPIc: 1000, SPIs: 1001, PortC: 5062, PortS: 5068}
}

func TestPolicyChoose(t *testing.T) {
	sha, md5 := DefaultPreference[0], DefaultPreference[1]
	all := []Mechanism{offerOf(ModUDPEncTun, sha), offerOf(ModTrans, sha), offerOf(ModTun, sha)}
	cases := []struct {
		name    string
		pol     Policy
		offers  []Mechanism
		natted  bool
		mode    string
		suite   Suite
		wantErr error
	}{
		{"default policy takes UDP-enc-tun", Policy{}, all, false, ModUDPEncTun, sha, nil},
		{"trans preferred, no NAT", Policy{Modes: []string{ModTrans, ModUDPEncTun}}, all, false, ModTrans, sha, nil},
		{"tun preferred, no NAT", Policy{Modes: []string{ModTun, ModTrans}}, all, false, ModTun, sha, nil},
		{"UDP-enc-trans behind a NAT", Policy{Modes: []string{ModTrans, ModUDPEncTrans, ModUDPEncTun}},
			append(all, offerOf(ModUDPEncTrans, sha)), true, ModUDPEncTrans, sha, nil},
		{"trans preferred, NAT: UDP-enc-tun", Policy{Modes: []string{ModTrans, ModTun, ModUDPEncTun}}, all, true, ModUDPEncTun, sha, nil},
		{"NAT, only plain ESP offered", Policy{Modes: AllModes}, all[1:], true, "", Suite{}, ErrNATNoUDPEnc},
		{"NAT, only plain ESP accepted", Policy{Modes: []string{ModTrans}}, all, true, "", Suite{}, ErrNATNoUDPEnc},
		{"mode absent means trans (TS 33.203 Annex H)", Policy{Modes: []string{ModTrans}}, []Mechanism{offerOf("", sha)}, false, ModTrans, sha, nil},
		{"no common mode", Policy{Modes: []string{ModTun}}, []Mechanism{offerOf(ModTrans, sha)}, false, "", Suite{}, ErrNoCommonMode},
		{"ah is not esp", Policy{Modes: AllModes}, []Mechanism{func() Mechanism { m := offerOf(ModTrans, sha); m.Prot = "ah"; return m }()}, false, "", Suite{}, ErrNoCommonMode},
		// The mode order wins over the algorithm order...
		{"mode before pair", Policy{Modes: []string{ModTrans, ModUDPEncTun}}, []Mechanism{offerOf(ModUDPEncTun, sha), offerOf(ModTrans, md5)}, false, ModTrans, md5, nil},
		// ... but a preferred mode offered only with refused pairs falls through.
		{"refused pair falls through", Policy{Modes: []string{ModTrans, ModUDPEncTun}},
			[]Mechanism{offerOf(ModTrans, Suite{"null", "hmac-sha-1-96"}), offerOf(ModUDPEncTun, md5)}, false, ModUDPEncTun, md5, nil},
		{"no common pair", Policy{Modes: AllModes}, []Mechanism{offerOf(ModTrans, Suite{"null", "hmac-sha-1-96"})}, false, "", Suite{}, ErrNoCommonAlg},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := c.pol.Choose(c.offers, c.natted)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.EffectiveMod() != c.mode || m.Suite() != c.suite {
				t.Fatalf("chose %s, want mod=%s %s", m, c.mode, c.suite)
			}
		})
	}
}

// TestPolicyChooseNeverPlainESPBehindNAT checks the rule against random
// offers and policies: behind a NAT the choice is never plain ESP, and
// whatever is chosen is an offered entry in an accepted mode and pair.
func TestPolicyChooseNeverPlainESPBehindNAT(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	suites := append(append([]Suite{}, DefaultPreference...), NullSuites...)
	modes := append(append([]string{}, AllModes...), "", "bogus")
	for range 2000 {
		var offers []Mechanism
		for range r.IntN(6) {
			offers = append(offers, offerOf(modes[r.IntN(len(modes))], suites[r.IntN(len(suites))]))
		}
		pm := append([]string{}, AllModes...)
		r.Shuffle(len(pm), func(i, j int) { pm[i], pm[j] = pm[j], pm[i] })
		pol := Policy{Modes: pm[:1+r.IntN(len(pm))], Suites: DefaultPreference}
		natted := r.IntN(2) == 0
		m, err := pol.Choose(offers, natted)
		if err != nil {
			continue
		}
		if natted && PlainESP(m.EffectiveMod()) {
			t.Fatalf("plain ESP %s chosen behind a NAT from %s", m, FormatSecurity(offers))
		}
		if !slices.Contains(pol.Modes, m.EffectiveMod()) || !slices.Contains(pol.Suites, m.Suite()) {
			t.Fatalf("%s is outside the policy %v", m, pol)
		}
		if !slices.ContainsFunc(offers, func(o Mechanism) bool { return equalMechanism(o, m) }) {
			t.Fatalf("%s was not offered", m)
		}
	}
}

func TestParseModes(t *testing.T) {
	got, err := ParseModes(" udp-enc-tun, TRANS ,tun")
	if err != nil || !slices.Equal(got, []string{ModUDPEncTun, ModTrans, ModTun}) {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "trans,", "trans,trans", "UDP-enc-tunnel", "tun;trans"} {
		if _, err := ParseModes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseModes(f *testing.F) {
	f.Add("UDP-enc-tun,trans,tun")
	f.Add("trans")
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseModes(s)
		if err != nil {
			return
		}
		again, err := ParseModes(strings.Join(ms, ","))
		if err != nil || !slices.Equal(again, ms) {
			t.Fatalf("%q -> %v -> %v %v", s, ms, again, err)
		}
		for _, m := range ms {
			if !slices.Contains(AllModes, m) {
				t.Fatalf("%q gave unknown mode %q", s, m)
			}
		}
	})
}

func TestParseSecurityTruncation(t *testing.T) {
	for i := range len(uePair) {
		ParseSecurity(uePair[:i]) // must not panic; errors are fine
	}
}

func FuzzParseSecurity(f *testing.F) {
	f.Add(uePair)
	f.Add(`ipsec-3gpp;q=0.1;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=10;spi-s=11;port-c=6100;port-s=6101;mod=UDP-enc-tun`)
	f.Add(`tls;q=0.2, digest;d-alg=md5`)
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseSecurity(s)
		if err != nil {
			return
		}
		// Whatever parses must survive a format/parse round trip unchanged.
		again, err := ParseSecurity(FormatSecurity(ms))
		if err != nil {
			t.Fatalf("formatted %q does not parse: %v", FormatSecurity(ms), err)
		}
		if !VerifyMatches(again, ms) {
			t.Fatalf("round trip changed %q -> %q", s, FormatSecurity(again))
		}
		for _, m := range ms {
			if n := len(m.String()); n > m.maxLen() {
				t.Fatalf("%q is %d bytes, maxLen says at most %d", m.String(), n, m.maxLen())
			}
		}
	})
}

// BenchmarkParseSecurity parses a UE's Security-Client offering four
// algorithm pairs in two modes (TS 33.203 §7.1).
func BenchmarkParseSecurity(b *testing.B) {
	var ms []Mechanism
	for _, mod := range []string{ModUDPEncTun, ModTun} {
		for _, alg := range []esp.AuthAlg{esp.AuthHMACSHA196, esp.AuthHMACMD596} {
			for _, ealg := range []esp.EncAlg{esp.EncAESCBC, esp.EncNull} {
				ms = append(ms, Mechanism{Name: MechIPsec3GPP, Alg: alg, EAlg: ealg, Prot: "esp", Mod: mod,
					SPIc: 0x10000001, SPIs: 0x10000002, PortC: 50000, PortS: 50001})
			}
		}
	}
	v := FormatSecurity(ms)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSecurity(v); err != nil {
			b.Fatal(err)
		}
	}
}

// inside reports whether s's bytes lie in of's memory (s is a substring of
// it, not a copy).
func inside(s, of string) bool {
	if s == "" || of == "" {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(of)))
	return p >= lo && p < lo+uintptr(len(of))
}

// TestParseSecurityOwnsStrings: no string of a parsed Mechanism points
// into the header value, which an SA set would otherwise keep alive for
// the registration's life; known values are the package's constants.
func TestParseSecurityOwnsStrings(t *testing.T) {
	v := strings.Clone("ipsec-3gpp;q=0.1;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=trans;spi-c=1111;spi-s=2222;port-c=5062;port-s=5064;x-vendor=\"abc\"," +
		" IPSEC-3GPP;alg=HMAC-MD5-96;ealg=null;prot=ESP;mod=tun;spi-c=3333;spi-s=4444;port-c=5062;port-s=5064;flag," +
		" ipsec-3gpp;alg=hmac-new;ealg=cipher-new;prot=esp;mod=new-mode;spi-c=5555;spi-s=6666;port-c=5062;port-s=5064")
	ms, err := ParseSecurity(v)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		strs := []string{m.Name, m.Q, string(m.Alg), string(m.EAlg), m.Prot, m.Mod}
		for _, p := range m.Other {
			strs = append(strs, p.Name, p.Value)
		}
		for _, s := range strs {
			if inside(s, v) {
				t.Errorf("mechanism %d: %q is a substring of the header value", i, s)
			}
		}
	}
	if unsafe.StringData(ms[1].Name) != unsafe.StringData(MechIPsec3GPP) || unsafe.StringData(string(ms[0].Alg)) != unsafe.StringData(string(esp.AuthHMACSHA196)) {
		t.Error("known values are not the package's constants")
	}
}

// TestFormatSecurityAllocs: a Security-Server value is made in one buffer
// and one string. The P-CSCF formats one for every challenge; before, each
// mechanism took a builder that grew three times, a string per number and
// the join (17 objects for the pair below).
func TestFormatSecurityAllocs(t *testing.T) {
	ms, err := ParseSecurity("ipsec-3gpp;q=0.1;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=trans;spi-c=1111;spi-s=2222;port-c=5062;port-s=5064, " +
		"ipsec-3gpp;alg=hmac-sha-1-96;ealg=null;spi-c=1111;spi-s=2222;port-c=5062;port-s=5064;extra=1")
	if err != nil {
		t.Fatal(err)
	}
	want := "ipsec-3gpp;q=0.1;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=trans;spi-c=1111;spi-s=2222;port-c=5062;port-s=5064, " +
		"ipsec-3gpp;alg=hmac-sha-1-96;ealg=null;spi-c=1111;spi-s=2222;port-c=5062;port-s=5064;extra=1"
	if got := FormatSecurity(ms); got != want {
		t.Fatalf("FormatSecurity = %q, want %q", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { FormatSecurity(ms) }); n > 2 {
		t.Errorf("FormatSecurity: %.0f allocations, want at most 2", n)
	}
}
