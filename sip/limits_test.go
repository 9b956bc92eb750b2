package sip

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/esp"
)

// attacker sends hand-made REGISTERs from one UDP socket on its own
// loopback address and reads the answers.
type attacker struct {
	t    testing.TB
	conn *net.UDPConn
	to   netip.AddrPort
	n    int
}

func newAttacker(t testing.TB, to netip.AddrPort) *attacker {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(uniqueLoopback()), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &attacker{t: t, conn: c, to: to}
}

// register sends an unprotected REGISTER for impu, naming impi in the
// Authorization header; extra headers (whole lines) may replace the
// defaults: a line "Name:" alone removes that header.
func (a *attacker) register(impi, impu string, extra ...string) {
	if _, err := a.conn.WriteToUDPAddrPort(a.registerBytes(impi, impu, extra...), a.to); err != nil {
		a.t.Fatal(err)
	}
}

// registerBytes is the REGISTER register would send next.
func (a *attacker) registerBytes(impi, impu string, extra ...string) []byte {
	a.n++
	local := a.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	hdrs := []string{
		fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-atk%d", local, a.n),
		"Max-Forwards: 70",
		fmt.Sprintf("From: <%s>;tag=atk%d", impu, a.n),
		fmt.Sprintf("To: <%s>", impu),
		fmt.Sprintf("Call-ID: atk%d-%s@x", a.n, local),
		fmt.Sprintf("CSeq: %d REGISTER", a.n),
		fmt.Sprintf("Contact: <sip:x@%s>", local),
		fmt.Sprintf(`Authorization: Digest username="%s", realm="a.example", uri="sip:a.example", nonce="", response=""`, impi),
		fmt.Sprintf("Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=UDP-enc-tun;spi-c=%d;spi-s=%d;port-c=5062;port-s=5068", 1000+2*a.n, 1001+2*a.n),
		"Require: sec-agree",
		"Expires: 600",
	}
	for _, e := range extra {
		name, _, _ := strings.Cut(e, ":")
		kept := hdrs[:0]
		for _, h := range hdrs {
			if !strings.HasPrefix(h, name+":") {
				kept = append(kept, h)
			}
		}
		hdrs = kept
		if strings.TrimSpace(e) != name+":" {
			hdrs = append(hdrs, e)
		}
	}
	return []byte("REGISTER sip:a.example SIP/2.0\r\n" + strings.Join(hdrs, "\r\n") + "\r\nContent-Length: 0\r\n\r\n")
}

// answer reads one response and returns its status code (0 on timeout)
// and headers.
func (a *attacker) answer(d time.Duration) (int, map[string]string) {
	buf := make([]byte, 64<<10)
	a.conn.SetReadDeadline(time.Now().Add(d))
	n, _, err := a.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return 0, nil
	}
	r := bufio.NewReader(bytes.NewReader(buf[:n]))
	line, _ := r.ReadString('\n')
	f := strings.Fields(line)
	if len(f) < 2 {
		return -1, nil
	}
	code, _ := strconv.Atoi(f[1])
	hdrs := map[string]string{}
	for {
		l, err := r.ReadString('\n')
		l = strings.TrimRight(l, "\r\n")
		if err != nil || l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		hdrs[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	return code, hdrs
}

// TestSourceRateLimit: one source past its token bucket gets 503 with
// Retry-After before any work is done; another source is not affected;
// with the limits off nothing is refused.
func TestSourceRateLimit(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("off=%v", off), func(t *testing.T) {
			r := newRig(t, func(c *ServerConfig) { c.Limits = Limits{Off: off, SourceRate: 1, SourceBurst: 5} })
			alice := newSub(t, r.store, "alice", "a.example")
			a := newAttacker(t, r.srv.SIPAddr())
			codes := map[int]int{}
			for range 20 {
				a.register(alice.impi, alice.impu)
				code, h := a.answer(5 * time.Second)
				codes[code]++
				if code == 503 && h["retry-after"] == "" {
					t.Fatal("503 without Retry-After")
				}
			}
			if off {
				if codes[503] != 0 || codes[401] != 20 {
					t.Fatalf("limits off: %v", codes)
				}
				return
			}
			if codes[401] != 5 || codes[503] != 15 {
				t.Fatalf("answers %v, want 5 x 401 (the burst) and 15 x 503", codes)
			}
			if r.srv.Stats().Overloaded != 15 {
				t.Fatalf("stats %+v", r.srv.Stats())
			}
			// The real UE, from another address, registers.
			u := r.ue(alice, func(c *UEConfig) { c.Local = netip.MustParseAddr(uniqueLoopback()) })
			if err := u.Register(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSameIMPIFloodDoesNotStopTheRealUE: strangers on several addresses
// flood alice's IMPI with REGISTERs while alice registers. She registers,
// her SQNs are not burnt (the flood shares one vector), and once the
// flood's temporary sets expire every SPI and temporary set is given back.
func TestSameIMPIFloodDoesNotStopTheRealUE(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRig(t, func(c *ServerConfig) { c.Now = clk.Now })
	alice := newSub(t, r.store, "alice", "a.example")
	var attackers []*attacker
	for range 4 {
		attackers = append(attackers, newAttacker(t, r.srv.SIPAddr()))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	sent := 0
	var mu sync.Mutex
	for _, a := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ { // bounded: 200 REGISTERs per source
				select {
				case <-stop:
					return
				default:
				}
				a.register(alice.impi, alice.impu)
				a.answer(time.Second)
				mu.Lock()
				sent++
				mu.Unlock()
			}
		}()
	}
	// Alice registers once the flood is well under way.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		n := sent
		mu.Unlock()
		if n >= 100 || time.Now().After(end) {
			break
		}
	}
	u := r.ue(alice, func(c *UEConfig) { c.Local = netip.MustParseAddr(uniqueLoopback()) })
	err := u.Register(ctxT(t))
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("alice could not register during the flood (%d REGISTERs sent): %v", sent, err)
	}
	vectors := 0
	for _, e := range r.lad.kinds(EvHSSVector) {
		if strings.HasPrefix(e.What, "MAR") {
			vectors++
		}
	}
	t.Logf("%d flood REGISTERs, %d vectors drawn", sent, vectors)
	if sent < 100 {
		t.Fatalf("the flood sent only %d REGISTERs", sent)
	}
	// One vector for the flood and alice together, perhaps one more if the
	// first was consumed before the flood ended (alice answered it).
	if vectors > 3 {
		t.Fatalf("%d vectors drawn for one IMPI under flood: SQNs burnt", vectors)
	}
	if !r.reg(alice.impi).Registered {
		t.Fatal("alice not registered at the P-CSCF")
	}
	// The strangers' temporary sets never reached the data plane's tables:
	// only alice's active set's inbound SAs are there (each installed by
	// its first packet).
	mine := map[esp.SPI]bool{}
	for _, set := range r.reg(alice.impi).Sets {
		if set.State == "active" {
			mine[set.InboundSPI[0]], mine[set.InboundSPI[1]] = true, true
		}
	}
	for _, c := range r.srv.Pump().SACounters(nil) {
		if c.Inbound && !mine[c.SPI] {
			t.Fatalf("inbound SA %#x in the pump is not alice's (%d SAs wait for a first packet)", c.SPI, r.srv.lazy.len())
		}
	}
	// The flood's temporary sets expire; alice's active set (2 SPIs) and
	// her media SPI stay.
	clk.Add(DefaultTempSATimeout + time.Second)
	r.srv.Housekeep()
	st := r.srv.Stats()
	if st.TempSets != 0 || st.SPIs != 3 || st.Pending != 0 {
		t.Fatalf("after the flood expired: %+v, want no temporary set, no pending challenge, 3 SPIs", st)
	}
	if err := u.Deregister(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	r.srv.Housekeep()
	if st := r.srv.Stats(); st.SPIs != 0 || st.Registrations != 0 || st.TempSets != 0 || r.srv.lazy.len() != 0 || len(r.srv.Pump().SACounters(nil)) != 0 {
		t.Fatalf("after de-registration: %+v, %d SAs waiting, %d in the pump; want nothing held", st, r.srv.lazy.len(), len(r.srv.Pump().SACounters(nil)))
	}
}

// TestTempSetsPerSourceCap: one source cannot take the global cap on
// temporary SA sets: past its share it gets 503, and a UE elsewhere still
// registers.
func TestTempSetsPerSourceCap(t *testing.T) {
	r := newRig(t, func(c *ServerConfig) { c.MaxTempSets = 8; c.Limits = Limits{TempSetsPerSource: 4} })
	alice := newSub(t, r.store, "alice", "a.example")
	a := newAttacker(t, r.srv.SIPAddr())
	codes := map[int]int{}
	for i := range 10 {
		s := newSub(t, r.store, fmt.Sprintf("victim%d", i), "a.example")
		a.register(s.impi, s.impu)
		code, _ := a.answer(5 * time.Second)
		codes[code]++
	}
	if codes[401] != 4 || codes[503] != 6 {
		t.Fatalf("answers %v, want 4 x 401 and 6 x 503", codes)
	}
	u := r.ue(alice, func(c *UEConfig) { c.Local = netip.MustParseAddr(uniqueLoopback()) })
	if err := u.Register(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// TestBadRegistersGet400: malformed sec-agree offers and a REGISTER without
// From are the sender's fault: 400, no vector drawn, nothing installed.
func TestBadRegistersGet400(t *testing.T) {
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	sc := "Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;prot=esp;mod=UDP-enc-tun;"
	for _, c := range []struct {
		name  string
		extra string
	}{
		{"reserved spi-c", sc + "spi-c=100;spi-s=5000;port-c=5062;port-s=5068"},
		{"reserved spi-s", sc + "spi-c=5000;spi-s=0;port-c=5062;port-s=5068"},
		{"spi-c = spi-s", sc + "spi-c=5000;spi-s=5000;port-c=5062;port-s=5068"},
		{"port-c = port-s", sc + "spi-c=5000;spi-s=5001;port-c=5068;port-s=5068"},
		{"no port-c", sc + "spi-c=5000;spi-s=5001;port-s=5068"},
		{"no From", "From:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newAttacker(t, r.srv.SIPAddr())
			a.register(alice.impi, alice.impu, c.extra)
			if code, _ := a.answer(5 * time.Second); code != 400 {
				t.Fatalf("answer %d, want 400", code)
			}
		})
	}
	if r.lad.has(EvHSSVector) || r.srv.Stats().TempSets != 0 {
		t.Fatalf("bad REGISTERs cost a vector or an SA set: %+v", r.srv.Stats())
	}
}

// TestExpiresOverflow: an Expires too large for time.Duration is granted
// the maximum, not a wrapped-around value (9223372037 s * 1e9 overflows).
func TestExpiresOverflow(t *testing.T) {
	r := newRig(t, nil)
	for _, v := range []string{"9223372037", "18446744073709551616", "99999999999999999999999"} {
		req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "a.example"})
		req.AppendHeader(sip.NewHeader("Expires", v))
		if got := r.srv.grant(requestExpires(req)); got != DefaultMaxExpires {
			t.Errorf("Expires %s granted %v, want %v", v, got, DefaultMaxExpires)
		}
	}
	for v, want := range map[string]time.Duration{"0": 0, "1": DefaultMinExpires, "600": 600 * time.Second, "-5": DefaultExpires, "x": DefaultExpires} {
		req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "a.example"})
		req.AppendHeader(sip.NewHeader("Expires", v))
		if got := r.srv.grant(requestExpires(req)); got != want {
			t.Errorf("Expires %s granted %v, want %v", v, got, want)
		}
	}
}

// TestUENoticesRestartedPCSCF: with a registration far from expiry, a
// P-CSCF that restarts (and so forgets every SA) is noticed by the UE's
// liveness probe, and the UE registers again on its own.
func TestUENoticesRestartedPCSCF(t *testing.T) {
	lo := netip.AddrPortFrom(netip.MustParseAddr(uniqueLoopback()), 0)
	r := newRig(t, func(c *ServerConfig) { c.SIP, c.ESP, c.MediaESP = lo, lo, lo })
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(c *UEConfig) {
		c.Expires = time.Hour
		c.Probe, c.ProbeTimeout = 300*time.Millisecond, time.Second
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
			t.Logf("srv counters %+v", r.srv.Pump().Counters())
			t.Logf("ue counters %+v", u.Pump().Counters())
			t.Logf("ue SAs %+v", u.Info().SAs)
			t.Logf("srv SAs %+v", r.srv.Pump().SACounters(nil))
		}
	}()
	waitFor(t, func() bool { return r.reg(alice.impi).Registered && u.Info().Registered })

	cfg := r.srv.cfg
	cfg.SIP, cfg.ESP, cfg.MediaESP = r.srv.SIPAddr(), r.srv.ESPAddr(), r.srv.MediaESPAddr()
	r.srv.Close()
	restarted := time.Now()
	srv2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.srv = srv2 // closed by the rig's cleanup, after Run's de-registration
	waitFor(t, func() bool { return r.reg(alice.impi).Registered })
	t.Logf("registered again %v after the restart (probe every 300 ms, timeout 1 s)", time.Since(restarted).Round(time.Millisecond))
	if !r.lad.has(EvStartOver) {
		t.Fatal("no start-over event")
	}
}

var _ = akakeys.AMF{}
var _ = hss.NewMemStore
