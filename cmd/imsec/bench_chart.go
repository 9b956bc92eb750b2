package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/imsec/imsec/bench/chart"
)

const benchChartSynopsis = `bench chart --data FILE --chart NAME --svg OUT

Draws a chart from a saved results file, without measuring anything: the
dated files in docs/results/ gather the bench commands' --json results
(each run with the date it was measured and its command or source), and
'make charts' redraws the README's images from them. Charts:

  tunnel    Gbit/s of the TCP stream and small packets/s, per mode and
            algorithm pair, imsec beside wireguard-go of the same mode
  sizes     packets/s by inner packet size (bench tunnel --sizes)
  register  registrations/s and latency percentiles over time (the last
            register run in the file)`

func runBenchChart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench chart", benchChartSynopsis, stdout)
	data := fs.String("data", "", "the results FILE (JSON, as docs/results/DATE.json) to draw from (required)")
	name := fs.String("chart", "", "which chart: "+strings.Join(chart.Charts, ", ")+" (required)")
	svg := fs.String("svg", "", "write the chart to this SVG `FILE` (required)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *data == "" || *svg == "" {
		return usageErrorf("--data and --svg are required")
	}
	if !slices.Contains(chart.Charts, *name) {
		return usageErrorf("--chart %q: want one of %s", *name, strings.Join(chart.Charts, ", "))
	}
	f, err := os.Open(*data)
	if err != nil {
		return fmt.Errorf("--data: %w", err)
	}
	res, err := chart.Load(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("--data %s: %w", *data, err)
	}
	out, err := newSVGOutput(*svg)
	if err != nil {
		return err
	}
	return out.finish(chart.Draw(&out.buf, res, *name))
}

// svgOutput is an --svg file: created before a run (a bad path fails at
// once, not after a long benchmark), written whole at the end, removed if
// the run or the chart failed.
type svgOutput struct {
	path string
	f    *os.File
	buf  bytes.Buffer
}

func newSVGOutput(path string) (*svgOutput, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--svg: %w", err)
	}
	return &svgOutput{path: path, f: f}, nil
}

// finish writes what was drawn into buf, or removes the file if err (the
// run's or the drawing's) is set; it returns err or the write's error.
func (o *svgOutput) finish(err error) error {
	if o == nil {
		return err
	}
	if err == nil {
		_, err = o.f.Write(o.buf.Bytes())
		if cerr := o.f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			err = fmt.Errorf("--svg: %w", err)
		}
	} else {
		o.f.Close()
	}
	if err != nil {
		os.Remove(o.path)
	}
	return err
}

// runSource describes a run for a chart: its command line and date (UTC).
func runSource(cmd string, args []string) (measured, source string) {
	return time.Now().UTC().Format(time.DateOnly), strings.TrimSpace("imsec " + cmd + " " + strings.Join(args, " "))
}
