package akakeys

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// RFC 2617 §3.5, the worked example ("Circle Of Life").
const (
	rfc2617Challenge = `Digest
                 realm="testrealm@host.com",
                 qop="auth,auth-int",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41"`
	rfc2617Authorization = `Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41"`
	rfc2617Password = "Circle Of Life"
	rfc2617Method   = "GET"
)

func TestDigestRFC2617Example(t *testing.T) {
	ch, err := ParseChallenge(rfc2617Challenge)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Realm != "testrealm@host.com" || ch.QOP != "auth,auth-int" ||
		ch.Nonce != "dcd98b7102dd2f0e8b11d0f600bfb0c093" || ch.Opaque != "5ccc069c403ebaf9f0171e9517f40e41" {
		t.Fatalf("challenge %+v", ch)
	}
	c, err := ParseAuthorization(rfc2617Authorization)
	if err != nil {
		t.Fatal(err)
	}
	want := Credentials{Username: "Mufasa", Realm: "testrealm@host.com", Nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
		URI: "/dir/index.html", QOP: "auth", NC: 1, CNonce: "0a4f113b",
		Response: "6629fae49393a05397450978507c4ef1", Opaque: "5ccc069c403ebaf9f0171e9517f40e41"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("parsed %+v\nwant   %+v", c, want)
	}
	got, err := Response(&c, rfc2617Method, []byte(rfc2617Password))
	if err != nil || got != "6629fae49393a05397450978507c4ef1" {
		t.Fatalf("Response = %q, %v; RFC 2617 §3.5 says 6629fae49393a05397450978507c4ef1", got, err)
	}
	if !verify(&c, rfc2617Method, []byte(rfc2617Password)) {
		t.Fatal("verify of the RFC 2617 example failed")
	}
	for _, bad := range []func(*Credentials){
		func(c *Credentials) { c.Username = "mufasa" },
		func(c *Credentials) { c.Realm += "." },
		func(c *Credentials) { c.Nonce = "ecd98b7102dd2f0e8b11d0f600bfb0c093" },
		func(c *Credentials) { c.URI = "/dir/index.htm" },
		func(c *Credentials) { c.NC = 2 },
		func(c *Credentials) { c.CNonce = "0a4f113c" },
		func(c *Credentials) { c.Response = "6629fae49393a05397450978507c4ef0" },
		func(c *Credentials) { c.Response = c.Response[:31] },
		func(c *Credentials) { c.QOP = "" },
	} {
		cc := c
		bad(&cc)
		if verify(&cc, rfc2617Method, []byte(rfc2617Password)) {
			t.Errorf("altered credentials %+v still verify", cc)
		}
	}
	if verify(&c, "POST", []byte(rfc2617Password)) || verify(&c, rfc2617Method, []byte("Circle of Life")) {
		t.Error("wrong method or password verifies")
	}
	upper := c
	upper.Response = strings.ToUpper(c.Response)
	if !verify(&upper, rfc2617Method, []byte(rfc2617Password)) {
		t.Error("upper-case hex response refused")
	}
}

// The RFC 2069 form (no qop): response = MD5(HA1:nonce:HA2).
func TestDigestNoQOP(t *testing.T) {
	c := Credentials{Username: "u", Realm: "r", Nonce: "n", URI: "sip:x"}
	got, err := Response(&c, "REGISTER", []byte("p"))
	if err != nil {
		t.Fatal(err)
	}
	ha1 := hexMD5("u:r:p")
	ha2 := hexMD5("REGISTER:sip:x")
	if want := hexMD5(ha1 + ":n:" + ha2); got != want {
		t.Fatalf("Response = %s, want %s", got, want)
	}
	for _, c := range []Credentials{{Algorithm: "MD5-sess"}, {Algorithm: "SHA-256"}, {QOP: "auth-int"}, {Algorithm: "AKAv2-MD5"}} {
		if _, err := Response(&c, "REGISTER", nil); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%+v: err = %v, want ErrUnsupported", c, err)
		}
		if Verify(&c, "REGISTER", RES{}) {
			t.Errorf("%+v verifies", c)
		}
	}
}

func hexMD5(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

// RES is binary: the password is its raw octets, NUL, 0xff, ':' and '"'
// included, never text or hex.
func TestDigestBinaryRES(t *testing.T) {
	res := RES{0x00, 0xff, ':', '"', 0x00, '\\', 0x80, 0x01}
	c := Credentials{Username: "alice@ims.example", Realm: "ims.example", Nonce: "bm9uY2U=", URI: "sip:ims.example",
		Algorithm: AlgorithmAKAv1MD5, QOP: QOPAuth, NC: 1, CNonce: "abcdef01"}
	if err := c.SetResponse("REGISTER", res[:]); err != nil {
		t.Fatal(err)
	}
	ha1 := md5.Sum(append([]byte("alice@ims.example:ims.example:"), res[:]...))
	ha2 := hexMD5("REGISTER:sip:ims.example")
	want := hexMD5(hex.EncodeToString(ha1[:]) + ":bm9uY2U=:00000001:abcdef01:auth:" + ha2)
	if c.Response != want {
		t.Fatalf("response %s, want %s", c.Response, want)
	}
	// Stopping at the NUL, or using hex text, gives another digest.
	for _, wrong := range [][]byte{res[:0], []byte(hex.EncodeToString(res[:]))} {
		if r, _ := Response(&c, "REGISTER", wrong); r == want {
			t.Fatalf("password %q gives the same digest", wrong)
		}
	}
	if !Verify(&c, "REGISTER", res) {
		t.Fatal("Verify with XRES = RES failed")
	}
	for bit := range 64 {
		x := res
		x[bit/8] ^= 1 << (bit % 8)
		if Verify(&c, "REGISTER", x) {
			t.Fatalf("XRES with bit %d flipped verifies", bit)
		}
	}
	// Through the header text and back.
	back, err := ParseAuthorization(c.String())
	if err != nil || !Verify(&back, "REGISTER", res) {
		t.Fatalf("parsed %q: %+v %v", c.String(), back, err)
	}
}

// The whole exchange: HSS vector -> nonce -> UE USIM -> credentials ->
// registrar Verify with XRES.
func TestDigestAKAExchange(t *testing.T) {
	m := NewMilenage(testK, testOPc)
	u := newTestUSIM(t, USIMConfig{})
	v := m.Vector(RAND{0xaa, 0x55}, SQNScheme{}.Join(3, 1), AMF{0x80, 0})
	ch := Challenge{Realm: "ims.example", Nonce: BuildNonce(v.RAND, v.AUTN, nil), Algorithm: AlgorithmAKAv1MD5, QOP: QOPAuth, Opaque: "op"}

	// UE side.
	gotCh, err := ParseChallenge(ch.String())
	if err != nil {
		t.Fatal(err)
	}
	r, autn, extra, err := ParseNonce(gotCh.Nonce)
	if err != nil || extra != nil {
		t.Fatal(err, extra)
	}
	res, _, _, err := u.Authenticate(r, autn)
	if err != nil {
		t.Fatal(err)
	}
	cred := Credentials{Username: "alice@ims.example", Realm: gotCh.Realm, Nonce: gotCh.Nonce, URI: "sip:ims.example",
		Algorithm: gotCh.Algorithm, QOP: QOPAuth, NC: 1, CNonce: "0a4f113b", Opaque: gotCh.Opaque, IntegrityProtected: "yes"}
	if err := cred.SetResponse("REGISTER", res[:]); err != nil {
		t.Fatal(err)
	}

	// Registrar side.
	got, err := ParseAuthorization(cred.String())
	if err != nil {
		t.Fatal(err)
	}
	if !Verify(&got, "REGISTER", v.XRES) {
		t.Fatal("registrar refused a correct response")
	}
	if Verify(&got, "INVITE", v.XRES) {
		t.Fatal("response verified for another method")
	}
	if got.IntegrityProtected != "yes" {
		t.Fatalf("integrity-protected %q", got.IntegrityProtected)
	}
}

// RFC 3310 §3.4: on a synchronisation failure the UE sends auts and a
// response computed with an empty password.
func TestDigestSyncFailure(t *testing.T) {
	m := NewMilenage(testK, testOPc)
	u := newTestUSIM(t, USIMConfig{})
	v := m.Vector(RAND{1}, SQNScheme{}.Join(DefaultDelta+5, 0), AMF{}) // too far ahead for a fresh USIM
	_, _, _, err := u.Authenticate(v.RAND, v.AUTN)
	var sf *SyncFailureError
	if !errors.As(err, &sf) {
		t.Fatal(err)
	}
	cred := Credentials{Username: "alice", Realm: "r", Nonce: BuildNonce(v.RAND, v.AUTN, nil), URI: "sip:r",
		Algorithm: AlgorithmAKAv1MD5, QOP: QOPAuth, NC: 1, CNonce: "c"}
	if err := cred.SetSyncFailure("REGISTER", sf.AUTS); err != nil {
		t.Fatal(err)
	}
	empty, _ := Response(&cred, "REGISTER", []byte{})
	if cred.Response != empty || !cred.HasAUTS || cred.AUTS != sf.AUTS {
		t.Fatalf("sync-failure credentials %+v", cred)
	}
	hdr := cred.String()
	if !strings.Contains(hdr, `auts="`+base64.StdEncoding.EncodeToString(sf.AUTS[:])+`"`) {
		t.Fatalf("header %q lacks the quoted base64 AUTS", hdr)
	}
	got, err := ParseAuthorization(hdr)
	if err != nil || !got.HasAUTS || got.AUTS != sf.AUTS {
		t.Fatalf("parsed %+v, %v", got, err)
	}
	if !VerifySyncFailure(&got, "REGISTER") {
		t.Fatal("VerifySyncFailure refused the empty-password response")
	}
	// An auts never authenticates, even with the empty-password digest.
	if Verify(&got, "REGISTER", RES{}) || Verify(&got, "REGISTER", v.XRES) {
		t.Fatal("Verify accepted credentials carrying auts")
	}
	// The registrar hands AUTS to the HSS, which checks MAC-S.
	rnd, _, _, _ := ParseNonce(got.Nonce)
	sqnMS, err := m.VerifyAUTS(rnd, got.AUTS)
	if err != nil || sqnMS != (SQN{}) {
		t.Fatalf("VerifyAUTS = %x, %v", sqnMS, err)
	}
	// SetResponse clears auts.
	got.SetResponse("REGISTER", v.XRES[:])
	if got.HasAUTS || VerifySyncFailure(&got, "REGISTER") || !Verify(&got, "REGISTER", v.XRES) {
		t.Fatal("SetResponse did not turn the credentials back into a normal answer")
	}
}

// The initial REGISTER of TS 24.229 §5.1.1.2.1 carries empty nonce and
// response, and the P-CSCF adds integrity-protected.
func TestDigestInitial3GPP(t *testing.T) {
	const h = `Digest username="user1_private@home1.net", realm="registrar.home1.net", nonce="", uri="sip:registrar.home1.net", response="", integrity-protected="no"`
	c, err := ParseAuthorization(h)
	if err != nil {
		t.Fatal(err)
	}
	want := Credentials{Username: "user1_private@home1.net", Realm: "registrar.home1.net", URI: "sip:registrar.home1.net", IntegrityProtected: "no"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v", c)
	}
	if c.String() != h {
		t.Fatalf("built\n%s\nwant\n%s", c.String(), h)
	}
	// Token form, as some P-CSCFs write it.
	c, err = ParseAuthorization(`Digest username="u", integrity-protected=ip-assoc-pending`)
	if err != nil || c.IntegrityProtected != "ip-assoc-pending" {
		t.Fatalf("%+v %v", c, err)
	}
	if Verify(&want, "REGISTER", RES{}) {
		t.Fatal("empty response verifies")
	}
}

func TestDigestSyntax(t *testing.T) {
	// Escapes, case-insensitive names and scheme, unknown params, LWS.
	c, err := ParseAuthorization("digest\tUSERNAME = \"a\\\"b\\\\c\" ,, ReAlM=\"x\",foo=bar, Baz=\"q, x\", nc=0000000A,qop=auth ")
	if err != nil {
		t.Fatal(err)
	}
	want := Credentials{Username: `a"b\c`, Realm: "x", NC: 10, QOP: "auth",
		Params: []Param{{Name: "foo", Value: "bar"}, {Name: "Baz", Value: "q, x", Quoted: true}}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	if s := c.String(); !strings.Contains(s, `username="a\"b\\c"`) || !strings.Contains(s, `foo=bar, Baz="q, x"`) || !strings.Contains(s, "nc=0000000a") {
		t.Fatalf("built %s", s)
	}
	ch, err := ParseChallenge(`Digest realm="r", nonce="n", algorithm=AKAv1-MD5, stale=TRUE, ik="00112233", ck="44556677", x-y="z"`)
	if err != nil || !ch.Stale || ch.Algorithm != AlgorithmAKAv1MD5 || ch.IK != "00112233" || ch.CK != "44556677" || len(ch.Params) != 1 {
		t.Fatalf("challenge %+v %v", ch, err)
	}

	for _, tc := range []struct {
		in   string
		want error
	}{
		{"", ErrNotDigest},
		{"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", ErrNotDigest},
		{"Digestrealm=x", ErrNotDigest},
		{"Digest,realm=x", ErrNotDigest},
		{`Digest realm`, ErrHeaderSyntax},
		{`Digest realm=`, ErrHeaderSyntax},
		{`Digest realm="x`, ErrHeaderSyntax},
		{`Digest realm="x\`, ErrHeaderSyntax},
		{`Digest realm="x" y`, ErrHeaderSyntax},
		{`Digest realm=a b`, ErrHeaderSyntax},
		{`Digest ="x"`, ErrHeaderSyntax},
		{"Digest realm=\"a\r\nb\"", ErrHeaderSyntax},
		{"Digest realm=\"a\\\nb\"", ErrHeaderSyntax},
		{`Digest realm="a", REALM="b"`, ErrDuplicate},
		{`Digest nc=xyz`, ErrNCSyntax},
		{`Digest nc=123456789`, ErrNCSyntax},
		{`Digest auts="AAAA"`, ErrAUTSEncoding},
		{`Digest auts="!!!!"`, ErrAUTSEncoding},
		{`Digest auts="` + base64.StdEncoding.EncodeToString(make([]byte, 15)) + `"`, ErrAUTSEncoding},
	} {
		if _, err := ParseAuthorization(tc.in); !errors.Is(err, tc.want) {
			t.Errorf("ParseAuthorization(%q) = %v, want %v", tc.in, err, tc.want)
		}
	}
	if _, err := ParseChallenge(`Digest nonce="a", nonce="b"`); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate nonce in challenge: %v", err)
	}
	// auts without padding is accepted.
	a := AUTS{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
	c, err = ParseAuthorization(`Digest auts=` + base64.RawStdEncoding.EncodeToString(a[:]))
	if err != nil || c.AUTS != a {
		t.Errorf("unpadded auts: %+v %v", c, err)
	}
}

func TestNonce(t *testing.T) {
	r := RAND{0: 1, 15: 2}
	autn := AUTN{0: 3, 15: 4}
	n := BuildNonce(r, autn, nil)
	gr, ga, sd, err := ParseNonce(n)
	if err != nil || gr != r || ga != autn || sd != nil {
		t.Fatalf("ParseNonce(BuildNonce) = %x %x %x %v", gr, ga, sd, err)
	}
	n = BuildNonce(r, autn, []byte("server"))
	if _, _, sd, err = ParseNonce(n); err != nil || string(sd) != "server" {
		t.Fatalf("server data %q %v", sd, err)
	}
	if _, _, sd, err = ParseNonce(strings.TrimRight(n, "=")); err != nil || string(sd) != "server" {
		t.Fatalf("unpadded nonce: %q %v", sd, err)
	}
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	if _, _, _, err := ParseNonce(short); !errors.Is(err, ErrNonceTooShort) {
		t.Fatalf("31-octet nonce: %v", err)
	}
	if _, _, _, err := ParseNonce(""); !errors.Is(err, ErrNonceTooShort) {
		t.Fatalf("empty nonce: %v", err)
	}
	if _, _, _, err := ParseNonce("not base64!"); !errors.Is(err, ErrNonceEncoding) {
		t.Fatalf("bad nonce: %v", err)
	}
	// Unpadded base64 is accepted, so the 43-digit prefix is the whole
	// nonce; every shorter prefix holds fewer than 32 octets.
	full := strings.TrimRight(BuildNonce(r, autn, nil), "=")
	for i := range len(full) {
		if _, _, _, err := ParseNonce(full[:i]); err == nil {
			t.Fatalf("prefix %q of a 32-octet nonce accepted", full[:i])
		}
	}
}

// Every prefix of a full header parses or fails cleanly; a prefix that
// parses must rebuild to something that parses to the same value.
func TestDigestTruncation(t *testing.T) {
	a := Credentials{Username: `us"er`, Realm: "r", Nonce: BuildNonce(RAND{1}, AUTN{2}, nil), URI: "sip:r", Response: "0123456789abcdef0123456789abcdef",
		Algorithm: AlgorithmAKAv1MD5, CNonce: "cn", Opaque: "op", QOP: "auth", NC: 7, HasAUTS: true, AUTS: AUTS{9}, IntegrityProtected: "tls-yes",
		Params: []Param{{Name: "x", Value: "y"}}}
	full := a.String()
	if got, err := ParseAuthorization(full); err != nil || !reflect.DeepEqual(got, a) {
		t.Fatalf("round trip of %s: %+v %v", full, got, err)
	}
	for i := range len(full) {
		checkAuthorization(t, full[:i])
	}
	ch := Challenge{Realm: "r", Nonce: "n", Opaque: "o", Domain: "sip:r", Algorithm: "AKAv1-MD5", QOP: "auth,auth-int", Stale: true, IK: "ik", CK: "ck",
		Params: []Param{{Name: "p", Value: "v v", Quoted: true}}}
	fullCh := ch.String()
	if got, err := ParseChallenge(fullCh); err != nil || !reflect.DeepEqual(got, ch) {
		t.Fatalf("round trip of %s: %+v %v", fullCh, got, err)
	}
	for i := range len(fullCh) {
		checkChallenge(t, fullCh[:i])
	}
}

func checkAuthorization(t *testing.T, s string) {
	t.Helper()
	c, err := ParseAuthorization(s)
	if err != nil {
		return
	}
	again, err := ParseAuthorization(c.String())
	if err != nil {
		t.Fatalf("%q parsed to %+v, whose String %q does not parse: %v", s, c, c.String(), err)
	}
	if !reflect.DeepEqual(again, c) {
		t.Fatalf("%q: parse(build(parse)) = %+v, want %+v", s, again, c)
	}
}

func checkChallenge(t *testing.T, s string) {
	t.Helper()
	c, err := ParseChallenge(s)
	if err != nil {
		return
	}
	again, err := ParseChallenge(c.String())
	if err != nil {
		t.Fatalf("%q parsed to %+v, whose String %q does not parse: %v", s, c, c.String(), err)
	}
	if !reflect.DeepEqual(again, c) {
		t.Fatalf("%q: parse(build(parse)) = %+v, want %+v", s, again, c)
	}
}

func FuzzParseAuthorization(f *testing.F) {
	f.Add(rfc2617Authorization)
	f.Add(`Digest username="user1_private@home1.net", realm="registrar.home1.net", nonce="", uri="sip:registrar.home1.net", response="", integrity-protected="no"`)
	f.Add(`Digest username="a", auts="AQIDBAUGBwgJCgsMDQ4=", nc=00000001, qop=auth, x="\"\\"`)
	f.Add(`digest USERNAME=u,,realm=r , foo=bar`)
	f.Add(`Digest realm="unterminated`)
	f.Fuzz(func(t *testing.T, s string) {
		checkAuthorization(t, s)
		if c, err := ParseAuthorization(s); err == nil {
			Verify(&c, "REGISTER", RES{})
			VerifySyncFailure(&c, "REGISTER")
		}
	})
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(rfc2617Challenge)
	f.Add(`Digest realm="ims", nonce="` + BuildNonce(RAND{1}, AUTN{2}, nil) + `", algorithm=AKAv1-MD5, qop="auth", ik="00", ck="11"`)
	f.Add(`Digest stale=true, stale=false`)
	f.Fuzz(func(t *testing.T, s string) { checkChallenge(t, s) })
}

func FuzzParseNonce(f *testing.F) {
	f.Add(BuildNonce(RAND{1}, AUTN{2}, nil))
	f.Add(BuildNonce(RAND{}, AUTN{}, []byte("extra")))
	f.Add("")
	f.Add("====")
	f.Fuzz(func(t *testing.T, s string) {
		r, autn, sd, err := ParseNonce(s)
		if err != nil {
			if !errors.Is(err, ErrNonceEncoding) && !errors.Is(err, ErrNonceTooShort) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		r2, autn2, sd2, err := ParseNonce(BuildNonce(r, autn, sd))
		if err != nil || r2 != r || autn2 != autn || string(sd2) != string(sd) {
			t.Fatalf("rebuild of %q does not round trip", s)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	c := Credentials{Username: "alice@ims.example", Realm: "ims.example", Nonce: BuildNonce(RAND{}, AUTN{}, nil), URI: "sip:ims.example",
		Algorithm: AlgorithmAKAv1MD5, QOP: QOPAuth, NC: 1, CNonce: "0a4f113b"}
	c.SetResponse("REGISTER", []byte{1, 2, 3, 4, 5, 6, 7, 8})
	b.ReportAllocs()
	for b.Loop() {
		if !Verify(&c, "REGISTER", RES{1, 2, 3, 4, 5, 6, 7, 8}) {
			b.Fatal("verify")
		}
	}
}

// TestChallengeStringAllocs: a WWW-Authenticate value is made in one
// buffer and one string (the P-CSCF writes one per challenge); before, the
// buffer grew from "Digest " four times (6 objects).
func TestChallengeStringAllocs(t *testing.T) {
	c := &Challenge{Realm: "ims.mnc001.mcc001.3gppnetwork.org", Nonce: strings.Repeat("A", 44), Algorithm: "AKAv1-MD5",
		QOP: "auth", IK: strings.Repeat("1", 32), CK: strings.Repeat("2", 32), Opaque: "abc"}
	if n := testing.AllocsPerRun(100, func() { _ = c.String() }); n > 2 {
		t.Errorf("Challenge.String: %.0f allocations, want at most 2", n)
	}
}
