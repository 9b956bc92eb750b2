package sip

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TestOverloadCeiling: past Limits.RegisterRate the first REGISTER of a
// registration gets 503 with a Retry-After in [1, 5) seconds, counted as
// shed, with the per-source limits on or off. A registration admitted
// before the bucket ran dry finishes: its protected REGISTER (the answer)
// is never shed.
func TestOverloadCeiling(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("off=%v", off), func(t *testing.T) {
			clk := &clock{t: time.Now()}
			r := newRig(t, func(c *ServerConfig) {
				c.Now = clk.Now
				c.Limits = Limits{Off: off, RegisterRate: 1, RegisterBurst: 2}
			})
			alice := newSub(t, r.store, "alice", "a.example")
			bob := newSub(t, r.store, "bob", "a.example")
			a := newAttacker(t, r.srv.SIPAddr())
			codes := map[int]int{}
			for range 5 {
				a.register(bob.impi, bob.impu)
				code, h := a.answer(5 * time.Second)
				codes[code]++
				if code == 503 {
					n, err := strconv.Atoi(h["retry-after"])
					if err != nil || n < shedRetryMin || n >= shedRetryMin+shedRetrySpread {
						t.Fatalf("503 with Retry-After %q", h["retry-after"])
					}
				}
			}
			if codes[401] != 2 || codes[503] != 3 {
				t.Fatalf("answers %v, want 2 x 401 (the burst) and 3 x 503", codes)
			}
			if st := r.srv.Stats(); st.Shed != 3 || st.Overloaded != 3 {
				t.Fatalf("stats %+v, want 3 shed", st)
			}
			// One line on the ladder for the three, not one each: under
			// overload the ladder must not become the load.
			if n := len(r.lad.kinds(EvOverload)); n != 1 {
				t.Fatalf("%d overload events for 3 refusals in a second, want 1", n)
			}
			// One second later one token: alice's first REGISTER takes it,
			// and her answer passes with the bucket empty again.
			clk.Add(time.Second)
			u := r.ue(alice, func(c *UEConfig) { c.Local = netip.MustParseAddr(uniqueLoopback()) })
			if err := u.Register(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if st := r.srv.Stats(); st.Shed != 3 {
				t.Fatalf("alice's registration was shed: %+v", st)
			}
		})
	}
}

// TestOverloadInFlight: while more REGISTER handlers run than
// Limits.MaxInFlight (here one, held by a slow HSS), a new registration
// is shed; once the HSS answers, the held registration completes.
func TestOverloadInFlight(t *testing.T) {
	slow := &slowHSS{called: make(chan struct{}), release: make(chan struct{})}
	r := newRig(t, func(c *ServerConfig) {
		c.Limits = Limits{MaxInFlight: 1}
		slow.HSS = c.HSS
		c.HSS = slow
	})
	alice := newSub(t, r.store, "alice", "a.example")
	bob := newSub(t, r.store, "bob", "a.example")
	u := r.ue(alice, nil)
	done := make(chan error, 1)
	go func() { done <- u.Register(ctxT(t)) }()
	<-slow.called
	a := newAttacker(t, r.srv.SIPAddr())
	a.register(bob.impi, bob.impu)
	if code, h := a.answer(5 * time.Second); code != 503 || h["retry-after"] == "" {
		t.Fatalf("a new registration while one REGISTER waits on the HSS: %d %v, want 503 with Retry-After", code, h)
	}
	if st := r.srv.Stats(); st.Shed != 1 || st.InFlight != 1 {
		t.Fatalf("stats %+v, want 1 shed and alice's REGISTER in flight", st)
	}
	close(slow.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := r.srv.Stats(); st.InFlight != 0 {
		t.Fatalf("%d REGISTER handlers still counted in flight", st.InFlight)
	}
}

// TestOverloadDHCPBacklog: more than half of the DHCP queue waiting, or a
// DHCP request that waited past the target in the last second, sheds new
// registrations; otherwise they are admitted.
func TestOverloadDHCPBacklog(t *testing.T) {
	o := newOverload(Limits{MaxInFlight: DefaultMaxInFlight})
	now := time.Now()
	if why, _ := o.shedReason(now, 0, dhcpQueue/2, 0); why != "" {
		t.Fatalf("half the DHCP queue: shed (%s)", why)
	}
	if why, _ := o.shedReason(now, 0, dhcpQueue/2+1, 0); why == "" {
		t.Fatal("over half the DHCP queue: admitted")
	}
	o.dhcpWaited(dhcpLagTarget/2, time.Now())
	if why, _ := o.shedReason(now, 0, 0, 0); why != "" {
		t.Fatalf("a DHCP request that waited %v: shed (%s)", dhcpLagTarget/2, why)
	}
	o.dhcpWaited(2*dhcpLagTarget, time.Now())
	if why, _ := o.shedReason(now, 0, 0, 0); why == "" {
		t.Fatalf("a DHCP request that waited %v: admitted", 2*dhcpLagTarget)
	}
	// Seen long ago, it no longer counts: shedding must end by itself.
	o.dhcpLagAt.Store(time.Now().Add(-2 * dhcpLagHold).UnixNano())
	if why, _ := o.shedReason(now, 0, 0, 0); why != "" {
		t.Fatalf("a DHCP lag %v ago: shed (%s)", 2*dhcpLagHold, why)
	}
}

// TestOverloadSocketLag: a REGISTER that waited in the SIP socket past the
// target is shed itself, and an ESP datagram that did sheds new
// registrations for the hold, with the longest wait of the episode on the
// ladder's line; shorter waits do not, and the ESP signal ends by itself.
func TestOverloadSocketLag(t *testing.T) {
	o := newOverload(Limits{MaxInFlight: DefaultMaxInFlight})
	now := time.Now()
	if why, _ := o.shedReason(now, 0, 0, socketLagTarget); why != "" {
		t.Fatalf("a REGISTER that waited %v: shed (%s)", socketLagTarget, why)
	}
	why, sig := o.shedReason(now, 0, 0, 250*time.Millisecond)
	if !strings.Contains(why, "REGISTER waited 250ms in the SIP socket") || sig != shedSocketWait {
		t.Fatalf("a REGISTER that waited 250 ms: %q (signal %d)", why, sig)
	}
	// The SIP socket's wait is the REGISTER's own: the next one is judged
	// by its own.
	if why, _ := o.shedReason(now, 0, 0, 0); why != "" {
		t.Fatalf("the next REGISTER, unknown wait: shed (%s)", why)
	}

	o.espWaited(socketLagTarget / 2)
	if why, _ := o.shedReason(now, 0, 0, 0); why != "" {
		t.Fatalf("an ESP datagram that waited %v: shed (%s)", socketLagTarget/2, why)
	}
	o.espWaited(300 * time.Millisecond)
	o.espWaited(200 * time.Millisecond)
	why, sig = o.shedReason(now, 0, 0, 0)
	if !strings.Contains(why, "ESP datagrams waited 300ms") || sig != shedSocketWait {
		t.Fatalf("after ESP waits of 300 and 200 ms: %q (signal %d), want a shed naming 300ms", why, sig)
	}
	o.espLagAt.Store(time.Now().Add(-2 * socketLagHold).UnixNano())
	if why, _ := o.shedReason(now, 0, 0, 0); why != "" {
		t.Fatalf("an ESP lag %v ago: shed (%s)", 2*socketLagHold, why)
	}
	// A new episode reports its own longest wait, not the old one's.
	o.espWaited(150 * time.Millisecond)
	if why, _ := o.shedReason(now, 0, 0, 0); !strings.Contains(why, "waited 150ms") {
		t.Fatalf("a new episode of 150 ms: %q", why)
	}
}

// TestServerSocketLag: the P-CSCF asks its unprotected UDP socket for
// receive times where the system gives them; a first REGISTER that waited
// past the target gets 503 with Retry-After, statelessly, counted by its
// signal, and one that did not is challenged.
func TestServerSocketLag(t *testing.T) {
	r := newRig(t, nil)
	bob := newSub(t, r.store, "bob", "a.example")
	a := newAttacker(t, r.srv.SIPAddr())
	a.register(bob.impi, bob.impu)
	if code, _ := a.answer(5 * time.Second); code != 401 {
		t.Fatalf("first REGISTER: %d, want 401", code)
	}
	if runtime.GOOS == "linux" {
		if r.srv.outerStamps == nil || r.srv.outerStamps.Received().IsZero() {
			t.Fatal("the unprotected UDP socket gives no receive times on Linux")
		}
	}
	// The read filter's decision for a REGISTER that waited 400 ms.
	req := a.registerBytes(bob.impi, bob.impu)
	info := sip.TransportReadProps{Transport: "UDP", RemoteAddr: a.conn.LocalAddr()}
	if out, err := r.srv.shedFirst(info, req, 400*time.Millisecond); out != nil || err != nil {
		t.Fatalf("a REGISTER that waited 400 ms passed the filter (%v)", err)
	}
	if code, h := a.answer(5 * time.Second); code != 503 || h["retry-after"] == "" {
		t.Fatalf("a REGISTER that waited 400 ms: %d %v, want 503 with Retry-After", code, h)
	}
	if out, _ := r.srv.shedFirst(info, req, 50*time.Millisecond); out == nil {
		t.Fatal("a REGISTER that waited 50 ms was shed")
	}
	if st := r.srv.Stats(); st.Shed != 1 || st.ShedBy != (ShedCounts{SocketWait: 1}) {
		t.Fatalf("stats %+v, want 1 shed, by the socket wait", st)
	}
}

// TestUERetryAfter: a UE waits at least the Retry-After of a 503 before
// registering again (TS 24.229 §5.1.1.2.1), and its own back-off when that
// is longer or there is none.
func TestUERetryAfter(t *testing.T) {
	shed := &statusError{code: 503, reason: "Service Unavailable", retryAfter: 3 * time.Second}
	for _, c := range []struct {
		err     error
		backoff time.Duration
		want    time.Duration
	}{
		{shed, time.Second, 3 * time.Second},
		{fmt.Errorf("register: %w", shed), time.Second, 3 * time.Second},
		{shed, 8 * time.Second, 8 * time.Second},
		{&statusError{code: 500}, time.Second, time.Second},
		{errors.New("timeout"), 2 * time.Second, 2 * time.Second},
	} {
		if got := retryWait(c.err, c.backoff); got != c.want {
			t.Errorf("retryWait(%v, %v) = %v, want %v", c.err, c.backoff, got, c.want)
		}
	}
	for _, c := range []struct {
		code  int
		value string
		want  time.Duration
		ok    bool
	}{
		{503, "5", 5 * time.Second, true},
		{503, "18000 (in maintenance)", time.Hour, true},
		{503, "2;duration=10", 2 * time.Second, true},
		{503, "soon", 0, false},
		{503, "-1", 0, false},
		{503, "", 0, false},
		{500, "5", 0, false},
	} {
		res := sip.NewResponse(c.code, "x")
		if c.value != "" {
			res.AppendHeader(sip.NewHeader("Retry-After", c.value))
		}
		if got, ok := RetryAfter(res); got != c.want || ok != c.ok {
			t.Errorf("%d with Retry-After %q: %v %v, want %v %v", c.code, c.value, got, ok, c.want, c.ok)
		}
	}
}

// TestStateless503: the refusal built from the raw request parses as a 503
// with the request's Via (all of them, a folded one too), From, To (given a
// tag), Call-ID and CSeq, and the Retry-After; a request without one of
// those is left to sipgo.
func TestStateless503(t *testing.T) {
	raw := "REGISTER sip:a.example SIP/2.0\r\n" +
		"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-one;rport\r\n" +
		"Via: SIP/2.0/UDP 192.0.2.2:5060\r\n ;branch=z9hG4bK-two\r\n" +
		"Max-Forwards: 70\r\n" +
		"f: <sip:alice@a.example>;tag=abc\r\n" +
		"To: <sip:alice@a.example>\r\n" +
		"i: call-1@192.0.2.1\r\n" +
		"CSeq: 7 REGISTER\r\n" +
		"Authorization: Digest username=\"alice@a.example\", response=\"\"\r\n" +
		"Content-Length: 0\r\n\r\n"
	if !isFirstRegister([]byte(raw)) {
		t.Fatal("a REGISTER with an empty response not taken for a first one")
	}
	out, ok := stateless503([]byte(raw), "3")
	if !ok {
		t.Fatal("refused to answer")
	}
	m, err := sip.ParseMessage(out)
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	res, isRes := m.(*sip.Response)
	if !isRes || res.StatusCode != 503 {
		t.Fatalf("not a 503:\n%s", out)
	}
	if got, _ := RetryAfter(res); got != 3*time.Second {
		t.Fatalf("Retry-After %v:\n%s", got, out)
	}
	vias := res.GetHeaders("Via")
	if br, _ := res.Via().Params.Get("branch"); len(vias) != 2 || br != "z9hG4bK-one" {
		t.Fatalf("Vias %v:\n%s", vias, out)
	}
	if res.CallID().Value() != "call-1@192.0.2.1" || res.CSeq().SeqNo != 7 || res.CSeq().MethodName != sip.REGISTER {
		t.Fatalf("Call-ID or CSeq:\n%s", out)
	}
	if tag, _ := res.From().Params.Get("tag"); tag != "abc" {
		t.Fatalf("From tag %q", tag)
	}
	if tag, _ := res.To().Params.Get("tag"); tag == "" {
		t.Fatalf("no To tag:\n%s", out)
	}
	for _, drop := range []string{"i: call-1@192.0.2.1\r\n", "CSeq: 7 REGISTER\r\n", "To: <sip:alice@a.example>\r\n"} {
		if _, ok := stateless503([]byte(strings.Replace(raw, drop, "", 1)), "3"); ok {
			t.Errorf("answered a request without %q", drop)
		}
	}
	answer := strings.Replace(raw, `response=""`, `response="0123456789abcdef0123456789abcdef"`, 1)
	if isFirstRegister([]byte(answer)) {
		t.Error("an answer to a challenge taken for a first REGISTER")
	}
}

// FuzzStateless503: any input either is left alone or gets a response that
// starts as one and whose header ends only at its end (nothing a request
// holds can add a body or a message of its own).
func FuzzStateless503(f *testing.F) {
	f.Add([]byte("REGISTER sip:a SIP/2.0\r\nVia: x\r\nFrom: a\r\nTo: b\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n"))
	f.Add([]byte("REGISTER sip:a SIP/2.0\nv: x\n f\nf: a\nt: b;tag=1\ni: c\ncseq: 1 REGISTER\n\n"))
	f.Fuzz(func(t *testing.T, req []byte) {
		isFirstRegister(req)
		out, ok := stateless503(req, "2")
		if !ok {
			return
		}
		if !bytes.HasPrefix(out, []byte("SIP/2.0 503 Service Unavailable\r\n")) || !bytes.HasSuffix(out, []byte("\r\nContent-Length: 0\r\n\r\n")) {
			t.Fatalf("malformed:\n%q", out)
		}
		if i := bytes.Index(out, []byte("\r\n\r\n")); i != len(out)-4 {
			t.Fatalf("header ends at %d of %d:\n%q", i, len(out), out)
		}
	})
}

// BenchmarkShed503: the stateless refusal of a REGISTER as the load
// generator sends it, against parsing it and building the 503 with sipgo.
func BenchmarkShed503(b *testing.B) {
	raw := []byte("REGISTER sip:bench.example SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK0123456789abcdef;rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:ue000001@bench.example>;tag=0123456789\r\nTo: <sip:ue000001@bench.example>\r\n" +
		"Call-ID: 0123456789abcdef0123@bench\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: <sip:ue000001@127.0.0.1:40000>;expires=600\r\nExpires: 600\r\n" +
		"Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=UDP-enc-tun;spi-c=1111;spi-s=2222;port-c=5062;port-s=5068\r\n" +
		"Require: sec-agree\r\nProxy-Require: sec-agree\r\nSupported: path, sec-agree\r\n" +
		"Authorization: Digest username=\"ue000001@bench.example\", realm=\"bench.example\", uri=\"sip:bench.example\", nonce=\"\", response=\"\"\r\n" +
		"Content-Length: 0\r\n\r\n")
	b.Run("stateless", func(b *testing.B) {
		for b.Loop() {
			if !isFirstRegister(raw) {
				b.Fatal("not a first REGISTER")
			}
			if _, ok := stateless503(raw, "2"); !ok {
				b.Fatal("no 503")
			}
		}
	})
	b.Run("sipgo", func(b *testing.B) {
		for b.Loop() {
			m, err := sip.ParseMessage(raw)
			if err != nil {
				b.Fatal(err)
			}
			res := sip.NewResponseFromRequest(m.(*sip.Request), 503, "Service Unavailable", nil)
			res.AppendHeader(sip.NewHeader("Retry-After", "2"))
			_ = res.String()
		}
	})
}

// TestShedPaceSpread: a shed registration's Retry-After range is the base
// spread while the last whole second admitted at least as many as it
// refused, and widens in proportion (up to shedRetryMaxSpread) when it
// refused more, so that the refused do not come back faster than
// registrations are admitted. A second with no count leaves the base.
func TestShedPaceSpread(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	var p shedPace
	count := func(at time.Time, shed, admitted int) {
		for range shed {
			p.count(at, true)
		}
		for range admitted {
			p.count(at, false)
		}
	}
	count(t0, 100, 300)
	if got := p.spread(t0.Add(1500 * time.Millisecond)); got != shedRetrySpread {
		t.Fatalf("after a second that admitted more than it refused: spread %d, want %d", got, shedRetrySpread)
	}
	count(t0.Add(time.Second), 8000, 1000)
	if got, want := p.spread(t0.Add(2*time.Second)), shedRetrySpread*8; got != want {
		t.Fatalf("after 8,000 refused against 1,000 admitted: spread %d, want %d", got, want)
	}
	count(t0.Add(2*time.Second), 5000, 0)
	if got := p.spread(t0.Add(3 * time.Second)); got != shedRetryMaxSpread {
		t.Fatalf("after a second that admitted none: spread %d, want the cap %d", got, shedRetryMaxSpread)
	}
	if got := p.spread(t0.Add(10 * time.Second)); got != shedRetrySpread {
		t.Fatalf("seconds later, with nothing counted since: spread %d, want %d", got, shedRetrySpread)
	}

	// What the 503 carries: within [min, min+spread).
	o := newOverload(Limits{})
	count2 := func(at time.Time) {
		for range 4000 {
			o.pace.count(at, true)
		}
		for range 1000 {
			o.pace.count(at, false)
		}
	}
	count2(t0)
	wide := false
	for range 200 {
		n, err := strconv.Atoi(o.retryAfter(t0.Add(time.Second)))
		if err != nil || n < shedRetryMin || n >= shedRetryMin+4*shedRetrySpread {
			t.Fatalf("Retry-After %d (%v), want in [%d, %d)", n, err, shedRetryMin, shedRetryMin+4*shedRetrySpread)
		}
		wide = wide || n >= shedRetryMin+shedRetrySpread
	}
	if !wide {
		t.Fatal("200 Retry-After values after a second of 4 refusals per admission, none past the base spread")
	}
}
