package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/sip"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestListenAddr(t *testing.T) {
	for in, want := range map[string]string{
		"9090":              "127.0.0.1:9090",
		":9090":             "127.0.0.1:9090",
		"0":                 "127.0.0.1:0",
		"127.0.0.2:80":      "127.0.0.2:80",
		"0.0.0.0:9090":      "0.0.0.0:9090",
		"[::1]:9090":        "[::1]:9090",
		"[2001:db8::1]:1":   "[2001:db8::1]:1",
		"metrics.local:123": "metrics.local:123",
	} {
		if got, err := ListenAddr(in); err != nil || got != want {
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "nowhere", "1.2.3.4", "127.0.0.1:99999", ":http", "65536", "a:b:c"} {
		if got, err := ListenAddr(bad); err == nil {
			t.Errorf("ListenAddr(%q) = %q, want an error", bad, got)
		}
	}
}

func FuzzListenAddr(f *testing.F) {
	for _, s := range []string{"9090", ":9090", "[::1]:1", "0.0.0.0:80", "x:y:z", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ListenAddr(s)
		if err != nil {
			return
		}
		// What it accepts is a host and a port, and stays as it is.
		if again, err := ListenAddr(a); err != nil || again != a {
			t.Fatalf("ListenAddr(%q) = %q, then %q, %v", s, a, again, err)
		}
	})
}

// TestEventsCount feeds a registration, a refusal, a call and a lease and
// reads the exact counters.
func TestEventsCount(t *testing.T) {
	e := NewEvents()
	for _, ev := range []sip.Event{
		{Kind: sip.EvRegisterReceived},
		{Kind: sip.EvChallenge},
		{Kind: sip.EvRegistered},
		{Kind: sip.EvVerifyMismatch},
		{Kind: sip.EvVerifyMismatch},
		{Kind: sip.EvOverload},
		{Kind: sip.EvRegisterSent, What: "REGISTER (unprotected)"},
		{Kind: sip.EvRegisterSent, What: "REGISTER (protected, RES)"},
		{Kind: sip.EvRegisterSent, What: "REGISTER (re-registration, protected)"},
		{Kind: sip.EvRegisterSent, What: "REGISTER Expires: 0 (protected)"},
		{Kind: sip.EvCallUp, To: "P-CSCF a.example"}, // a callee's 200: not yet up
		{Kind: sip.EvCallUp},
		{Kind: sip.EvCallFailed},
		{Kind: sip.EvDHCPLease},
		{Kind: sip.EvDeregistered},
		{Kind: sip.EvRegistrationExpired},
	} {
		e.Observe(ev)
	}
	for _, c := range []struct {
		got  prometheus.Collector
		want float64
	}{
		{e.attempts.WithLabelValues(), 3},
		{e.successes.WithLabelValues(), 1},
		{e.failures.WithLabelValues("verify_mismatch"), 2},
		{e.failures.WithLabelValues("overload"), 1},
		{e.failures.WithLabelValues("wrong_response"), 0},
		{e.calls.WithLabelValues("answered"), 1},
		{e.calls.WithLabelValues("failed"), 1},
		{e.leases, 1},
		{e.deregistrations.WithLabelValues("deregister"), 1},
		{e.deregistrations.WithLabelValues("expired"), 1},
	} {
		if v := testutil.ToFloat64(c.got); v != c.want {
			t.Errorf("%v = %v, want %v", c.got.(prometheus.Metric).Desc(), v, c.want)
		}
	}
	// The collector is consistent: its series match its descriptions.
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(e); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

type fakeHSS struct{ fail bool }

func (f fakeHSS) Vector(context.Context, string) (akakeys.Vector, error) {
	if f.fail {
		return akakeys.Vector{}, errors.New("no")
	}
	return akakeys.Vector{}, nil
}
func (f fakeHSS) Resync(context.Context, string, akakeys.RAND, akakeys.AUTS) (akakeys.Vector, error) {
	return akakeys.Vector{}, errors.New("bad AUTS")
}
func (fakeHSS) LookupIMPU(context.Context, string) (string, error) { return "", nil }
func (fakeHSS) IMPUs(context.Context, string) ([]string, error)    { return nil, nil }

func TestHSSCounts(t *testing.T) {
	h := NewHSS(fakeHSS{})
	for range 3 {
		h.Vector(context.Background(), "a")
	}
	h.Resync(context.Background(), "a", akakeys.RAND{}, akakeys.AUTS{})
	bad := NewHSS(fakeHSS{fail: true})
	bad.Vector(context.Background(), "a")
	for _, c := range []struct {
		got  prometheus.Collector
		want float64
	}{
		{h.vectors.WithLabelValues("ok"), 3}, {h.vectors.WithLabelValues("error"), 0},
		{h.resyncs.WithLabelValues("error"), 1}, {bad.vectors.WithLabelValues("error"), 1},
	} {
		if v := testutil.ToFloat64(c.got); v != c.want {
			t.Errorf("%v = %v, want %v", c.got.(prometheus.Metric).Desc(), v, c.want)
		}
	}
	if n := testutil.CollectAndCount(h, "imsec_hss_request_duration_seconds"); n != 2 {
		t.Errorf("%d latency series, want vector and resync", n)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(h); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

// TestLogEventsJSON: one JSON object per event, with its kind; failures
// at warn.
func TestLogEventsJSON(t *testing.T) {
	var b bytes.Buffer
	l, err := NewLogger(&b, "json", 0)
	if err != nil {
		t.Fatal(err)
	}
	f := LogEvents(l)
	f(sip.Event{Kind: sip.EvRegistered, From: "P-CSCF a.example", To: "UE sip:alice@a.example", What: "200 OK", Detail: "expires 10m0s"})
	f(sip.Event{Kind: sip.EvWrongResponse, From: "P-CSCF a.example", What: "403 Forbidden"})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if first["event"] != "registered" || first["msg"] != "200 OK" || first["level"] != "INFO" || first["to"] != "UE sip:alice@a.example" || first["detail"] != "expires 10m0s" {
		t.Errorf("first line %v", first)
	}
	if second["event"] != "wrong-response" || second["level"] != "WARN" {
		t.Errorf("second line %v", second)
	}
	if _, err := NewLogger(io.Discard, "xml", 0); err == nil {
		t.Error("format xml accepted")
	}
	for in, want := range map[string]string{"debug": "DEBUG", "INFO": "INFO", "warn": "WARN", "error": "ERROR"} {
		if l, err := ParseLevel(in); err != nil || l.String() != want {
			t.Errorf("ParseLevel(%q) = %v, %v", in, l, err)
		}
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error("level loud accepted")
	}
}

// TestServer: the listener binds loopback for a bare port, serves
// /metrics and /status, and /debug/pprof/ only when asked.
func TestServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := NewEvents()
	reg.MustRegister(e)
	e.Observe(sip.Event{Kind: sip.EvRegistered})
	addr, err := ListenAddr("0")
	if err != nil {
		t.Fatal(err)
	}
	for _, pprofOn := range []bool{false, true} {
		s, err := Start(context.Background(), Config{Addr: addr, Registry: reg, PProf: pprofOn,
			Status: func() any { return Status{Role: "test", Name: "x"} }})
		if err != nil {
			t.Fatal(err)
		}
		if !s.Loopback() || !strings.Contains(s.Describe(pprofOn), "(loopback only)") {
			t.Errorf("%v: not loopback: %s", s.Addr(), s.Describe(pprofOn))
		}
		get := func(path string) (int, string) {
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			res, err := c.Get("http://" + s.Addr().String() + path)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			return res.StatusCode, string(b)
		}
		if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "imsec_registration_successes_total 1") {
			t.Errorf("/metrics: %d\n%s", code, body)
		}
		var st Status
		if code, body := get("/status"); code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Role != "test" {
			t.Errorf("/status: %d %s", code, body)
		}
		wantPProf := http.StatusNotFound
		if pprofOn {
			wantPProf = http.StatusOK
		}
		if code, _ := get("/debug/pprof/"); code != wantPProf {
			t.Errorf("pprof %v: /debug/pprof/ answered %d", pprofOn, code)
		}
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}
	// The end of the context stops it too.
	ctx, cancel := context.WithCancel(context.Background())
	s, err := Start(ctx, Config{Addr: addr, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	s.wg.Wait()
	if _, err := Start(context.Background(), Config{Addr: addr}); err == nil {
		t.Error("Start without a registry")
	}
}
