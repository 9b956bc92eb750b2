// Package chart draws imsec's benchmark results as SVG with
// gonum.org/v1/plot: the tunnel's throughput per mode and algorithm beside
// wireguard-go's (`imsec bench tunnel`, bench/compare.sh), packets/s by
// packet size (`bench tunnel --sizes`), and a registration run's rate and
// latency over time (`imsec bench register`, RegisterResult.Series).
//
// The figures come from the bench commands' --json results, alone or
// gathered in a dated results file (Results: docs/results/DATE.json), from
// which `make charts` redraws the README's charts without measuring again.
package chart

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/imsec/imsec/bench"
)

// Results is a dated results file: the runs one chart or several draw,
// each with where its figures come from.
type Results struct {
	// Date is when the file was put together, YYYY-MM-DD (each run has
	// its own Measured date).
	Date    string `json:"date"`
	Machine string `json:"machine"` // what the figures were measured on
	Note    string `json:"note,omitempty"`

	Tunnel   []TunnelRun   `json:"tunnel,omitempty"`
	Register []RegisterRun `json:"register,omitempty"`
}

// TunnelRun is one tunnel measurement: `imsec bench tunnel --json` or
// `go run ./bench/wgcompare --json` (or the medians of compare.sh's rounds).
type TunnelRun struct {
	Impl     string `json:"impl"`              // ImplImsec or ImplWireGuard
	Variant  string `json:"variant,omitempty"` // flags that set this run apart, e.g. "--batch-pad -1"
	Measured string `json:"measured"`          // YYYY-MM-DD
	// Source is the command that made the figures, or the document they
	// were taken from.
	Source string             `json:"source"`
	Result bench.TunnelResult `json:"result"`
}

// RegisterRun is one `imsec bench register --json` result.
type RegisterRun struct {
	Measured string               `json:"measured"`
	Source   string               `json:"source"`
	Result   bench.RegisterResult `json:"result"`
}

// TunnelRun.Impl values.
const (
	ImplImsec     = "imsec"
	ImplWireGuard = "wireguard-go"
)

// Chart names, for Draw.
const (
	ChartTunnel   = "tunnel"   // Gbit/s and small packets/s per mode and algorithm, imsec beside wireguard-go
	ChartSizes    = "sizes"    // packets/s by packet size
	ChartRegister = "register" // registrations/s and latency over time
)

// Charts lists the chart names Draw knows.
var Charts = []string{ChartTunnel, ChartSizes, ChartRegister}

var dateRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)

// Load reads and checks a results file.
func Load(r io.Reader) (*Results, error) {
	b, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("the results file is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var res Results
	if err := dec.Decode(&res); err != nil {
		return nil, fmt.Errorf("not a results file: %w", jsonPos(b, err))
	}
	if dec.More() {
		return nil, errors.New("not a results file: more than one JSON value")
	}
	if err := res.check(); err != nil {
		return nil, err
	}
	return &res, nil
}

// jsonPos adds the line of a JSON syntax error.
func jsonPos(b []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("line %d: %w", 1+bytes.Count(b[:min(int(se.Offset), len(b))], []byte("\n")), err)
	}
	return err
}

func (r *Results) check() error {
	if !dateRE.MatchString(r.Date) {
		return fmt.Errorf("results file: date %q: want YYYY-MM-DD", r.Date)
	}
	if len(r.Tunnel) == 0 && len(r.Register) == 0 {
		return errors.New("results file: no tunnel or register results")
	}
	for i, t := range r.Tunnel {
		where := fmt.Sprintf("results file: tunnel[%d]", i)
		if t.Impl != ImplImsec && t.Impl != ImplWireGuard {
			return fmt.Errorf("%s: impl %q: want %s or %s", where, t.Impl, ImplImsec, ImplWireGuard)
		}
		if err := checkRun(where, t.Measured, t.Source); err != nil {
			return err
		}
		tr := t.Result
		if tr.Mode == "" {
			return fmt.Errorf("%s: no mode", where)
		}
		if tr.Gbps < 0 || tr.PPS < 0 {
			return fmt.Errorf("%s: negative figures", where)
		}
		for _, s := range tr.PPSBySize {
			if s.Size <= 0 || s.PPS < 0 {
				return fmt.Errorf("%s: packets/s by size: size %d, %v packets/s", where, s.Size, s.PPS)
			}
		}
	}
	for i, g := range r.Register {
		where := fmt.Sprintf("results file: register[%d]", i)
		if err := checkRun(where, g.Measured, g.Source); err != nil {
			return err
		}
		if len(g.Result.Series) > bench.MaxSeriesPoints {
			return fmt.Errorf("%s: a series of %d points: bench register writes at most %d", where, len(g.Result.Series), bench.MaxSeriesPoints)
		}
		if len(g.Result.Series) > 0 && !(g.Result.SeriesStepS > 0) {
			return fmt.Errorf("%s: a series needs series_step_s > 0", where)
		}
		for _, p := range g.Result.Series {
			if p.T < 0 || p.Registered < 0 || p.Failed < 0 || p.P50ms < 0 || p.P95ms < 0 || p.P99ms < 0 {
				return fmt.Errorf("%s: negative figures in the series at t=%v", where, p.T)
			}
		}
	}
	return nil
}

func checkRun(where, measured, source string) error {
	if !dateRE.MatchString(measured) {
		return fmt.Errorf("%s: measured %q: want YYYY-MM-DD", where, measured)
	}
	if strings.TrimSpace(source) == "" {
		return fmt.Errorf("%s: no source (the command, or where the figures come from)", where)
	}
	return nil
}

// Draw writes the chart named name (one of Charts) of r to w as SVG.
func Draw(w io.Writer, r *Results, name string) error {
	var panels []*plot.Plot
	var err error
	switch name {
	case ChartTunnel:
		panels, err = tunnelPanels(r.Tunnel)
	case ChartSizes:
		var p *plot.Plot
		p, err = sizesPanel(r.Tunnel)
		panels = []*plot.Plot{p}
	case ChartRegister:
		if len(r.Register) == 0 {
			return errors.New("chart register: the results hold no register run")
		}
		panels, err = registerPanels(r.Register[len(r.Register)-1])
	default:
		return fmt.Errorf("chart %q: want one of %s", name, strings.Join(Charts, ", "))
	}
	if err != nil {
		return err
	}
	return render(w, panels)
}

// TunnelSVG draws one `bench tunnel` run: its throughput and, when it
// measured them, its packets/s by size.
func TunnelSVG(w io.Writer, run TunnelRun) error {
	panels, err := tunnelPanels([]TunnelRun{run})
	if err != nil {
		return err
	}
	if len(run.Result.PPSBySize) > 0 {
		p, err := sizesPanel([]TunnelRun{run})
		if err != nil {
			return err
		}
		panels = append(panels, p)
	}
	return render(w, panels)
}

// RegisterSVG draws one `bench register` run over time.
func RegisterSVG(w io.Writer, run RegisterRun) error {
	panels, err := registerPanels(run)
	if err != nil {
		return err
	}
	return render(w, panels)
}

// ---- the charts ----

var (
	colImsec = color.RGBA{0x1f, 0x77, 0xb4, 0xff}
	colWG    = color.RGBA{0xff, 0x7f, 0x0e, 0xff}
	colFail  = color.RGBA{0xd6, 0x27, 0x28, 0xff}
	palette  = []color.Color{colImsec, colWG, color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, colFail,
		color.RGBA{0x94, 0x67, 0xbd, 0xff}, color.RGBA{0x8c, 0x56, 0x4b, 0xff}, color.RGBA{0x7f, 0x7f, 0x7f, 0xff}}
)

// runLabel names an imsec run on an axis: mode, algorithms, variant.
func runLabel(t TunnelRun) string {
	algs := t.Result.EAlg
	if t.Result.Alg != "" && t.Result.Alg != "null" && t.Impl == ImplImsec {
		algs += " +\n" + t.Result.Alg
	}
	l := t.Result.Mode + "\n" + algs
	if t.Variant != "" {
		l += "\n" + t.Variant
	}
	return l
}

func measuredDates(runs []TunnelRun) string {
	var d []string
	for _, t := range runs {
		if !slices.Contains(d, t.Measured) {
			d = append(d, t.Measured)
		}
	}
	return strings.Join(d, ", ")
}

// tunnelPanels: Gbit/s, then small packets/s, one pair of bars per imsec
// run: the run and wireguard-go in the same mode (from the same results).
func tunnelPanels(runs []TunnelRun) ([]*plot.Plot, error) {
	var ours []TunnelRun
	wg := map[string]bench.TunnelResult{}
	for _, t := range runs {
		if t.Impl == ImplWireGuard {
			if _, ok := wg[t.Result.Mode]; !ok {
				wg[t.Result.Mode] = t.Result
			}
			continue
		}
		ours = append(ours, t)
	}
	if len(ours) == 0 {
		return nil, errors.New("chart tunnel: the results hold no imsec tunnel run")
	}
	labels := make([]string, len(ours))
	for i, t := range ours {
		labels[i] = runLabel(t)
	}
	mk := func(title, ylabel string, get func(bench.TunnelResult) float64, format string) (*plot.Plot, error) {
		p := newPlot(title, "", ylabel)
		var a, b plotter.Values
		haveWG := false
		for _, t := range ours {
			a = append(a, get(t.Result))
			w, ok := wg[t.Result.Mode]
			haveWG = haveWG || ok
			b = append(b, get(w)) // zero when that mode has no wireguard-go run
		}
		series := []struct {
			name string
			v    plotter.Values
			c    color.Color
		}{{ImplImsec, a, colImsec}}
		if haveWG {
			series = append(series, struct {
				name string
				v    plotter.Values
				c    color.Color
			}{ImplWireGuard, b, colWG})
		}
		width := vg.Points(22)
		for i, s := range series {
			bars, err := plotter.NewBarChart(s.v, width)
			if err != nil {
				return nil, err
			}
			bars.Color, bars.LineStyle.Width = s.c, 0
			bars.Offset = width * vg.Length(float64(i)-float64(len(series)-1)/2)
			p.Add(bars)
			p.Legend.Add(s.name, bars)
			lab, err := valueLabels(s.v, format, bars.Offset)
			if err != nil {
				return nil, err
			}
			p.Add(lab)
		}
		p.NominalX(labels...)
		p.Y.Min = 0
		p.Y.Max *= 1.25 // room for the labels and the legend
		return p, nil
	}
	g, err := mk(fmt.Sprintf("TCP stream through the tunnel (measured %s)", measuredDates(runs)), "Gbit/s",
		func(r bench.TunnelResult) float64 { return r.Gbps }, "%.2f")
	if err != nil {
		return nil, err
	}
	pps, err := mk(fmt.Sprintf("Small packets (%d-%d bytes), slower direction", bench.SmallMin, bench.SmallMax), "thousand packets/s",
		func(r bench.TunnelResult) float64 { return r.PPS / 1000 }, "%.0fk")
	if err != nil {
		return nil, err
	}
	return []*plot.Plot{g, pps}, nil
}

// valueLabels writes each bar's value above it.
func valueLabels(v plotter.Values, format string, off vg.Length) (*plotter.Labels, error) {
	xy := make(plotter.XYs, len(v))
	txt := make([]string, len(v))
	for i, y := range v {
		xy[i] = plotter.XY{X: float64(i), Y: y}
		if y > 0 {
			txt[i] = fmt.Sprintf(format, y)
		}
	}
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xy, Labels: txt})
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].Font.Size = vg.Points(8)
		l.TextStyle[i].Font.Variant = "Sans"
		l.TextStyle[i].XAlign = text.XCenter
	}
	l.Offset = vg.Point{X: off, Y: vg.Points(2)}
	return l, nil
}

// sizesPanel: packets/s against packet size, one line per run that
// measured them.
func sizesPanel(runs []TunnelRun) (*plot.Plot, error) {
	var with []TunnelRun
	for _, t := range runs {
		if len(t.Result.PPSBySize) > 0 {
			with = append(with, t)
		}
	}
	if len(with) == 0 {
		return nil, errors.New("chart sizes: no tunnel run in the results measured packets/s by size (bench tunnel --sizes)")
	}
	p := newPlot(fmt.Sprintf("Packets/s by inner packet size, slower direction (measured %s)", measuredDates(with)),
		"inner IP packet size, bytes", "thousand packets/s")
	// wireguard-go orange and dashed, imsec's runs blue, then the others.
	others := []color.Color{colImsec, palette[2], palette[4], palette[5], palette[6], palette[3]}
	n := 0
	for _, t := range with {
		xy := make(plotter.XYs, len(t.Result.PPSBySize))
		for j, s := range t.Result.PPSBySize {
			xy[j] = plotter.XY{X: float64(s.Size), Y: s.PPS / 1000}
		}
		l, pts, err := plotter.NewLinePoints(xy)
		if err != nil {
			return nil, err
		}
		var c color.Color = colWG
		if t.Impl == ImplImsec {
			c = others[n%len(others)]
			n++
		}
		l.Color, pts.Color = c, c
		l.Width = vg.Points(1.5)
		if t.Impl == ImplWireGuard {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(l, pts)
		name := t.Impl + " " + t.Result.Mode
		if t.Impl == ImplImsec {
			name += " " + strings.ReplaceAll(runLabel(t)[len(t.Result.Mode)+1:], "\n", " ")
		}
		p.Legend.Add(name, l, pts)
	}
	p.Y.Min = 0
	p.Y.Max *= 1.2 + 0.12*float64(len(with)) // room for the legend
	return p, nil
}

// registerPanels: registrations (and failures) per second, then the
// latency percentiles of what ended in each step (log scale).
func registerPanels(run RegisterRun) ([]*plot.Plot, error) {
	r := run.Result
	if len(r.Series) == 0 {
		return nil, errors.New("chart register: the run has no time series (series: made by bench register since it keeps one)")
	}
	step := r.SeriesStepS
	failed := 0
	for _, n := range r.Failed {
		failed += n
	}
	rate := newPlot(fmt.Sprintf("bench register, measured %s\n%d UEs: %d registered, %d failed", run.Measured, r.UEs, r.Registered, failed),
		"", "per second")
	var reg, fail plotter.XYs
	// Each point sits in the middle of its step.
	for _, p := range r.Series {
		reg = append(reg, plotter.XY{X: p.T + step/2, Y: p.RegPerS})
		fail = append(fail, plotter.XY{X: p.T + step/2, Y: float64(p.Failed) / step})
	}
	if err := addLine(rate, "registrations/s", reg, colImsec, false); err != nil {
		return nil, err
	}
	if failed > 0 {
		if err := addLine(rate, "failures/s", fail, colFail, false); err != nil {
			return nil, err
		}
	}
	rate.Y.Min = 0
	rate.Y.Max *= 1.3 // room for the legend
	rate.X.Min = 0
	panels := []*plot.Plot{rate}

	lat := newPlot(fmt.Sprintf("Registration latency of those ending in each %gs step", step),
		"seconds since the first UE started", "ms (log scale)")
	any := false
	for i, q := range []struct {
		name string
		get  func(bench.RegisterPoint) float64
	}{
		{"p50", func(p bench.RegisterPoint) float64 { return p.P50ms }},
		{"p95", func(p bench.RegisterPoint) float64 { return p.P95ms }},
		{"p99", func(p bench.RegisterPoint) float64 { return p.P99ms }},
	} {
		var xy plotter.XYs
		for _, p := range r.Series {
			if v := q.get(p); p.Registered > 0 && v > 0 {
				xy = append(xy, plotter.XY{X: p.T + step/2, Y: v})
			}
		}
		if len(xy) == 0 {
			continue
		}
		any = true
		if err := addLine(lat, q.name, xy, palette[[]int{2, 1, 3}[i]], true); err != nil {
			return nil, err
		}
	}
	if any {
		lat.Y.Scale = plot.LogScale{}
		lat.Y.Tick.Marker = ticks125{}
		lat.Y.Max *= 4 // room for the legend (log scale)
		lat.X.Min = 0
		rate.X.Max = max(rate.X.Max, lat.X.Max)
		lat.X.Max = rate.X.Max
		panels = append(panels, lat)
	}
	panels[len(panels)-1].X.Label.Text = "seconds since the first UE started"
	return panels, nil
}

// ticks125 marks a log axis at 1, 2 and 5 times the powers of ten, with
// labels, and 3..9 without.
type ticks125 struct{}

func (ticks125) Ticks(lo, hi float64) []plot.Tick {
	if !(lo > 0) || !(hi > lo) {
		return nil
	}
	var t []plot.Tick
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)) && len(t) < 200; e++ {
		for m := 1; m <= 9; m++ {
			v := float64(m) * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			tk := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				tk.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			t = append(t, tk)
		}
	}
	return t
}

func addLine(p *plot.Plot, name string, xy plotter.XYs, c color.Color, points bool) error {
	l, err := plotter.NewLine(xy)
	if err != nil {
		return err
	}
	l.Color, l.Width = c, vg.Points(1.5)
	if points {
		s, err := plotter.NewScatter(xy)
		if err != nil {
			return err
		}
		s.Color, s.Radius = c, vg.Points(1.5)
		p.Add(l, s)
		p.Legend.Add(name, l, s)
		return nil
	}
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// newPlot is a plot in sans-serif type with its legend at the top right.
func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	for _, st := range []*text.Style{&p.Title.TextStyle, &p.X.Label.TextStyle, &p.Y.Label.TextStyle,
		&p.X.Tick.Label, &p.Y.Tick.Label, &p.Legend.TextStyle} {
		st.Font.Variant = "Sans"
	}
	p.Title.TextStyle.Font.Size = vg.Points(12)
	p.X.Tick.Label.Font.Size = vg.Points(9)
	p.Y.Tick.Label.Font.Size = vg.Points(9)
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Legend.Padding = vg.Points(2)
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(6), -vg.Points(4)
	p.Legend.ThumbnailWidth = vg.Points(14)
	p.Add(plotter.NewGrid())
	return p
}

// width and height of one panel.
const (
	panelW = 18 * vg.Centimeter
	panelH = 9 * vg.Centimeter
)

// render stacks the panels in one SVG, aligned on their axes.
func render(w io.Writer, panels []*plot.Plot) error {
	for _, p := range panels {
		if p == nil {
			return errors.New("chart: nothing to draw")
		}
		for _, v := range []float64{p.X.Min, p.X.Max, p.Y.Min, p.Y.Max} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return errors.New("chart: the figures do not make finite axes")
			}
		}
	}
	c := vgsvg.New(panelW, panelH*vg.Length(len(panels)))
	dc := draw.New(c)
	rows := make([][]*plot.Plot, len(panels))
	for i, p := range panels {
		rows[i] = []*plot.Plot{p}
	}
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadX: vg.Millimeter * 3, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 3, PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	cs := plot.Align(rows, tiles, dc)
	for i, p := range panels {
		p.Draw(cs[i][0])
	}
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return err
	}
	// The fonts are not embedded (that would add hundreds of KiB a chart):
	// where Liberation Sans is missing, Arial has the same metrics.
	out := bytes.ReplaceAll(b.Bytes(), []byte("font-family:Liberation Sans;"), []byte("font-family:'Liberation Sans',Arial,Helvetica,sans-serif;"))
	_, err := w.Write(out)
	return err
}
