package sip

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
)

// A REGISTER as imsec's UE sends it through its SAs.
const protectedRegister = "REGISTER sip:ims.example SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 100.64.1.2:5062;branch=z9hG4bK1;rport\r\n" +
	"Route: <sip:100.64.1.1:5064;lr>\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: <sip:alice@ims.example>;tag=1\r\nTo: <sip:alice@ims.example>\r\n" +
	"Call-ID: c1\r\nCSeq: 2 REGISTER\r\n" +
	"Contact: <sip:alice@100.64.1.2:5068>;expires=600\r\n" +
	"Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=UDP-enc-tun;spi-c=1000;spi-s=1001;port-c=5062;port-s=5068\r\n" +
	"Security-Verify: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=UDP-enc-tun;spi-c=2000;spi-s=2001;port-c=5065;port-s=5064\r\n" +
	"Require: sec-agree\r\nProxy-Require: sec-agree\r\nSupported: sec-agree\r\n" +
	"Authorization: Digest username=\"alice@ims.example\", realm=\"ims.example\", nonce=\"n\", uri=\"sip:ims.example\", response=\"00112233445566778899aabbccddeeff\", algorithm=AKAv1-MD5\r\n" +
	"Content-Length: 0\r\n\r\n"

func parseRequest(t testing.TB, s string) *sip.Request {
	t.Helper()
	m, err := sip.ParseMessage([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	req, ok := m.(*sip.Request)
	if !ok {
		t.Fatalf("not a request: %T", m)
	}
	req.SetSource("100.64.1.2:5062")
	return req
}

func proxyServer(t *testing.T) *Server {
	r := newRig(t, func(c *ServerConfig) {
		c.Domain, c.HSS, c.SCSCF, c.VisitedNetwork = "ims.example", nil, "sip:127.0.0.1:5060", "Visited Network 1"
	})
	return r.srv
}

// TestForwardRegister: what the P-CSCF changes on a REGISTER it forwards
// (TS 24.229 §5.2.2.1): sec-agree stays between UE and P-CSCF, Path and
// P-Visited-Network-ID are added, the Authorization says whether an SA
// carried the request; the UE's request itself is not touched.
func TestForwardRegister(t *testing.T) {
	s := proxyServer(t)
	req := parseRequest(t, protectedRegister)
	fwd, err := s.forwardRegister(req, "yes")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"Security-Client", "Security-Verify", "Route", "Proxy-Require"} {
		if fwd.GetHeader(h) != nil {
			t.Errorf("%s forwarded: %s", h, fwd.GetHeader(h).Value())
		}
	}
	checks := map[string]string{
		"Path":                 s.pathURI(),
		"Require":              "path",
		"Supported":            "sec-agree, path",
		"P-Visited-Network-ID": `"Visited Network 1"`,
		"Max-Forwards":         "69",
	}
	for name, want := range checks {
		if h := fwd.GetHeader(name); h == nil || h.Value() != want {
			t.Errorf("%s = %v, want %q", name, h, want)
		}
	}
	cred, err := akakeys.ParseAuthorization(fwd.GetHeader("Authorization").Value())
	if err != nil {
		t.Fatal(err)
	}
	if cred.IntegrityProtected != "yes" || cred.Response != "00112233445566778899aabbccddeeff" || cred.Username != "alice@ims.example" {
		t.Errorf("Authorization forwarded as %+v", cred)
	}
	// The UE's request is as it came (its transaction answers from it).
	if req.GetHeader("Security-Client") == nil || req.GetHeader("Path") != nil || req.MaxForwards().Val() != 70 {
		t.Errorf("the UE's request was changed:\n%s", req)
	}

	req.RemoveHeader("Max-Forwards")
	mf := sip.MaxForwardsHeader(1)
	req.AppendHeader(&mf)
	if _, err := s.forwardRegister(req, "no"); err != errTooManyHops {
		t.Errorf("Max-Forwards 1: %v, want %v", err, errTooManyHops)
	}
}

// An S-CSCF's 401 as Kamailio's ims_auth sends it.
const scscf401 = "SIP/2.0 401 Unauthorized - Challenging the UE\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp\r\n" +
	"Via: SIP/2.0/UDP 100.64.1.2:5062;branch=z9hG4bK1;rport=5062;received=100.64.1.2\r\n" +
	"From: <sip:alice@ims.example>;tag=1\r\nTo: <sip:alice@ims.example>;tag=s1\r\n" +
	"Call-ID: c1\r\nCSeq: 2 REGISTER\r\n" +
	"Path: <sip:term@127.0.0.1:5060;lr>\r\n" +
	"WWW-Authenticate: Digest realm=\"ims.example\", nonce=\"%s\", algorithm=AKAv1-MD5, ck=\"%s\", ik=\"%s\", qop=\"auth,auth-int\"\r\n" +
	"Server: Kamailio S-CSCF\r\nContent-Length: 0\r\n\r\n"

func parseResponse(t testing.TB, s string) *sip.Response {
	t.Helper()
	m, err := sip.ParseMessage([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	res, ok := m.(*sip.Response)
	if !ok {
		t.Fatalf("not a response: %T", m)
	}
	return res
}

// TestTakeKeys: CK and IK come out of the S-CSCF's challenge and are gone
// from what the UE gets; a challenge without them, or with a damaged one,
// builds no SA.
func TestTakeKeys(t *testing.T) {
	var r akakeys.RAND
	var autn akakeys.AUTN
	for i := range r {
		r[i], autn[i] = byte(i), byte(0xf0+i)
	}
	nonce := akakeys.BuildNonce(r, autn, nil)
	ck := "000102030405060708090a0b0c0d0e0f"
	ik := "f0e0d0c0b0a090807060504030201000"
	res := parseResponse(t, sprintf(scscf401, nonce, ck, ik))
	v, www, err := takeKeys(res)
	if err != nil {
		t.Fatal(err)
	}
	if v.RAND != r || v.AUTN != autn || v.CK[1] != 1 || v.IK[0] != 0xf0 || v.IK[15] != 0 {
		t.Fatalf("vector %+v", v)
	}
	if strings.Contains(www.Value(), "ck=") || strings.Contains(www.Value(), "ik=") || !strings.Contains(www.Value(), nonce) {
		t.Fatalf("the UE would get %s", www.Value())
	}
	if got := nonceOf(www); got != nonce {
		t.Fatalf("nonce %q, want %q", got, nonce)
	}
	for name, bad := range map[string][2]string{
		"no ck":       {"", ik},
		"short ik":    {ck, ik[:30]},
		"ck not hex":  {"z" + ck[1:], ik},
		"ik one more": {ck, ik + "0"},
	} {
		if _, _, err := takeKeys(parseResponse(t, sprintf(scscf401, nonce, bad[0], bad[1]))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, err := takeKeys(parseResponse(t, sprintf(scscf401, "bm90IGFrYQ==", ck, ik))); err == nil {
		t.Error("a nonce that is not RAND||AUTN: accepted")
	}
}

func sprintf(format string, a ...any) string {
	// The 401 template has exactly three %s.
	for _, s := range a {
		format = strings.Replace(format, "%s", s.(string), 1)
	}
	return format
}

// TestGrantedBy: the lifetime a 200 gives the UE's contact.
func TestGrantedBy(t *testing.T) {
	req := parseRequest(t, protectedRegister)
	base := "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKp\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n"
	cases := []struct {
		hdrs string
		want int64
	}{
		{"Contact: <sip:alice@198.51.100.9:5060>;expires=100, <sip:alice@100.64.1.2:5068>;expires=540\r\n", 540},
		{"Contact: <sip:alice@198.51.100.9:5060>;expires=100\r\n", 100},
		{"Expires: 300\r\n", 300},
		{"Contact: <sip:alice@100.64.1.2:5068>;expires=-5\r\nExpires: 0\r\n", 0},
		{"", 77},
	}
	for _, c := range cases {
		res := parseResponse(t, base+c.hdrs+"Content-Length: 0\r\n\r\n")
		if got := grantedBy(res, req, 77); got != c.want {
			t.Errorf("%q: %d, want %d", c.hdrs, got, c.want)
		}
	}
}

func TestURIListAndOptionTags(t *testing.T) {
	res := parseResponse(t, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKp\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n"+
		"P-Associated-URI: <sip:alice@ims.example>, \"Alice\" <tel:+15550100>\r\nP-Associated-URI: <sip:a2@ims.example>\r\nContent-Length: 0\r\n\r\n")
	got := strings.Join(uriList(res.GetHeaders("P-Associated-URI")), " ")
	if got != "sip:alice@ims.example tel:+15550100 sip:a2@ims.example" {
		t.Errorf("uriList: %q", got)
	}
	req := parseRequest(t, protectedRegister)
	dropOptionTag(req, "Require", "sec-agree")
	if req.GetHeader("Require") != nil {
		t.Errorf("Require left: %v", req.GetHeader("Require"))
	}
	addOptionTag(req, "Supported", "sec-agree")
	if h := req.GetHeader("Supported"); h.Value() != "sec-agree" {
		t.Errorf("Supported: %q", h.Value())
	}
	if quoteIfNeeded("ims.example") != "ims.example" || quoteIfNeeded("a b") != `"a b"` {
		t.Error("quoteIfNeeded")
	}
}

// FuzzSCSCFResponse: whatever an S-CSCF (or whoever answers in its place)
// sends back, the proxy's readers of it never panic, and a challenge they
// accept has its keys out of what the UE gets.
func FuzzSCSCFResponse(f *testing.F) {
	var r akakeys.RAND
	var autn akakeys.AUTN
	f.Add(sprintf(scscf401, akakeys.BuildNonce(r, autn, nil), "000102030405060708090a0b0c0d0e0f", "f0e0d0c0b0a090807060504030201000"))
	f.Add("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKp\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\nContact: <sip:alice@100.64.1.2:5068>;expires=540\r\nService-Route: <sip:orig@scscf.ims.example:6060;lr>\r\nP-Associated-URI: <sip:alice@ims.example>\r\nContent-Length: 0\r\n\r\n")
	req := parseRequest(f, protectedRegister)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := sip.ParseMessage([]byte(s))
		if err != nil {
			return
		}
		res, ok := m.(*sip.Response)
		if !ok {
			return
		}
		grantedBy(res, req, 600)
		uriList(res.GetHeaders("Service-Route"))
		uriList(res.GetHeaders("P-Associated-URI"))
		relayHeaders(res)
		_, www, err := takeKeys(res)
		if err != nil {
			return
		}
		c, err := akakeys.ParseChallenge(www.Value())
		if err != nil || c.CK != "" || c.IK != "" {
			t.Fatalf("the UE would get %q (%v)", www.Value(), err)
		}
	})
}

// TestProxyBoundsForwardsPerIMPI: REGISTERs naming one IMPI that wait on
// a silent S-CSCF are bounded by Limits.PendingPerIMPI; the rest get 503
// at once, and nothing stays once the waits end.
func TestProxyBoundsForwardsPerIMPI(t *testing.T) {
	silent, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	r := newRig(t, func(c *ServerConfig) {
		c.Domain, c.HSS, c.SCSCF = "ims.example", nil, "sip:"+silent.LocalAddr().String()
		c.SCSCFTimeout = time.Second
		c.Limits.SourceBurst, c.Limits.SourceRate = 1000, 1000
	})
	const n = DefaultPendingPerIMPI + 8
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := parseRequest(t, strings.NewReplacer("Call-ID: c1", fmt.Sprintf("Call-ID: flood%d", i),
				"Security-Verify", "X-Ignored").Replace(protectedRegister))
			req.SetSource(fmt.Sprintf("198.51.100.%d:5060", 1+i))
			req.SetTransport("UDP")
			tx := newFakeTx()
			r.srv.handler(r.srv.onOuterRegister)(req, tx)
			for _, res := range tx.responses() {
				codes <- res.StatusCode
			}
		}()
	}
	wg.Wait()
	close(codes)
	got := map[int]int{}
	for c := range codes {
		got[c]++
	}
	// PendingPerIMPI+1 may wait (busy counts the one deciding); the rest
	// are refused.
	if got[503] < n-DefaultPendingPerIMPI-1 || got[504] > DefaultPendingPerIMPI+1 || got[503]+got[504] != n {
		t.Fatalf("answers %v, want at most %d 504 (waited) and the rest 503", got, DefaultPendingPerIMPI+1)
	}
	waitFor(t, func() bool { return len(r.srv.Registrations()) == 0 })
}
