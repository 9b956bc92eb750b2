package sip

import (
	"errors"
	"strings"
	"testing"
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
	if _, err := Choose(transOnly, DefaultPreference); !errors.Is(err, ErrNoUDPEncTun) {
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
	})
}
