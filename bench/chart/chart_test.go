package chart

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imsec/imsec/bench"
)

// svgTexts parses an SVG as XML (failing the test if it is not) and
// returns its text elements' contents.
func svgTexts(t testing.TB, svg []byte) []string {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(svg))
	var texts []string
	var in bool
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = e.Name.Local
			}
			in = e.Name.Local == "text"
			if in {
				texts = append(texts, "")
			}
		case xml.CharData:
			if in {
				texts[len(texts)-1] += string(e)
			}
		case xml.EndElement:
			in = false
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	return texts
}

func hasAll(t *testing.T, texts []string, want ...string) {
	t.Helper()
	all := "\n" + strings.Join(texts, "\n") + "\n"
	for _, w := range want {
		if !strings.Contains(all, "\n"+w+"\n") {
			t.Errorf("no text %q in the chart; texts: %q", w, texts)
		}
	}
}

func tunnelResults() *Results {
	run := func(impl, variant, mode, ealg string, gbps, pps float64, sizes ...bench.SizePPS) TunnelRun {
		return TunnelRun{Impl: impl, Variant: variant, Measured: "2026-11-27", Source: "test",
			Result: bench.TunnelResult{Mode: mode, EAlg: ealg, Alg: "hmac-sha-1-96", Gbps: gbps, PPS: pps, PPSBySize: sizes}}
	}
	return &Results{Date: "2026-11-27", Machine: "test", Tunnel: []TunnelRun{
		run(ImplWireGuard, "", "netstack", "chacha20-poly1305", 1.05, 148000, bench.SizePPS{Size: 64, PPS: 150000}, bench.SizePPS{Size: 1400, PPS: 90000}),
		run(ImplImsec, "", "netstack", "aes-cbc", 3.16, 231000, bench.SizePPS{Size: 64, PPS: 250000}, bench.SizePPS{Size: 1400, PPS: 120000}),
		run(ImplImsec, "--x <&> \"y\"", "tun", "aes-gcm", 7.89, 275000),
	}}
}

// TestTunnelChart: the tunnel chart is an SVG with both panels' titles,
// a bar per imsec run and one of wireguard-go beside it in each panel
// (none for a mode without a wireguard-go run), with their values, and
// text that XML would misread comes out escaped.
func TestTunnelChart(t *testing.T) {
	var b bytes.Buffer
	if err := Draw(&b, tunnelResults(), ChartTunnel); err != nil {
		t.Fatal(err)
	}
	texts := svgTexts(t, b.Bytes())
	hasAll(t, texts, "TCP stream through the tunnel (measured 2026-11-27)", "Small packets (64-200 bytes), slower direction",
		"imsec", "wireguard-go", "3.16", "7.89", "1.05", "231k", "275k", "148k", "Gbit/s", "thousand packets/s", "--x <&> \"y\"")
	// Bars: two imsec runs in two panels, and the legend's swatch.
	if n := bytes.Count(b.Bytes(), []byte("fill:#1F77B4")); n != 2*2+2 {
		t.Errorf("%d imsec bars and swatches, want 6", n)
	}
	// wireguard-go: netstack only (tun has none: a zero bar, unlabelled).
	if n := strings.Count(strings.Join(texts, "\n"), "1.05"); n != 1 {
		t.Errorf("wireguard-go's 1.05 appears %d times, want once", n)
	}
}

// TestSizesChart: one line per run that measured sizes, named by
// implementation, mode and algorithms.
func TestSizesChart(t *testing.T) {
	var b bytes.Buffer
	if err := Draw(&b, tunnelResults(), ChartSizes); err != nil {
		t.Fatal(err)
	}
	texts := svgTexts(t, b.Bytes())
	hasAll(t, texts, "Packets/s by inner packet size, slower direction (measured 2026-11-27)",
		"wireguard-go netstack", "imsec netstack aes-cbc + hmac-sha-1-96", "inner IP packet size, bytes")
	for _, s := range texts {
		if strings.Contains(s, "tun aes-gcm") {
			t.Errorf("a run without sizes is drawn: %q", s)
		}
	}
}

// TestRegisterChart: rate and latency panels over time; a series with
// failures draws them; a step with no registration is no latency point.
func TestRegisterChart(t *testing.T) {
	run := RegisterRun{Measured: "2026-12-07", Source: "test", Result: bench.RegisterResult{UEs: 30, Registered: 28, Failed: map[string]int{"timeout-dhcp": 2},
		SeriesStepS: 1, Series: []bench.RegisterPoint{
			{T: 0, Registered: 10, RegPerS: 10, P50ms: 1.5, P95ms: 4, P99ms: 9},
			{T: 1, Registered: 0, Failed: 2},
			{T: 2, Registered: 18, RegPerS: 18, P50ms: 2, P95ms: 30, P99ms: 250},
		}}}
	var b bytes.Buffer
	if err := RegisterSVG(&b, run); err != nil {
		t.Fatal(err)
	}
	texts := svgTexts(t, b.Bytes())
	hasAll(t, texts, "bench register, measured 2026-12-07", "30 UEs: 28 registered, 2 failed",
		"Registration latency of those ending in each 1s step", "registrations/s", "failures/s", "p50", "p95", "p99",
		"seconds since the first UE started", "ms (log scale)")
	run.Result.Series = nil
	if err := RegisterSVG(io.Discard, run); err == nil || !strings.Contains(err.Error(), "no time series") {
		t.Errorf("a run without a series: %v", err)
	}
}

// TestLoadErrors: an empty, broken or incomplete results file is refused
// with an error that says what is wrong.
func TestLoadErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "empty"},
		{"  \n", "empty"},
		{"{", "not a results file"},
		{"{\n\"date\": \"2026-12-07\",\n\"tunnel\": [}\n", "line 3"},
		{`{"date": "2026-12-07"} {}`, "more than one JSON value"},
		{`{"date": "7 Dec", "tunnel": []}`, "want YYYY-MM-DD"},
		{`{"date": "2026-12-07"}`, "no tunnel or register results"},
		{`{"date": "2026-12-07", "tunnel": [{"impl": "strongswan", "measured": "2026-12-07", "source": "x", "result": {"mode": "tun"}}]}`, "impl"},
		{`{"date": "2026-12-07", "tunnel": [{"impl": "imsec", "measured": "2026-12-07", "result": {"mode": "tun"}}]}`, "no source"},
		{`{"date": "2026-12-07", "tunnel": [{"impl": "imsec", "measured": "2026-12-07", "source": "x", "result": {"mode": ""}}]}`, "no mode"},
		{`{"date": "2026-12-07", "tunnel": [{"impl": "imsec", "measured": "2026-12-07", "source": "x", "result": {"mode": "tun", "gbps": -1}}]}`, "negative"},
		{`{"date": "2026-12-07", "register": [{"measured": "2026-12-07", "source": "x", "result": {"series": [{"t_s": 0}]}}]}`, "series_step_s"},
		{`[1, 2]`, "not a results file"},
	} {
		_, err := Load(strings.NewReader(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one saying %q", c.in, err, c.want)
		}
	}
	// A file with tunnel runs only has no register chart, and the reverse.
	r := tunnelResults()
	if err := Draw(io.Discard, r, ChartRegister); err == nil || !strings.Contains(err.Error(), "no register run") {
		t.Errorf("register chart of tunnel results: %v", err)
	}
	if err := Draw(io.Discard, &Results{Date: "2026-12-07"}, ChartTunnel); err == nil || !strings.Contains(err.Error(), "no imsec tunnel run") {
		t.Errorf("tunnel chart of nothing: %v", err)
	}
	if err := Draw(io.Discard, r, "pie"); err == nil {
		t.Error("chart pie drawn")
	}
}

// TestCommittedCharts: the README's charts (docs/charts) are what `make
// charts` draws from the committed results files today: a change of the
// data or of the drawing without `make charts` fails here.
func TestCommittedCharts(t *testing.T) {
	root := filepath.Join("..", "..")
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	// The data files make charts uses: CHARTS_TUNNEL and CHARTS_DATA.
	vars := map[string]string{}
	for _, l := range strings.Split(string(mk), "\n") {
		if k, v, ok := strings.Cut(l, "?="); ok && strings.HasPrefix(k, "CHARTS_") {
			vars[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if vars["CHARTS_TUNNEL"] == "" || vars["CHARTS_DATA"] == "" {
		t.Fatalf("the Makefile names no CHARTS_TUNNEL or CHARTS_DATA: %v", vars)
	}
	for _, c := range []struct{ data, chart, svg string }{
		{vars["CHARTS_TUNNEL"], ChartTunnel, "docs/charts/tunnel.svg"},
		{vars["CHARTS_DATA"], ChartSizes, "docs/charts/sizes.svg"},
		{vars["CHARTS_DATA"], ChartRegister, "docs/charts/register.svg"},
	} {
		f, err := os.Open(filepath.Join(root, c.data))
		if err != nil {
			t.Fatal(err)
		}
		r, err := Load(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", c.data, err)
		}
		var b bytes.Buffer
		if err := Draw(&b, r, c.chart); err != nil {
			t.Fatalf("%s %s: %v", c.data, c.chart, err)
		}
		svgTexts(t, b.Bytes())
		committed, err := os.ReadFile(filepath.Join(root, c.svg))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(committed, b.Bytes()) {
			t.Errorf("%s is not what 'make charts' draws from %s: run make charts", c.svg, c.data)
		}
	}
}

// FuzzLoad: any input is a results file or an error, never a crash.
// (Drawing under the fuzzer's instrumentation takes seconds a chart:
// TestDrawEdgeCases draws the awkward results instead.)
func FuzzLoad(f *testing.F) {
	for _, p := range []string{"../../docs/results/2026-11-27.json", "../../docs/results/2026-12-07.json"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"date": "2026-12-07", "register": [{"measured": "2026-12-07", "source": "x", "result": {"series_step_s": 1, "series": [{"t_s": 0, "registered": 1, "p50_ms": 1}]}}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := Load(bytes.NewReader(in))
		if err != nil {
			if r != nil {
				t.Fatalf("results and an error: %v", err)
			}
			return
		}
		if r.check() != nil {
			t.Fatal("Load returned results that fail their check")
		}
	})
}

// TestDrawEdgeCases: results that load but are odd (all zero, one point,
// huge or tiny figures, no latency anywhere) draw or fail with an error,
// never a crash or a non-XML file.
func TestDrawEdgeCases(t *testing.T) {
	tun := func(gbps, pps float64, sizes ...bench.SizePPS) *Results {
		return &Results{Date: "2026-12-07", Tunnel: []TunnelRun{{Impl: ImplImsec, Measured: "2026-12-07", Source: "x",
			Result: bench.TunnelResult{Mode: "netstack", Gbps: gbps, PPS: pps, PPSBySize: sizes}}}}
	}
	reg := func(step float64, pts ...bench.RegisterPoint) *Results {
		return &Results{Date: "2026-12-07", Register: []RegisterRun{{Measured: "2026-12-07", Source: "x",
			Result: bench.RegisterResult{SeriesStepS: step, Series: pts}}}}
	}
	for i, c := range []struct {
		r     *Results
		chart string
	}{
		{tun(0, 0), ChartTunnel},
		{tun(1e300, 1e300), ChartTunnel},
		{tun(1e-300, 5e-324), ChartTunnel},
		{tun(1, 1, bench.SizePPS{Size: 64}), ChartSizes},
		{tun(1, 1, bench.SizePPS{Size: 1 << 40, PPS: 1e300}, bench.SizePPS{Size: 1, PPS: 1e-300}), ChartSizes},
		{reg(1, bench.RegisterPoint{}), ChartRegister},
		{reg(1e-9, bench.RegisterPoint{T: 1e300, Registered: 1, RegPerS: 1e300, P50ms: 1e300, P95ms: 1e300, P99ms: 1e300}), ChartRegister},
		{reg(1, bench.RegisterPoint{Registered: 1, P50ms: 5e-324, P95ms: 1, P99ms: 1e308}), ChartRegister},
	} {
		var b bytes.Buffer
		if err := Draw(&b, c.r, c.chart); err != nil {
			t.Logf("case %d (%s): %v", i, c.chart, err)
			continue
		}
		svgTexts(t, b.Bytes())
	}
}
