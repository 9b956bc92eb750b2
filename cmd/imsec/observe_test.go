package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/observe"
)

var metricsStarted = regexp.MustCompile(`metrics on http://(\S+)/metrics`)

// metricsAddr waits for a command's "metrics on" line and returns the
// address it bound.
func metricsAddr(t *testing.T, c *running) string {
	t.Helper()
	l := c.waitLine(t, "metrics on http://", 10*time.Second)
	m := metricsStarted.FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("%s: metrics line %q", c.name, l)
	}
	if !strings.Contains(l, "(loopback only)") {
		t.Errorf("%s: %q does not say the listener is loopback only", c.name, l)
	}
	return m[1]
}

// httpGet fetches a URL with no keep-alive (no idle goroutines left).
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// scrape reads /metrics into sample -> value ("name{labels}" as
// exposed, labels sorted by the client library).
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	return parseScrape(t, body)
}

func parseScrape(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// want checks exact sample values.
func want(t *testing.T, who string, m map[string]float64, samples map[string]float64) {
	t.Helper()
	for k, v := range samples {
		got, ok := m[k]
		if !ok {
			t.Errorf("%s: no sample %s", who, k)
		} else if got != v {
			t.Errorf("%s: %s = %v, want %v", who, k, got, v)
		}
	}
}

// TestMetricsRegistrationCallDrop drives two P-CSCFs with --metrics: bob
// registers at B and stays, alice registers at A, calls bob and
// de-registers; then a forged ESP packet with a bad ICV is sent to one of
// bob's SAs at B. The counters read over HTTP must move by exactly that.
// /status and 'imsec status' must show bob's registration, and A's JSON
// log must parse and hold no key material.
func TestMetricsRegistrationCallDrop(t *testing.T) {
	dir := t.TempDir()
	dbA, dbB := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	runCLI(t, "sub", "add", "--db", dbA, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP)
	runCLI(t, "sub", "add", "--db", dbB, "--impi", "bob@b.example", "--impu", "sip:bob@b.example", "--k", tsK, "--op", tsOP)
	keylog := filepath.Join(dir, "keys")
	ctx := context.Background()
	pB := startPCSCF(t, ctx, "P-CSCF B", "--domain", "b.example", "--db", dbB, "--peer", "a.example=127.0.0.1:9", "--metrics", "127.0.0.1:0")
	pA := startPCSCF(t, ctx, "P-CSCF A", "--domain", "a.example", "--db", dbA, "--peer", "b.example="+pB.sip,
		"--metrics", ":0", "--log-format", "json", "--log-level", "debug", "--keylog", keylog)
	mA, mB := metricsAddr(t, pA.running), metricsAddr(t, pB.running)

	before := scrape(t, mA)
	want(t, "A at start", before, map[string]float64{
		`imsec_registrations{state="registered"}`:                       0,
		`imsec_registration_successes_total`:                            0,
		`imsec_sas{purpose="signalling",state="active"}`:                0,
		`imsec_esp_drops_total{reason="auth",tunnel="signalling"}`:      0,
		`imsec_hss_vectors_total{result="ok"}`:                          0,
		`imsec_hss_request_duration_seconds_count{op="vector"}`:         0,
		`imsec_calls_total{result="answered"}`:                          0,
		`imsec_media_relayed_packets_total`:                             0,
		`imsec_sip_requests_received_total{method="REGISTER"}`:          0,
		`imsec_registration_failures_total{cause="no_common_security"}`: 0,
	})

	bob := startCLI(t, ctx, "bob", "ue", "--pcscf", pB.sip, "--pcscf-esp", pB.esp, "--impi", "bob@b.example", "--impu", "sip:bob@b.example", "--k", tsK, "--op", tsOP)
	bob.waitLine(t, "200 OK: registered", 30*time.Second)
	alice := startCLI(t, ctx, "alice", "ue", "call", "sip:bob@b.example", "--duration", "1s", "--pcscf", pA.sip, "--pcscf-esp", pA.esp,
		"--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP)
	if code := alice.wait(t, time.Minute); code != 0 {
		t.Fatalf("call: exit %d\n%s\n%s", code, alice.out.String(), alice.err.String())
	}
	bob.waitLine(t, "call with sip:alice@a.example (callee)", 10*time.Second)

	a := scrape(t, mA)
	// alice: one AKA run, one 200, one de-registration, one call answered.
	want(t, "A", a, map[string]float64{
		`imsec_registrations{state="registered"}`:                      0,
		`imsec_registration_attempts_total`:                            1,
		`imsec_registration_successes_total`:                           1,
		`imsec_deregistrations_total{cause="deregister"}`:              1,
		`imsec_hss_vectors_total{result="ok"}`:                         1,
		`imsec_hss_request_duration_seconds_count{op="vector"}`:        1,
		`imsec_calls_total{result="answered"}`:                         1,
		`imsec_calls_total{result="failed"}`:                           0,
		`imsec_calls_active`:                                           0,
		`imsec_dhcp_leases_granted_total`:                              1,
		`imsec_sip_requests_received_total{method="INVITE"}`:           1,
		`imsec_sip_requests_received_total{method="BYE"}`:              1,
		`imsec_sip_responses_sent_total{code="200",method="REGISTER"}`: 2, // registered, de-registered
		`imsec_sip_responses_sent_total{code="200",method="INVITE"}`:   1,
		`imsec_sip_responses_sent_total{code="401",method="REGISTER"}`: 1,
		`imsec_sip_requests_received_total{method="REGISTER"}`:         3, // unprotected, protected, de-registration
	})
	if a[`imsec_media_relayed_packets_total`] < 50 { // 1 s of 20 ms audio both ways, and video
		t.Errorf("A relayed %v media packets", a[`imsec_media_relayed_packets_total`])
	}
	if a[`imsec_esp_packets_total{direction="in",tunnel="signalling"}`] == 0 || a[`imsec_esp_packets_total{direction="in",tunnel="media"}`] == 0 {
		t.Errorf("A: no ESP in: %v", a)
	}

	// /status at B: bob, registered, with an active set of four SAs.
	code, body := httpGet(t, "http://"+mB+"/status")
	var st observe.Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("/status: %d %v\n%s", code, err, body)
	}
	if st.Role != "pcscf" || st.Name != "b.example" || len(st.Registrations) != 1 {
		t.Fatalf("/status: %+v", st)
	}
	r := st.Registrations[0]
	if r.IMPI != "bob@b.example" || r.IMPU != "sip:bob@b.example" || !r.Registered || !r.Inner.IsValid() || !r.NATAddress.IsValid() || r.Expires.IsZero() {
		t.Fatalf("/status registration: %+v", r)
	}
	var active *observe.SASet
	for i, s := range r.Sets {
		if s.State == "active" {
			active = &r.Sets[i]
		}
	}
	if active == nil || active.Suite != "aes-cbc/hmac-sha-1-96" || len(active.SAs) != 4 {
		t.Fatalf("/status sets: %+v", r.Sets)
	}
	var inSPI uint32
	for _, sa := range active.SAs {
		if sa.Direction == "in" && sa.Packets > 0 {
			inSPI = uint32(sa.SPI)
		}
	}
	if inSPI == 0 {
		t.Fatalf("no inbound SA with traffic: %+v", active.SAs)
	}
	code, out, errs := runCLI(t, "status", "--addr", mB)
	if code != 0 || !strings.Contains(out, "sip:bob@b.example") ||
		!strings.Contains(out, "registered") || !strings.Contains(out, "active aes-cbc/hmac-sha-1-96") ||
		!strings.Contains(out, r.Inner.String()) || !strings.Contains(out, "tunnel signalling: ESP in") {
		t.Errorf("imsec status: %d\n%s\n%s", code, out, errs)
	}
	t.Logf("imsec status --addr %s:\n%s", mB, out)
	if code, out, _ := runCLI(t, "status", "--addr", mB, "--json"); code != 0 || !json.Valid([]byte(out)) {
		t.Errorf("imsec status --json: %d %q", code, out)
	}

	// A forged packet on bob's SA: a bad ICV, dropped and counted once.
	b1 := scrape(t, mB)
	want(t, "B", b1, map[string]float64{
		`imsec_registrations{state="registered"}`:            1,
		`imsec_sas{purpose="signalling",state="active"}`:     4,
		`imsec_sas{purpose="media",state="active"}`:          2,
		`imsec_calls_total{result="answered"}`:               1,
		`imsec_sip_requests_received_total{method="INVITE"}`: 1,
	})
	forged := make([]byte, 8+16+32+12)
	binary.BigEndian.PutUint32(forged, inSPI)
	binary.BigEndian.PutUint32(forged[4:], 1<<30)
	conn, err := net.Dial("udp", pB.esp)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(forged)
	conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	var b2 map[string]float64
	for {
		b2 = scrape(t, mB)
		if b2[`imsec_esp_drops_total{reason="auth",tunnel="signalling"}`] != b1[`imsec_esp_drops_total{reason="auth",tunnel="signalling"}`] || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the pump counts asynchronously; nothing to wait on from outside
	}
	if d := b2[`imsec_esp_drops_total{reason="auth",tunnel="signalling"}`] - b1[`imsec_esp_drops_total{reason="auth",tunnel="signalling"}`]; d != 1 {
		t.Errorf("auth drops moved by %v, want 1", d)
	}
	bob.stop(t)
	pA.stop(t)

	// A's JSON log: every line an object, the events in it, no key.
	log := pA.err.String()
	var events int
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["event"] != nil {
			events++
		}
	}
	for _, ev := range []string{`"event":"registered"`, `"event":"call-up"`, `"event":"deregistered"`} {
		if !strings.Contains(log, ev) {
			t.Errorf("JSON log lacks %s", ev)
		}
	}
	secrets := []string{tsK, tsOP}
	k, op := mustHex(t, tsK), mustHex(t, tsOP)
	opc := akakeys.ComputeOPc(akakeys.K(k), akakeys.OP(op))
	secrets = append(secrets, hex.EncodeToString(opc[:]))
	kl, err := os.ReadFile(keylog)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`0x([0-9a-fA-F]{32,})`).FindAllStringSubmatch(string(kl), -1) {
		secrets = append(secrets, strings.ToLower(m[1]))
	}
	if len(secrets) < 3+4 {
		t.Fatalf("key log gave %d keys: %s", len(secrets)-3, kl)
	}
	lower := strings.ToLower(log)
	for _, s := range secrets {
		if strings.Contains(lower, s) {
			t.Errorf("the JSON log holds key material %s", s)
		}
	}
	t.Logf("%d event lines, %d bytes of log, checked against %d keys", events, len(log), len(secrets))
}
