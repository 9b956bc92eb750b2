package bench

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/sip"
)

// fmtRequest is the REGISTER as the load generator wrote it with fmt
// before appendRequest: the slow obvious model, with the random branch and
// tag given.
func fmtRequest(domain, impu, callID string, cseq int, via, contact netip.AddrPort, expires int, client, verify, auth, branch, tag string) string {
	user := strings.TrimPrefix(impu, "sip:")
	user = user[:strings.IndexByte(user, '@')]
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\n", domain)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\n", via, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <%s>;tag=%s\r\nTo: <%s>\r\n", impu, tag, impu)
	fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d REGISTER\r\n", callID, cseq)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s>;expires=%d\r\nExpires: %d\r\n", user, contact, expires, expires)
	fmt.Fprintf(&b, "Security-Client: %s\r\nRequire: sec-agree\r\nProxy-Require: sec-agree\r\nSupported: path, sec-agree\r\n", client)
	if verify != "" {
		fmt.Fprintf(&b, "Security-Verify: %s\r\n", verify)
	}
	fmt.Fprintf(&b, "Authorization: %s\r\nContent-Length: 0\r\n\r\n", auth)
	return b.String()
}

var branchTag = regexp.MustCompile(`branch=z9hG4bK([0-9a-f]{16});rport\r\n.*\r\nFrom: <[^>]*>;tag=([0-9a-f]{10})\r\n`)

// TestAppendRequestAsFmt: the appended REGISTER is the one fmt wrote, byte
// for byte, with and without Security-Verify, over IPv4 and IPv6.
func TestAppendRequestAsFmt(t *testing.T) {
	sub := BenchSubscriber("ue", "bench.example", "", 7)
	m, client := newOffer(regPortC)
	for _, tc := range []struct {
		via, contact netip.AddrPort
		verify       string
	}{
		{netip.MustParseAddrPort("127.3.4.5:40000"), netip.MustParseAddrPort("127.3.4.5:40000"), ""},
		{netip.MustParseAddrPort("100.64.0.9:5062"), netip.MustParseAddrPort("100.64.0.9:5068"), "ipsec-3gpp;alg=hmac-sha-1-96;spi-c=1;spi-s=2;port-c=3;port-s=4"},
		{netip.MustParseAddrPort("[2001:db8::1]:5062"), netip.MustParseAddrPort("[2001:db8::1]:5068"), "x"},
	} {
		auth := `Digest username="` + sub.IMPI + `", realm="bench.example", uri="sip:bench.example"`
		got := string(appendRequest(nil, "bench.example", sub.IMPUs[0], "0123@bench", 3, tc.via, tc.contact, 600, client, tc.verify, auth))
		bt := branchTag.FindStringSubmatch(got)
		if bt == nil {
			t.Fatalf("no branch or tag in\n%s", got)
		}
		want := fmtRequest("bench.example", sub.IMPUs[0], "0123@bench", 3, tc.via, tc.contact, 600, client, tc.verify, auth, bt[1], bt[2])
		if got != want {
			t.Fatalf("appendRequest:\n%q\nfmt:\n%q", got, want)
		}
	}
	// The offer is sip.FormatSecurity's, with the media SPI.
	want := sip.FormatSecurity([]sip.Mechanism{m})
	if !strings.HasPrefix(client, want+";media-spi=") {
		t.Fatalf("offer %q, want %q;media-spi=N", client, want)
	}
	if _, err := strconv.ParseUint(strings.TrimPrefix(client, want+";media-spi="), 10, 32); err != nil {
		t.Fatalf("offer %q: media SPI: %v", client, err)
	}
}

// sipgoResponse writes a response as the P-CSCF's sipgo does.
func sipgoResponse(code int, reason, callID string, hdrs ...string) []byte {
	res := sipgo.NewResponse(code, reason)
	res.AppendHeader(sipgo.NewHeader("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport=5060;received=127.0.0.1"))
	res.AppendHeader(sipgo.NewHeader("From", "<sip:ue@bench.example>;tag=1"))
	res.AppendHeader(sipgo.NewHeader("To", "<sip:ue@bench.example>;tag=2"))
	cid := sipgo.CallIDHeader(callID)
	res.AppendHeader(&cid)
	for i := 0; i+1 < len(hdrs); i += 2 {
		res.AppendHeader(sipgo.NewHeader(hdrs[i], hdrs[i+1]))
	}
	res.SetBody(nil)
	return []byte(res.String())
}

// TestParseFinalAsSipgo: parseFinal reads what sipgo reads of the
// responses a P-CSCF sends, and refuses what the sipgo version refused.
func TestParseFinalAsSipgo(t *testing.T) {
	const callID = "abc@bench"
	www := `Digest realm="bench.example", nonce="AAAA", algorithm=AKAv1-MD5, qop="auth"`
	ss := "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=11;spi-s=12;port-c=5064;port-s=5066"
	msgs := [][]byte{
		sipgoResponse(401, "Unauthorized", callID, "WWW-Authenticate", www, "Security-Server", ss, "Security-Server", "second"),
		sipgoResponse(200, "OK", callID, "Contact", "<sip:x@y>;expires=600"),
		sipgoResponse(503, "Service Unavailable", callID, "Retry-After", "2 (busy)"),
		sipgoResponse(403, "Forbidden", callID),
		sipgoResponse(100, "Trying", callID),
		sipgoResponse(200, "OK", "other@bench"),
		[]byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x\r\ni: " + callID + "\r\nContent-Length: 0\r\n\r\n"),
		[]byte("REGISTER sip:bench.example SIP/2.0\r\nCall-ID: " + callID + "\r\n\r\n"),
	}
	for _, b := range msgs {
		got, ok := parseFinal(b, callID)
		want, wantOK := sipgoFinal(b, callID)
		if ok != wantOK || got != want {
			t.Fatalf("%q:\nparseFinal %+v %v\nsipgo      %+v %v", b, got, ok, want, wantOK)
		}
	}
	r, _ := parseFinal(msgs[2], callID)
	if d, ok := r.retryAfterWait(); !ok || d.Seconds() != 2 {
		t.Fatalf("Retry-After: %v %v, want 2 s", d, ok)
	}
	// Every prefix of a 401 that cuts a header off is refused or reads
	// less, never more; none panics.
	for i := range msgs[0] {
		parseFinal(msgs[0][:i], callID)
	}
}

// sipgoFinal is parseFinal by sipgo: the slow model.
func sipgoFinal(b []byte, callID string) (regResponse, bool) {
	m, err := sipgo.ParseMessage(b)
	if err != nil {
		return regResponse{}, false
	}
	res, ok := m.(*sipgo.Response)
	if !ok || res.StatusCode < 200 || res.CallID() == nil || res.CallID().Value() != callID {
		return regResponse{}, false
	}
	r := regResponse{code: res.StatusCode}
	if r.code != 200 && r.code != 401 {
		r.reason = res.Reason
	}
	get := func(name string) (string, bool) {
		if h := res.GetHeader(name); h != nil {
			return h.Value(), true
		}
		return "", false
	}
	if r.code == 401 {
		r.www, _ = get("WWW-Authenticate")
		r.securityServer, _ = get("Security-Server")
	}
	if r.code == 503 {
		r.retryAfter, r.hasRetryAfter = get("Retry-After")
	}
	return r, true
}

func FuzzParseFinal(f *testing.F) {
	f.Add(sipgoResponse(401, "Unauthorized", "c", "WWW-Authenticate", "Digest x", "Security-Server", "ipsec-3gpp"))
	f.Add(sipgoResponse(503, "Service Unavailable", "c", "Retry-After", "1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := parseFinal(b, "c")
		if ok && (r.code < 200 || r.code > 699) {
			t.Fatalf("status %d accepted", r.code)
		}
	})
}
