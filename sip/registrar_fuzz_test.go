package sip

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

// fakeTx is a server transaction that records what the handler answers.
type fakeTx struct {
	mu   sync.Mutex
	res  []*sip.Response
	done chan struct{}
}

func newFakeTx() *fakeTx { return &fakeTx{done: make(chan struct{})} }

func (t *fakeTx) Respond(res *sip.Response) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.res = append(t.res, res)
	return nil
}
func (t *fakeTx) Acks() <-chan *sip.Request              { return nil }
func (t *fakeTx) OnCancel(sip.FnTxCancel) bool           { return false }
func (t *fakeTx) Terminate()                             {}
func (t *fakeTx) OnTerminate(sip.FnTxTerminate) bool     { return false }
func (t *fakeTx) Done() <-chan struct{}                  { return t.done }
func (t *fakeTx) Err() error                             { return nil }
func (t *fakeTx) responses() []*sip.Response             { t.mu.Lock(); defer t.mu.Unlock(); return t.res }
func (t *fakeTx) String() string                         { return "fakeTx" }
func (t *fakeTx) Connection() sip.Connection             { return nil }
func (t *fakeTx) OnRetransmission(sip.FnTxResponse) bool { return false }

var _ sip.ServerTransaction = (*fakeTx)(nil)

// FuzzRegistrarRequest feeds whole SIP messages, as sipgo parses them off
// the wire, to the registrar's unprotected REGISTER handler (and, for
// other methods, to the handlers the unprotected port has). Whatever the
// input: no panic, exactly one final answer to a REGISTER, a status code
// the registrar means (never a 2xx without a valid answer to a
// challenge), no SIP version but 2.0 echoed back, and nothing held once
// the temporary state expires.
func FuzzRegistrarRequest(f *testing.F) {
	seeds := []string{
		"REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\nFrom: <sip:alice@a.example>;tag=1\r\nTo: <sip:alice@a.example>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5062>\r\nAuthorization: Digest username=\"alice@a.example\", realm=\"a.example\", uri=\"sip:a.example\", nonce=\"\", response=\"\"\r\nSecurity-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=UDP-enc-tun;spi-c=1000;spi-s=1001;port-c=5062;port-s=5068\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
		"REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK2;rport\r\nFrom: <sip:alice@a.example>;tag=2\r\nTo: <sip:alice@a.example>\r\nCall-ID: c2\r\nCSeq: 2 REGISTER\r\nAuthorization: Digest username=\"alice@a.example\", realm=\"a.example\", uri=\"sip:a.example\", nonce=\"AAAA\", response=\"00000000000000000000000000000000\", auts=\"AAAA\", algorithm=AKAv1-MD5, qop=auth, nc=00000001, cnonce=\"x\"\r\nExpires: 9223372037\r\nContent-Length: 0\r\n\r\n",
		"REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK3\r\nTo: <sip:bob@a.example>\r\nCall-ID: c3\r\nCSeq: 3 REGISTER\r\nSecurity-Client: ipsec-3gpp;alg=x;spi-c=1;spi-s=1;port-c=1;port-s=1, digest\r\nContent-Length: 0\r\n\r\n",
		"INVITE sip:bob@b.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK4\r\nFrom: <sip:ceo@a.example>;tag=4\r\nTo: <sip:bob@b.example>\r\nCall-ID: c4\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
		"REGISTER sip:a.example SIP/3.0\r\nVia: SIP/3.0/UDP 127.0.0.1;branch=z9hG4bK5\r\nFrom: <sip:alice@a.example>;tag=5\r\nTo: <sip:alice@a.example>\r\nCall-ID: c5\r\nCSeq: 5 REGISTER\r\nContent-Length: 0\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	clk := &clock{t: time.Unix(2_000_000_000, 0)}
	r := newRig(f, func(c *ServerConfig) {
		c.Now = clk.Now
		c.IPsec = IPsecOptional
		c.Limits.Off = true
		c.Events = nil
	})
	for _, u := range []string{"alice", "bob"} {
		newSub(f, r.store, u, "a.example")
	}
	parser := sip.NewParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := parser.ParseSIP(data)
		if err != nil {
			return
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			return
		}
		req.SetSource("127.0.0.1:5062")
		req.SetTransport("UDP")
		tx := newFakeTx()
		switch req.Method {
		case sip.REGISTER:
			r.srv.handler(r.srv.onOuterRegister)(req, tx)
		case sip.INVITE:
			r.srv.handler(r.srv.onInvite(false))(req, tx)
		case sip.BYE:
			r.srv.handler(r.srv.onBye(false))(req, tx)
		default:
			return
		}
		var finals int
		for _, res := range tx.responses() {
			if res.StatusCode < 100 || res.StatusCode > 699 {
				t.Fatalf("status %d", res.StatusCode)
			}
			if res.SipVersion != "SIP/2.0" {
				t.Fatalf("response version %q", res.SipVersion)
			}
			if res.StatusCode >= 200 {
				finals++
			}
			if req.Method == sip.REGISTER && res.StatusCode < 300 && res.StatusCode >= 200 && !strings.Contains(string(data), "response=") {
				t.Fatalf("200 to a REGISTER with no answer to a challenge:\n%s", data)
			}
		}
		if req.Method == sip.REGISTER && finals != 1 {
			t.Fatalf("%d final answers to a REGISTER", finals)
		}
		// Whatever was left pending goes with the temporary-SA lifetime.
		clk.Add(DefaultTempSATimeout + time.Second)
		r.srv.Housekeep()
		if st := r.srv.Stats(); st.TempSets != 0 || st.Pending != 0 {
			t.Fatalf("held after expiry: %+v", st)
		}
	})
}

var (
	_ = bytes.Equal
	_ = context.Background
	_ = akakeys.AMF{}
	_ = hss.NewMemStore
)
