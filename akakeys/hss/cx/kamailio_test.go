//go:build linux

package cx

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/internal/kamailiotest"
	"github.com/imsec/imsec/internal/loopback"
)

// TS 35.208 §4.3 test set 1.
const (
	kamK    = "465b5ce8b199b49faa5f0a2ee238a6bc"
	kamOP   = "cdc202d5123e20f62b6d676ac72cb318"
	kamIMPI = "alice@ims.example"
	kamIMPU = "sip:alice@ims.example"
)

// countingBackend counts the HSS calls the Cx server makes.
type countingBackend struct {
	Backend
	vectors, resyncs atomic.Int64
}

func (b *countingBackend) Vector(ctx context.Context, impi string) (akakeys.Vector, error) {
	b.vectors.Add(1)
	return b.Backend.Vector(ctx, impi)
}

func (b *countingBackend) Resync(ctx context.Context, impi string, r akakeys.RAND, auts akakeys.AUTS) (akakeys.Vector, error) {
	b.resyncs.Add(1)
	return b.Backend.Resync(ctx, impi, r, auts)
}

type kamPair struct {
	srv     *Server
	backend *countingBackend
	kam     *kamailiotest.Kamailio
	k       akakeys.K
	opc     akakeys.OPc
}

// startKamailioPair starts the Cx server on a loopback address of its own
// (port 3868) and a Kamailio S-CSCF peered to it on the same address, and
// waits until cdp has exchanged CER/CEA with the server.
func startKamailioPair(t *testing.T) *kamPair {
	t.Helper()
	kamailiotest.Skip(t)
	var k akakeys.K
	var op akakeys.OP
	hex.Decode(k[:], []byte(kamK))
	hex.Decode(op[:], []byte(kamOP))
	store := hss.NewMemStore()
	sub := hss.Subscriber{IMPI: kamIMPI, IMPUs: []string{kamIMPU}, K: k}
	sub.SetOP(op)
	if err := store.Add(context.Background(), sub); err != nil {
		t.Fatal(err)
	}
	h, err := hss.New(store, hss.Config{})
	if err != nil {
		t.Fatal(err)
	}
	addr := loopback.Random()
	b := &countingBackend{Backend: h}
	srv, err := NewServer(ServerConfig{Listen: netip.AddrPortFrom(addr, 3868).String(),
		OriginHost: addr.String(), OriginRealm: "ims.example", HSS: b})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	kam := kamailiotest.Start(t, kamailiotest.Config{Addr: addr,
		HSS: netip.MustParseAddrPort(srv.Addr().String()), Realm: "ims.example"})
	// The HSS side tells: the CER was answered. Wait on it (bounded),
	// polling the counter with a short tick since the server has no event.
	if err := waitFor(10*time.Second, kam, func() bool { return srv.Counters().CER > 0 }); err != nil {
		t.Fatalf("cdp never sent a CER: %v (counters %+v)", err, srv.Counters())
	}
	return &kamPair{srv: srv, backend: b, kam: kam, k: k, opc: sub.OPc}
}

// waitFor polls cond every 20 ms until it holds, the timeout passes or
// kamailio exits.
func waitFor(timeout time.Duration, kam *kamailiotest.Kamailio, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return fmt.Errorf("not within %v", timeout)
		case <-kam.Done():
			return errors.New("kamailio exited")
		case <-tick.C:
		}
	}
	return nil
}

// ue is a bare SIP UE over UDP: just enough REGISTER for the S-CSCF.
type ue struct {
	t      *testing.T
	c      *net.UDPConn
	kam    *kamailiotest.Kamailio
	callID string
	tag    string
	cseq   int
}

func newUE(t *testing.T, kam *kamailiotest.Kamailio) *ue {
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(kam.SIP.Addr(), 0)), net.UDPAddrFromAddrPort(kam.SIP))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &ue{t: t, c: c, kam: kam, callID: fmt.Sprintf("kamtest-%d@%s", time.Now().UnixNano(), kam.SIP.Addr()), tag: "ue1"}
}

type sipResponse struct {
	code    int
	headers map[string][]string // lower-case names
	raw     string
}

func (r *sipResponse) header(name string) string {
	if v := r.headers[strings.ToLower(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// register sends one REGISTER (authorization may be empty) and returns the
// final response. Retransmits like RFC 3261 Timer E (T1 = 500 ms) and gives
// up after 8 s or when kamailio exits.
func (u *ue) register(authorization string, expires int) (*sipResponse, error) {
	u.cseq++
	local := u.c.LocalAddr().String()
	branch := fmt.Sprintf("z9hG4bK%d-%d", time.Now().UnixNano(), u.cseq)
	msg := "REGISTER sip:ims.example SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";rport;branch=" + branch + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <" + kamIMPU + ">;tag=" + u.tag + "\r\n" +
		"To: <" + kamIMPU + ">\r\n" +
		"Call-ID: " + u.callID + "\r\n" +
		fmt.Sprintf("CSeq: %d REGISTER\r\n", u.cseq) +
		"Contact: <sip:alice@" + local + ">;expires=" + fmt.Sprint(expires) + "\r\n" +
		fmt.Sprintf("Expires: %d\r\n", expires) +
		"Authorization: " + authorization + "\r\n" +
		"Content-Length: 0\r\n\r\n"
	deadline := time.Now().Add(8 * time.Second)
	buf := make([]byte, 65535)
	rto := 500 * time.Millisecond
	for time.Now().Before(deadline) {
		select {
		case <-u.kam.Done():
			return nil, errors.New("kamailio exited")
		default:
		}
		if _, err := u.c.Write([]byte(msg)); err != nil {
			return nil, err
		}
		_ = u.c.SetReadDeadline(time.Now().Add(rto))
		for {
			n, err := u.c.Read(buf)
			if err != nil {
				break // retransmit
			}
			r := parseResponse(string(buf[:n]))
			if r == nil || !strings.Contains(r.header("Via"), branch) || r.code < 200 {
				continue
			}
			return r, nil
		}
		rto = min(2*rto, 2*time.Second)
	}
	return nil, errors.New("no final response to REGISTER within 8s")
}

func parseResponse(s string) *sipResponse {
	head, _, _ := strings.Cut(s, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	var code int
	if _, err := fmt.Sscanf(lines[0], "SIP/2.0 %d", &code); err != nil {
		return nil
	}
	r := &sipResponse{code: code, headers: map[string][]string{}, raw: s}
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		if ok {
			n := strings.ToLower(strings.TrimSpace(name))
			r.headers[n] = append(r.headers[n], strings.TrimSpace(value))
		}
	}
	return r
}

// challenge checks the n-th 401 and returns the challenge and RAND, AUTN
// once Kamailio has finished with the MAA (see kamailiotest.MAADone).
func challenge(t *testing.T, kam *kamailiotest.Kamailio, n int, r *sipResponse) (akakeys.Challenge, akakeys.RAND, akakeys.AUTN) {
	t.Helper()
	if r.code != 401 {
		t.Fatalf("got %d, want 401:\n%s", r.code, r.raw)
	}
	if _, err := kam.WaitLogN(kamailiotest.MAADone, n, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	h := r.header("WWW-Authenticate")
	ch, err := akakeys.ParseChallenge(h)
	if err != nil {
		t.Fatalf("WWW-Authenticate %q: %v", h, err)
	}
	if !strings.EqualFold(ch.Algorithm, "AKAv1-MD5") {
		t.Fatalf("algorithm %q, want AKAv1-MD5", ch.Algorithm)
	}
	raw, err := base64.StdEncoding.DecodeString(ch.Nonce)
	if err != nil || len(raw) < 32 {
		t.Fatalf("nonce %q is not base64(RAND||AUTN): %v", ch.Nonce, err)
	}
	r0, autn, _, err := akakeys.ParseNonce(ch.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h, `ck="`) || !strings.Contains(h, `ik="`) {
		t.Errorf("ims_auth's 401 carries no ck=/ik=: %s", h)
	}
	return ch, r0, autn
}

// answer runs the USIM on the challenge's RAND and AUTN and sends the
// REGISTER with its response (what names the step in a failure).
func (u *ue) answer(t *testing.T, usim *akakeys.USIM, ch akakeys.Challenge, rnd akakeys.RAND, autn akakeys.AUTN, expires int, what string) *sipResponse {
	t.Helper()
	res, _, _, err := usim.Authenticate(rnd, autn)
	if err != nil {
		t.Fatalf("USIM refused %s: %v", what, err)
	}
	cred := u.credentials(ch)
	if err := cred.SetResponse("REGISTER", res[:]); err != nil {
		t.Fatal(err)
	}
	r, err := u.register(cred.String(), expires)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (u *ue) credentials(ch akakeys.Challenge) akakeys.Credentials {
	return akakeys.Credentials{Username: kamIMPI, Realm: ch.Realm, Nonce: ch.Nonce, URI: "sip:ims.example",
		Algorithm: "AKAv1-MD5", Opaque: ch.Opaque, QOP: "auth", NC: 1, CNonce: "0a4f113b"}
}

// initialAuthorization is the TS 24.229 §5.1.1.2 Authorization of the first
// REGISTER: the IMPI, an empty nonce and response.
func initialAuthorization() string {
	return `Digest username="` + kamIMPI + `", realm="ims.example", uri="sip:ims.example", nonce="", response=""`
}

// TestKamailioRegister registers a UE with a real Kamailio S-CSCF that uses
// imsec's Cx server as its HSS: MAR/MAA gives the 401, the USIM's RES
// gives the 200 (SAR/SAA REGISTRATION), Expires: 0 de-registers (SAR
// USER_DEREGISTRATION).
func TestKamailioRegister(t *testing.T) {
	p := startKamailioPair(t)
	usim, err := akakeys.NewUSIM(p.k, p.opc, akakeys.USIMConfig{})
	if err != nil {
		t.Fatal(err)
	}
	u := newUE(t, p.kam)

	r, err := u.register(initialAuthorization(), 600)
	if err != nil {
		t.Fatal(err)
	}
	ch, rnd, autn := challenge(t, p.kam, 1, r)
	if c := p.srv.Counters(); c.MAR != 1 {
		t.Errorf("HSS saw %d MAR, want 1 (counters %+v)", c.MAR, c)
	}
	res, _, _, err := usim.Authenticate(rnd, autn)
	if err != nil {
		t.Fatalf("USIM refused the HSS's AUTN: %v", err)
	}
	cred := u.credentials(ch)
	if err := cred.SetResponse("REGISTER", res[:]); err != nil {
		t.Fatal(err)
	}
	r, err = u.register(cred.String(), 600)
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 200 {
		t.Fatalf("authenticated REGISTER got %d, want 200:\n%s", r.code, r.raw)
	}
	// Kamailio grants 90% of the asked 600 s in the 200's Contact.
	ct := r.header("Contact")
	var exp int
	if i := strings.Index(ct, "expires="); i < 0 {
		t.Errorf("200 Contact %q has no expires:\n%s", ct, r.raw)
	} else if fmt.Sscanf(ct[i+len("expires="):], "%d", &exp); exp <= 0 || exp > 600 {
		t.Errorf("200 Contact %q: expires %d, want 1..600", ct, exp)
	}
	if c := p.srv.Counters(); c.SAR != 1 {
		t.Errorf("HSS saw %d SAR, want 1 (counters %+v)", c.SAR, c)
	}
	if a := p.srv.reg.get(kamIMPU); !a.registered || a.server != p.kam.ServerName {
		t.Errorf("HSS assignment of %s = %+v, want registered at %s", kamIMPU, a, p.kam.ServerName)
	}

	// De-register: Kamailio answers 200 once the SAA for
	// USER_DEREGISTRATION is back. ims_auth does not take a vector twice,
	// so the de-REGISTER is challenged again (a second MAR) like a UE's
	// first REGISTER.
	cred.NC = 2
	if err := cred.SetResponse("REGISTER", res[:]); err != nil {
		t.Fatal(err)
	}
	r, err = u.register(cred.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.code == 401 {
		ch, rnd, autn := challenge(t, p.kam, 2, r)
		r = u.answer(t, usim, ch, rnd, autn, 0, "the second AUTN")
	}
	if r.code != 200 {
		t.Fatalf("de-REGISTER got %d, want 200:\n%s", r.code, r.raw)
	}
	if err := waitFor(5*time.Second, p.kam, func() bool { return p.srv.Counters().SAR == 2 }); err != nil {
		t.Fatalf("no second SAR (USER_DEREGISTRATION): %v (counters %+v)", err, p.srv.Counters())
	}
	if err := waitFor(5*time.Second, p.kam, func() bool { return p.srv.reg.get(kamIMPU).registered == false }); err != nil {
		t.Errorf("HSS still has %s registered after de-registration: %+v", kamIMPU, p.srv.reg.get(kamIMPU))
	}
	if c := p.srv.Counters(); c.Failed+c.MissingAVP+c.InvalidAVP+c.Malformed+c.Unsupported+c.UserUnknown != 0 {
		t.Errorf("HSS error answers: %+v", c)
	}
}

// TestKamailioResync: a USIM whose SQN is ahead of the HSS answers the
// first challenge with AUTS; Kamailio sends a MAR carrying RAND||AUTS, the
// HSS re-synchronises, and the next challenge is accepted.
func TestKamailioResync(t *testing.T) {
	p := startKamailioPair(t)
	usim, err := akakeys.NewUSIM(p.k, p.opc, akakeys.USIMConfig{})
	if err != nil {
		t.Fatal(err)
	}
	st := usim.State()
	for i := range st.SEQ {
		st.SEQ[i] = 1000
	}
	if err := usim.SetState(st); err != nil {
		t.Fatal(err)
	}
	u := newUE(t, p.kam)
	r, err := u.register(initialAuthorization(), 600)
	if err != nil {
		t.Fatal(err)
	}
	ch, rnd, autn := challenge(t, p.kam, 1, r)
	_, _, _, err = usim.Authenticate(rnd, autn)
	var sf *akakeys.SyncFailureError
	if !errors.As(err, &sf) {
		t.Fatalf("USIM ahead of the HSS: Authenticate = %v, want a sync failure", err)
	}
	cred := u.credentials(ch)
	if err := cred.SetSyncFailure("REGISTER", sf.AUTS); err != nil {
		t.Fatal(err)
	}
	if r, err = u.register(cred.String(), 600); err != nil {
		t.Fatal(err)
	}
	ch, rnd, autn = challenge(t, p.kam, 2, r)
	if n := p.backend.resyncs.Load(); n != 1 {
		t.Errorf("HSS resynchronised %d times, want 1", n)
	}
	r = u.answer(t, usim, ch, rnd, autn, 600, "the vector after resync")
	if r.code != 200 {
		t.Fatalf("REGISTER after resync got %d, want 200:\n%s", r.code, r.raw)
	}
}

// TestKamailioKilled: when the S-CSCF dies mid-registration the UE's
// REGISTER fails promptly instead of hanging.
func TestKamailioKilled(t *testing.T) {
	p := startKamailioPair(t)
	u := newUE(t, p.kam)
	p.kam.Stop()
	start := time.Now()
	if _, err := u.register(initialAuthorization(), 600); err == nil {
		t.Fatal("REGISTER to a killed Kamailio succeeded")
	}
	if d := time.Since(start); d > 9*time.Second {
		t.Fatalf("REGISTER to a killed Kamailio took %v", d)
	}
	// The HSS sees its peer go: the connection count stays, nothing hangs;
	// Close in cleanup must return (bounded by the test's own timeout).
}
