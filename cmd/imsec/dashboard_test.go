package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// dashboardMetric matches the metric names a PromQL expression uses.
var dashboardMetric = regexp.MustCompile(`\b(?:imsec|process|go)_[a-z0-9_]+\b`)

// TestDashboardMetricsExist runs 'imsec hss' (with --pprof), 'imsec pcscf
// --hss' and a UE, all with --metrics, registers the UE, and checks that
// every metric docs/grafana-dashboard.json queries is in a real scrape of
// the HSS or the P-CSCF; the UE's own counters must be exact.
func TestDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	used := map[string][]string{} // metric -> panels
	ids := map[int]bool{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := dashboardMetric.FindAllString(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				used[n] = append(used[n], p.Title)
			}
		}
	}
	for _, v := range dash.Templating.List {
		for _, n := range dashboardMetric.FindAllString(v.Definition, -1) {
			used[n] = append(used[n], "variable")
		}
	}
	for _, want := range []string{"imsec_registrations", "imsec_sas", "imsec_esp_packets_total", "imsec_esp_drops_total", "imsec_hss_request_duration_seconds_bucket"} {
		if used[want] == nil {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}

	db := filepath.Join(t.TempDir(), "hss.db")
	if code, _, errs := runCLI(t, "sub", "add", "--db", db, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP); code != 0 {
		t.Fatal(errs)
	}
	ctx := context.Background()
	h := startCLI(t, ctx, "hss", "hss", "--db", db, "--listen", "127.0.0.1:0", "--origin-host", "hss.a.example", "--origin-realm", "a.example",
		"--metrics", "0", "--pprof")
	mH := metricsAddr(t, h)
	m := hssStarted.FindStringSubmatch(h.waitLine(t, "Diameter Cx on", 10*time.Second))
	if m == nil {
		t.Fatal("no address in the HSS's start line")
	}
	srv := startPCSCF(t, ctx, "pcscf", "--domain", "a.example", "--hss", m[1], "--metrics", "127.0.0.1:0")
	mP := metricsAddr(t, srv.running)
	ue := startCLI(t, ctx, "ue", "ue", "--pcscf", srv.sip, "--pcscf-esp", srv.esp, "--impi", "alice@a.example",
		"--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP, "--metrics", ":0", "--log-format", "json", "--log-level", "info")
	mU := metricsAddr(t, ue)
	ue.waitLine(t, "200 OK: registered", 30*time.Second)

	u := scrape(t, mU)
	want(t, "UE", u, map[string]float64{
		`imsec_registrations{state="registered"}`:                          1,
		`imsec_registration_attempts_total`:                                1,
		`imsec_registration_successes_total`:                               1,
		`imsec_registration_failures_total{cause="retry"}`:                 0,
		`imsec_sip_responses_received_total{code="401",method="REGISTER"}`: 1,
		`imsec_sip_responses_received_total{code="200",method="REGISTER"}`: 1,
		`imsec_esp_drops_total{reason="auth",tunnel="signalling"}`:         0,
	})
	if u[`imsec_esp_packets_total{direction="out",tunnel="signalling"}`] == 0 {
		t.Errorf("UE: no ESP sent")
	}
	// The UE's status: its registration and SAs.
	if code, out, errs := runCLI(t, "status", "--addr", mU); code != 0 || !strings.Contains(out, "ue sip:alice@a.example") ||
		!strings.Contains(out, "registered") || !strings.Contains(out, "installed aes-cbc/hmac-sha-1-96") {
		t.Errorf("imsec status of the UE: %d\n%s\n%s", code, out, errs)
	}

	have := map[string]bool{}
	p := scrape(t, mP)
	for _, s := range []map[string]float64{p, scrape(t, mH)} {
		for k := range s {
			name, _, _ := strings.Cut(k, "{")
			have[name] = true
		}
	}
	var missing []string
	for n, panels := range used {
		if !have[n] {
			missing = append(missing, n+" (in "+strings.Join(panels, ", ")+")")
		}
	}
	sort.Strings(missing)
	for _, n := range missing {
		t.Errorf("the dashboard queries %s, which no scrape of the P-CSCF or the HSS has", n)
	}
	// The P-CSCF timed its vector over Cx; the HSS timed its own.
	want(t, "P-CSCF", p, map[string]float64{`imsec_hss_request_duration_seconds_count{op="vector"}`: 1, `imsec_hss_vectors_total{result="ok"}`: 1,
		`imsec_registrations_shed_total{signal="in-flight"}`: 0, `imsec_registrations_shed_total{signal="socket-wait"}`: 0,
		`imsec_socket_drops_total{socket="sip"}`: 0, `imsec_socket_drops_total{socket="esp"}`: 0, `imsec_socket_drops_total{socket="media-esp"}`: 0})
	hs := scrape(t, mH)
	want(t, "HSS", hs, map[string]float64{`imsec_hss_request_duration_seconds_count{op="vector"}`: 1, `imsec_diameter_requests_total{command="MAR"}`: 1})

	// --pprof serves the profiles; without it they are not there.
	if code, body := httpGet(t, "http://"+mH+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("HSS /debug/pprof/: %d", code)
	}
	if code, _ := httpGet(t, "http://"+mP+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("P-CSCF without --pprof: /debug/pprof/ answered %d", code)
	}
	if code, out, _ := runCLI(t, "status", "--addr", mH); code != 0 || !strings.Contains(out, "diameter: ") || !strings.Contains(out, "MAR 1") {
		t.Errorf("imsec status of the HSS: %d\n%s", code, out)
	}
	ue.stop(t)
	for _, l := range strings.Split(strings.TrimSpace(ue.err.String()), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("UE log line is not JSON: %q", l)
		}
	}
	if !strings.Contains(ue.err.String(), `"event":"registered"`) {
		t.Errorf("the UE's JSON log lacks its registration:\n%s", ue.err.String())
	}
}

// TestTunnelMetrics: a manual tunnel with --metrics answers three pings;
// its counters say exactly that.
func TestTunnelMetrics(t *testing.T) {
	p := newTunnelPair(t, "aes-cbc", 16, "hmac-sha-1-96", 20)
	a := startTunnel(t, p.argsA("--metrics", "127.0.0.1:0")...)
	mm := metricsStarted.FindStringSubmatch(a.out.String())
	if mm == nil {
		t.Fatalf("no metrics line:\n%s", a.out.String())
	}
	if code, out, errs := runCLI(t, append([]string{"tunnel"}, p.argsB("--ping", "100.64.7.1", "--count", "3", "--interval", "20ms")...)...); code != 0 {
		t.Fatalf("ping: exit %d\n%s%s", code, out, errs)
	}
	want(t, "tunnel", scrape(t, mm[1]), map[string]float64{
		`imsec_esp_packets_total{direction="in",tunnel="manual"}`:      3,
		`imsec_esp_packets_total{direction="out",tunnel="manual"}`:     3,
		`imsec_esp_bytes_total{direction="in",tunnel="manual"}`:        252,
		`imsec_esp_drops_total{reason="auth",tunnel="manual"}`:         0,
		`imsec_esp_sas_installed{direction="inbound",tunnel="manual"}`: 1,
	})
	if code, out, _ := runCLI(t, "status", "--addr", mm[1]); code != 0 || !strings.Contains(out, "tunnel manual: ESP in 3 packets (252 B)") {
		t.Errorf("imsec status of the tunnel: %d\n%s", code, out)
	}
	a.stop(t)
}

// TestObserveFlags: the monitoring flags' bad values are usage errors on
// every command that has them, and 'imsec status' without a listener
// fails with a hint.
func TestObserveFlags(t *testing.T) {
	base := map[string][]string{
		"pcscf":  {"pcscf", "--domain", "a.example", "--db", "x"},
		"ue":     {"ue", "--pcscf", "127.0.0.1:5060", "--impi", "a", "--impu", "sip:a@b", "--k", tsK, "--op", tsOP},
		"hss":    {"hss", "--db", "x"},
		"tunnel": newTunnelPair(t, "aes-gcm", 20, "", 0).argsA(),
	}
	base["tunnel"] = append([]string{"tunnel"}, base["tunnel"]...)
	for name, args := range base {
		for _, bad := range [][]string{
			{"--metrics", "nowhere"}, {"--metrics", "127.0.0.1:99999"}, {"--pprof"},
			{"--log-format", "xml"}, {"--log-level", "loud"},
		} {
			code, _, errs := runCLI(t, append(append([]string{}, args...), bad...)...)
			if code != 2 || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, strings.TrimPrefix(bad[0], "--")) {
				t.Errorf("%s %v: code %d stderr %q", name, bad, code, errs)
			}
		}
	}
	for _, bad := range [][]string{{"status"}, {"status", "--addr", "x:y:z"}, {"status", "--addr", "1", "--timeout", "0s"}} {
		if code, _, errs := runCLI(t, bad...); code != 2 || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: code %d stderr %q", bad, code, errs)
		}
	}
	// A listener that never answers: the request times out.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if code, _, errs := runCLI(t, "status", "--addr", ln.Addr().String(), "--timeout", "200ms"); code != 1 || !strings.Contains(errs, "is the process running with --metrics") {
		t.Errorf("status of nothing: code %d stderr %q", code, errs)
	}
}
