package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// svgTextsOf parses the SVG file at path as XML, failing the test if it
// is not, and returns its text elements joined by newlines.
func svgTextsOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	var texts []string
	in := false
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not XML: %v", path, err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			if in = e.Name.Local == "text"; in {
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
	if len(texts) == 0 {
		t.Fatalf("%s has no text", path)
	}
	return "\n" + strings.Join(texts, "\n") + "\n"
}

// TestBenchChartCommand: imsec bench chart draws each chart of the
// committed results files (what make charts runs).
func TestBenchChartCommand(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ data, chart, want string }{
		{"2026-11-27.json", "tunnel", "TCP stream through the tunnel (measured 2026-11-27)"},
		{"2026-12-07.json", "sizes", "wireguard-go netstack"},
		{"2026-12-07.json", "register", "registrations/s"},
	} {
		out := filepath.Join(dir, c.chart+".svg")
		code, _, errs := runCLI(t, "bench", "chart", "--data", filepath.Join("..", "..", "docs", "results", c.data), "--chart", c.chart, "--svg", out)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", c.chart, code, errs)
		}
		if texts := svgTextsOf(t, out); !strings.Contains(texts, "\n"+c.want+"\n") {
			t.Errorf("%s chart lacks %q: %s", c.chart, c.want, texts)
		}
	}
}

// TestBenchChartErrors: a missing, empty or broken data file, an unknown
// chart, a chart the data cannot make and an --svg that cannot be
// written each fail with a message naming the problem, and leave no
// --svg file behind.
func TestBenchChartErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty, bad := write("empty.json", ""), write("bad.json", "{\"date\": ")
	tunnelOnly := filepath.Join("..", "..", "docs", "results", "2026-11-27.json")
	out := filepath.Join(dir, "out.svg")
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--data", filepath.Join(dir, "none.json"), "--chart", "tunnel", "--svg", out}, 1, "no such file"},
		{[]string{"--data", empty, "--chart", "tunnel", "--svg", out}, 1, "empty"},
		{[]string{"--data", bad, "--chart", "tunnel", "--svg", out}, 1, "not a results file"},
		{[]string{"--data", tunnelOnly, "--chart", "register", "--svg", out}, 1, "no register run"},
		{[]string{"--data", tunnelOnly, "--chart", "pie", "--svg", out}, 2, "--chart"},
		{[]string{"--data", tunnelOnly, "--chart", "tunnel"}, 2, "--svg"},
		{[]string{"--data", tunnelOnly, "--chart", "tunnel", "--svg", filepath.Join(dir, "no", "such", "dir", "x.svg")}, 1, "--svg"},
	} {
		code, _, errs := runCLI(t, append([]string{"bench", "chart"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q; want exit %d saying %q", c.args, code, errs, c.code, c.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%v: left %s behind", c.args, out)
			os.Remove(out)
		}
	}
}

// TestBenchTunnelSVG: bench tunnel --svg draws the run, packets/s by size
// included; a --svg that cannot be created fails before the benchmark.
func TestBenchTunnelSVG(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tunnel.svg")
	code, _, errs := runCLI(t, "bench", "tunnel", "--duration", "400ms", "--sizes", "64,1400", "--size-duration", "200ms", "--svg", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	texts := svgTextsOf(t, out)
	for _, want := range []string{"imsec", "Gbit/s", "imsec netstack aes-cbc + hmac-sha-1-96", "inner IP packet size, bytes"} {
		if !strings.Contains(texts, "\n"+want+"\n") {
			t.Errorf("chart lacks %q: %s", want, texts)
		}
	}
	code, _, errs = runCLI(t, "bench", "tunnel", "--duration", "10m", "--svg", filepath.Join(t.TempDir(), "no", "x.svg"))
	if code != 1 || !strings.Contains(errs, "--svg") {
		t.Errorf("bad --svg: exit %d, %q", code, errs)
	}
	code, _, errs = runCLI(t, "bench", "tunnel", "--sizes", "64,big")
	if code != 2 || !strings.Contains(errs, "--sizes") {
		t.Errorf("bad --sizes: exit %d, %q", code, errs)
	}
}

// TestBenchRegisterSVG: bench register --svg draws the run's series.
func TestBenchRegisterSVG(t *testing.T) {
	t.Setenv(asCLI, "1")
	out := filepath.Join(t.TempDir(), "register.svg")
	code, _, errs := runCLI(t, "bench", "register", "--ues", "20", "--rate", "200", "--per-worker", "20", "--svg", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	texts := svgTextsOf(t, out)
	for _, want := range []string{"registrations/s", "p50", "p99", "seconds since the first UE started"} {
		if !strings.Contains(texts, "\n"+want+"\n") {
			t.Errorf("chart lacks %q: %s", want, texts)
		}
	}
	if !strings.Contains(texts, "\n20 UEs: 20 registered, 0 failed\n") {
		t.Errorf("chart title: %s", texts)
	}
	code, _, errs = runCLI(t, "bench", "register", "--ues", "20", "--svg", filepath.Join(t.TempDir(), "no", "x.svg"))
	if code != 1 || !strings.Contains(errs, "--svg") {
		t.Errorf("bad --svg: exit %d, %q", code, errs)
	}
}

// TestDemoMermaidBadPath: --mermaid to a file that cannot be created
// fails at once, naming the flag. (The diagram's content is checked
// against a real run's events in sip/demo's TestDemo.)
func TestDemoMermaidBadPath(t *testing.T) {
	code, _, errs := runCLI(t, "demo", "--mermaid", filepath.Join(t.TempDir(), "no", "x.mmd"))
	if code != 1 || !strings.Contains(errs, "--mermaid") {
		t.Errorf("exit %d, %q", code, errs)
	}
}
