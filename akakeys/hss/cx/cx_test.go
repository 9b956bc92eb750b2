package cx

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"go.uber.org/goleak"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TS 35.208 §4.3 test set 1 keys, as the akakeys tests use.
var (
	k1  = akakeys.K{0x46, 0x5b, 0x5c, 0xe8, 0xb1, 0x99, 0xb4, 0x9f, 0xaa, 0x5f, 0x0a, 0x2e, 0xe2, 0x38, 0xa6, 0xbc}
	op1 = akakeys.OP{0xcd, 0xc2, 0x02, 0xd5, 0x12, 0x3e, 0x20, 0xf6, 0x2b, 0x6d, 0x67, 0x6a, 0xc7, 0x2c, 0xb3, 0x18}
)

func alice() hss.Subscriber {
	s := hss.Subscriber{IMPI: "alice@ims.example", IMPUs: []string{"sip:alice@ims.example", "tel:+15550100"}, K: k1, AMF: akakeys.AMF{0x80, 0}}
	s.SetOP(op1)
	return s
}

func bob() hss.Subscriber {
	s := hss.Subscriber{IMPI: "bob@ims.example", IMPUs: []string{"sip:bob@ims.example"}, K: k1, AMF: akakeys.AMF{0x80, 0}}
	s.SetOP(op1)
	return s
}

type env struct {
	srv *Server
	cli *Client
	h   *hss.HSS
	// stop closes the client (DPR) and the server and waits for Serve to
	// return; it runs at cleanup too.
	stop func()
}

// start runs a server over an in-memory store on 127.0.0.1:0 and a client
// of it; both are stopped (and joined) at cleanup.
func start(t *testing.T, backend Backend) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startOn(t, backend, ln)
}

// startOn is start with the server on ln.
// testLog writes to t.Log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func startOn(t *testing.T, backend Backend, ln net.Listener) *env {
	t.Helper()
	store := hss.NewMemStore()
	ctx := context.Background()
	for _, s := range []hss.Subscriber{alice(), bob()} {
		if err := store.Add(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	h, err := hss.New(store, hss.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if backend == nil {
		backend = h
	}
	srv, err := NewServer(ServerConfig{Listener: ln, OriginHost: "hss.ims.example", OriginRealm: "ims.example", HSS: backend})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	// A generous request timeout: on a loaded machine (CI runs packages in
	// parallel) a timed-out request makes the client reconnect, and the
	// capture test wants one connection.
	// The client's log (connection lost, and why) goes to the test's.
	cli, err := NewClient(ClientConfig{Addr: srv.Addr().String(), OriginHost: "scscf.ims.example", OriginRealm: "ims.example", DestinationRealm: "ims.example", Timeout: 20 * time.Second,
		Logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	stop := sync.OnceFunc(func() {
		cli.Close()
		srv.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(stop)
	return &env{srv: srv, cli: cli, h: h, stop: stop}
}

func TestVectorVerifiesOnUSIM(t *testing.T) {
	e := start(t, nil)
	ctx := context.Background()
	a := alice()
	usim, _ := akakeys.NewUSIM(a.K, a.OPc, akakeys.USIMConfig{})
	for range 3 {
		v, err := e.cli.Vector(ctx, a.IMPI)
		if err != nil {
			t.Fatal(err)
		}
		res, ck, ik, err := usim.Authenticate(v.RAND, v.AUTN)
		if err != nil {
			t.Fatal(err)
		}
		if res != v.XRES || ck != v.CK || ik != v.IK {
			t.Fatal("RES/CK/IK from the USIM do not match the MAA")
		}
		if v.AMF != a.AMF {
			t.Fatalf("AMF %x", v.AMF)
		}
	}
	if c := e.srv.Counters(); c.MAR != 3 || c.CER != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestResyncMovesSQN(t *testing.T) {
	e := start(t, nil)
	ctx := context.Background()
	a := alice()
	v, err := e.cli.Vector(ctx, a.IMPI)
	if err != nil {
		t.Fatal(err)
	}
	// The USIM is far ahead: SEQ_MS 1000.
	sqnMS := e.h.Scheme().Join(1000, 3)
	auts := akakeys.NewMilenage(a.K, a.OPc).AUTS(v.RAND, sqnMS)
	nv, err := e.cli.Resync(ctx, a.IMPI, v.RAND, auts)
	if err != nil {
		t.Fatal(err)
	}
	usim, _ := akakeys.NewUSIM(a.K, a.OPc, akakeys.USIMConfig{})
	if _, _, _, err := usim.Authenticate(v.RAND, akakeys.AUTN{}); err == nil {
		t.Fatal("zero AUTN accepted")
	}
	// A USIM at SEQ_MS 1000 accepts the new vector.
	m := akakeys.NewMilenage(a.K, a.OPc)
	seq := m.Vector(v.RAND, sqnMS, a.AMF)
	if _, _, _, err := usim.Authenticate(seq.RAND, seq.AUTN); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := usim.Authenticate(nv.RAND, nv.AUTN); err != nil {
		t.Fatalf("vector after resync refused: %v", err)
	}
	auts[13] ^= 1
	if _, err := e.cli.Resync(ctx, a.IMPI, v.RAND, auts); !errors.Is(err, akakeys.ErrAUTSMAC) {
		t.Fatalf("forged AUTS: %v", err)
	}
}

// request sends a hand-built Cx request through the test client.
func request(t *testing.T, e *env, cmd uint32, avps ...*diam.AVP) ([]*diam.AVP, error) {
	t.Helper()
	m := e.cli.newRequest(cmd, AppID, true)
	for _, a := range avps {
		m.AddAVP(a)
	}
	return e.cli.request(context.Background(), "test", m)
}

func resultCode(err error) (uint32, bool) {
	var re *ResultError
	if errors.As(err, &re) {
		return re.Code, re.Experimental
	}
	return 0, false
}

func sipItem(avps ...*diam.AVP) *diam.AVP {
	return tgpp(avpSIPAuthDataItem, &diam.GroupedAVP{AVP: avps})
}

func TestMARResults(t *testing.T) {
	e := start(t, nil)
	scheme := tgpp(avpSIPAuthenticationScheme, datatype.UTF8String(SchemeAKAv1MD5))
	un := func(s string) *diam.AVP { return base(avpUserName, datatype.UTF8String(s)) }
	pi := func(s string) *diam.AVP { return tgpp(avpPublicIdentity, datatype.UTF8String(s)) }
	for _, tc := range []struct {
		name string
		avps []*diam.AVP
		code uint32
		exp  bool
	}{
		{"unknown user", []*diam.AVP{un("eve@ims.example"), pi("sip:eve@ims.example"), sipItem(scheme)}, DiameterErrorUserUnknown, true},
		{"identities don't match", []*diam.AVP{un("alice@ims.example"), pi("sip:bob@ims.example"), sipItem(scheme)}, DiameterErrorIdentitiesDontMatch, true},
		{"no User-Name", []*diam.AVP{pi("sip:alice@ims.example"), sipItem(scheme)}, DiameterMissingAVP, false},
		{"no auth data item", []*diam.AVP{un("alice@ims.example"), pi("sip:alice@ims.example")}, DiameterMissingAVP, false},
		{"wrong type", []*diam.AVP{un("alice@ims.example"), pi("sip:alice@ims.example"), tgpp(avpSIPNumberAuthItems, datatype.UTF8String("x")), sipItem(scheme)}, DiameterInvalidAVPValue, false},
		{"bad scheme", []*diam.AVP{un("alice@ims.example"), pi("sip:alice@ims.example"), sipItem(tgpp(avpSIPAuthenticationScheme, datatype.UTF8String("Digest-MD5")))}, DiameterErrorAuthSchemeNotSupported, true},
		{"short RAND||AUTS", []*diam.AVP{un("alice@ims.example"), pi("sip:alice@ims.example"), sipItem(scheme, tgpp(avpSIPAuthorization, datatype.OctetString("short")))}, DiameterInvalidAVPValue, false},
	} {
		_, err := request(t, e, CmdMultimediaAuth, tc.avps...)
		if code, exp := resultCode(err); code != tc.code || exp != tc.exp {
			t.Errorf("%s: %v, want %d (experimental %v)", tc.name, err, tc.code, tc.exp)
		}
	}
	// Kamailio's default scheme name, and SIP-Number-Auth-Items honoured
	// up to the cap.
	avps, err := request(t, e, CmdMultimediaAuth, un("alice@ims.example"), pi("tel:+15550100"),
		tgpp(avpSIPNumberAuthItems, datatype.Unsigned32(100)), sipItem(tgpp(avpSIPAuthenticationScheme, datatype.UTF8String("unknown"))))
	if err != nil {
		t.Fatal(err)
	}
	items := findAll(avps, avpSIPAuthDataItem, Vendor3GPP)
	if n, _, _ := u32(find(avps, avpSIPNumberAuthItems, Vendor3GPP)); len(items) != MaxAuthItems || n != MaxAuthItems {
		t.Fatalf("%d items, Number-Auth-Items %d", len(items), n)
	}
	usim, _ := akakeys.NewUSIM(k1, alice().OPc, akakeys.USIMConfig{})
	for i, it := range items {
		v, err := parseAuthItem(group(it))
		if err != nil {
			t.Fatal(err)
		}
		if n, _, _ := u32(find(group(it), avpSIPItemNumber, Vendor3GPP)); n != uint32(i+1) {
			t.Fatalf("item %d numbered %d", i, n)
		}
		if res, _, _, err := usim.Authenticate(v.RAND, v.AUTN); err != nil || res != v.XRES {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	if c := e.srv.Counters(); c.UserUnknown != 1 || c.IdentityMismatch != 1 || c.MissingAVP != 2 || c.InvalidAVP != 2 {
		t.Fatalf("counters %+v", c)
	}
}

func TestSARUserDataUARLIR(t *testing.T) {
	e := start(t, nil)
	ctx := context.Background()
	a := alice()
	impus, err := e.cli.IMPUs(ctx, a.IMPI)
	if err != nil || !slices.Equal(impus, a.IMPUs) {
		t.Fatalf("IMPUs %v, %v", impus, err)
	}
	impi, err := e.cli.LookupIMPU(ctx, "tel:+15550100")
	if err != nil || impi != a.IMPI {
		t.Fatalf("LookupIMPU %q, %v", impi, err)
	}
	if _, err := e.cli.LookupIMPU(ctx, "sip:nobody@ims.example"); !errors.Is(err, hss.ErrUnknownIMPU) {
		t.Fatalf("unknown IMPU: %v", err)
	}
	if _, err := e.cli.IMPUs(ctx, "nobody@ims.example"); !errors.Is(err, hss.ErrUnknownSubscriber) {
		t.Fatalf("unknown IMPI: %v", err)
	}
	pi := tgpp(avpPublicIdentity, datatype.UTF8String("sip:alice@ims.example"))
	un := base(avpUserName, datatype.UTF8String(a.IMPI))
	// Not registered yet: LIR 5003, UAR first registration.
	if _, err := request(t, e, CmdLocationInfo, pi); !isCode(err, DiameterErrorIdentityNotRegistered) {
		t.Fatalf("LIR before SAR: %v", err)
	}
	avps, err := request(t, e, CmdUserAuthorization, un, pi)
	if err != nil || find(avps, avpServerCapabilities, Vendor3GPP) == nil {
		t.Fatalf("UAR: %v", err)
	}
	if c, exp, _ := resultOf(avps); c != DiameterFirstRegistration || !exp {
		t.Fatalf("UAA result %d", c)
	}
	// SAR REGISTRATION, as Kamailio sends it: with its own vendor AVP.
	kam := diam.NewAVP(494, 0x80, 50, datatype.OctetString("x"))
	avps, err = request(t, e, CmdServerAssignment, un, pi, tgpp(avpServerName, datatype.UTF8String("sip:scscf.ims.example:6060")),
		tgpp(avpServerAssignmentType, datatype.Enumerated(Registration)), tgpp(avpUserDataAlreadyAvailable, datatype.Enumerated(0)), kam)
	if err != nil {
		t.Fatal(err)
	}
	ud, _, _ := octets(find(avps, avpUserData, Vendor3GPP))
	private, got, err := ParseUserData(ud)
	if err != nil || private != a.IMPI || !slices.Equal(got, a.IMPUs) {
		t.Fatalf("User-Data %s: %q %v %v", ud, private, got, err)
	}
	for _, u := range a.IMPUs {
		avps, err := request(t, e, CmdLocationInfo, tgpp(avpPublicIdentity, datatype.UTF8String(u)))
		if s, _, _ := str(find(avps, avpServerName, Vendor3GPP)); err != nil || s != "sip:scscf.ims.example:6060" {
			t.Fatalf("LIR %s: %q %v", u, s, err)
		}
	}
	avps, _ = request(t, e, CmdUserAuthorization, un, pi)
	if c, _, _ := resultOf(avps); c != DiameterSubsequentRegistration {
		t.Fatalf("UAA after SAR: %d", c)
	}
	// USER_DEREGISTRATION forgets the S-CSCF.
	if _, err := request(t, e, CmdServerAssignment, un, pi, tgpp(avpServerName, datatype.UTF8String("sip:scscf.ims.example:6060")),
		tgpp(avpServerAssignmentType, datatype.Enumerated(UserDeregistration))); err != nil {
		t.Fatal(err)
	}
	if _, err := request(t, e, CmdLocationInfo, pi); !isCode(err, DiameterErrorIdentityNotRegistered) {
		t.Fatalf("LIR after deregistration: %v", err)
	}
	// SAR with a mismatched pair.
	if _, err := request(t, e, CmdServerAssignment, un, tgpp(avpPublicIdentity, datatype.UTF8String("sip:bob@ims.example")),
		tgpp(avpServerName, datatype.UTF8String("sip:s")), tgpp(avpServerAssignmentType, datatype.Enumerated(Registration))); !isCode(err, DiameterErrorIdentitiesDontMatch) {
		t.Fatalf("SAR mismatch: %v", err)
	}
}

func isCode(err error, code uint32) bool { c, _ := resultCode(err); return c == code }

// fixedBackend answers every Vector with the TS 35.208 test set 1 vector.
type fixedBackend struct{ Backend }

func (f fixedBackend) Vector(context.Context, string) (akakeys.Vector, error) {
	var r akakeys.RAND
	copy(r[:], []byte{0x23, 0x55, 0x3c, 0xbe, 0x96, 0x37, 0xa8, 0x9d, 0x21, 0x8a, 0xe6, 0x4d, 0xae, 0x47, 0xbf, 0x35})
	return akakeys.NewMilenageOP(k1, op1).Vector(r, akakeys.SQN{0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07}, akakeys.AMF{0xb9, 0xb9}), nil
}

// TestMAAKnownAnswer checks the AVP values of one MAA against TS 35.208
// §4.3 test set 1 (RAND 23553cbe..., SQN ff9bb4d0b607, AMF b9b9):
// AUTN = (SQN xor AK) || AMF || MAC-A, XRES = f2, CK = f3, IK = f4.
func TestMAAKnownAnswer(t *testing.T) {
	h := hss.NewMemStore()
	hh, _ := hss.New(h, hss.Config{})
	store := fixedBackend{hh}
	_ = h.Add(context.Background(), alice())
	e := start(t, store)
	avps, err := request(t, e, CmdMultimediaAuth, base(avpUserName, datatype.UTF8String("alice@ims.example")),
		tgpp(avpPublicIdentity, datatype.UTF8String("sip:alice@ims.example")), sipItem(tgpp(avpSIPAuthenticationScheme, datatype.UTF8String(SchemeAKAv1MD5))))
	if err != nil {
		t.Fatal(err)
	}
	item := group(find(avps, avpSIPAuthDataItem, Vendor3GPP))
	want := map[uint32]string{
		avpSIPAuthenticate:    "23553cbe9637a89d218ae64dae47bf35" + "55f328b43577" + "b9b9" + "4a9ffac354dfafb3", // TS 35.208 set 1: RAND || AUTN (AK aa689c648370, MAC-A 4a9ffac354dfafb3)
		avpSIPAuthorization:   "a54211d5e3ba50bf",                                                                // RES
		avpConfidentialityKey: "b40ba9a3c58b2a05bbf0d987b21bf8cb",                                                // CK
		avpIntegrityKey:       "f769bcd751044604127672711c6d3441",                                                // IK
	}
	for code, w := range want {
		got, _, _ := octets(find(item, code, Vendor3GPP))
		if !bytes.Equal(got, unhex(t, w)) {
			t.Errorf("AVP %d = %x, want %s", code, got, w)
		}
		flipped := unhex(t, w)
		flipped[0] ^= 1
		if bytes.Equal(got, flipped) {
			t.Errorf("AVP %d matches a flipped value", code)
		}
	}
	if s, _, _ := str(find(item, avpSIPAuthenticationScheme, Vendor3GPP)); s != SchemeAKAv1MD5 {
		t.Errorf("scheme %q", s)
	}
}

// TestCloseDoesNotRedial: Close sends DPR and the HSS closes the
// connection after its DPA; the client must not take that for a lost
// connection and dial again (a CI run saw the second connection).
func TestCloseDoesNotRedial(t *testing.T) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rec := &recording{}
		e := startOn(t, nil, recListener{ln, rec})
		if _, err := e.cli.Vector(context.Background(), alice().IMPI); err != nil {
			t.Fatal(err)
		}
		e.cli.Close()
		e.stop()
		rec.mu.Lock()
		n := rec.accepts
		rec.mu.Unlock()
		if n != 1 {
			t.Fatalf("%d connections, want 1", n)
		}
	}
}
