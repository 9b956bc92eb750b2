package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/imsec/imsec/observe"
	"github.com/imsec/imsec/sip"
)

// obsFlags are the monitoring flags of the long-running commands (pcscf,
// ue, hss, tunnel): the metrics and status listener, profiles, and the
// structured log.
type obsFlags struct {
	metrics, logFormat, logLevel *string
	pprof                        *bool

	addr  string     // metrics, checked
	level slog.Level // logLevel, checked
}

func addObsFlags(fs *flag.FlagSet) *obsFlags {
	return &obsFlags{
		metrics: fs.String("metrics", "", "serve Prometheus /metrics and the JSON /status on this `ADDR`: PORT or :PORT binds 127.0.0.1, "+
			"HOST:PORT that address (another host's scraper needs a non-loopback one); off when empty ('imsec status --addr' reads /status)"),
		pprof:     fs.Bool("pprof", false, "also serve Go's profiles on the --metrics listener under /debug/pprof/ (CPU, heap, goroutines)"),
		logFormat: fs.String("log-format", "text", "log format on stderr: text (key=value) or json (one object per line)"),
		logLevel: fs.String("log-level", "warn", "least severe log level shown: debug, info (adds one line per registration and call step, "+
			"the ladder's events), warn or error; -v means debug"),
	}
}

// check validates the flags (usage errors).
func (o *obsFlags) check(verbose bool) error {
	if *o.metrics != "" {
		a, err := observe.ListenAddr(*o.metrics)
		if err != nil {
			return usageErrorf("--metrics %v", err)
		}
		o.addr = a
	} else if *o.pprof {
		return usageErrorf("--pprof needs --metrics ADDR (the profiles are served on that listener)")
	}
	if *o.logFormat != "text" && *o.logFormat != "json" {
		return usageErrorf("--log-format %q: want text or json", *o.logFormat)
	}
	l, err := observe.ParseLevel(*o.logLevel)
	if err != nil {
		return usageErrorf("--log-level %q: want debug, info, warn or error", *o.logLevel)
	}
	o.level = l
	if verbose {
		o.level = slog.LevelDebug
	}
	return nil
}

// on tells whether metrics are asked for.
func (o *obsFlags) on() bool { return o.addr != "" }

// logger makes the command's logger on w (after check). Commands that run
// sipgo also give it to sipgo (setSIPGoLogger).
func (o *obsFlags) logger(w io.Writer) *slog.Logger {
	l, err := observe.NewLogger(w, *o.logFormat, o.level)
	if err != nil { // check accepted the format
		panic(err)
	}
	return l
}

// events is the ladder on stdout, plus the event counters when metrics
// are on (ev non-nil), plus the structured log when it takes info lines.
func (o *obsFlags) events(stdout io.Writer, log *slog.Logger, ev *observe.Events) sip.EventFunc {
	fns := []sip.EventFunc{sip.LadderPrinter(stdout)}
	if ev != nil {
		fns = append(fns, ev.Observe)
	}
	if log.Enabled(context.Background(), slog.LevelInfo) {
		fns = append(fns, observe.LogEvents(log))
	}
	return observe.Tee(fns...)
}

// newRegistry is a registry with the Go runtime's and the process's
// standard collectors (go_*, process_*) and the given ones.
func newRegistry(cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	cs = append([]prometheus.Collector{collectors.NewGoCollector(), collectors.NewBuildInfoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}, cs...)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// serve starts the listener (when --metrics is set) and says where it
// listens; the returned function stops it.
func (o *obsFlags) serve(ctx context.Context, stdout io.Writer, log *slog.Logger, reg *prometheus.Registry, status func() any) (func(), error) {
	if !o.on() {
		return func() {}, nil
	}
	s, err := observe.Start(ctx, observe.Config{Addr: o.addr, Registry: reg, Status: status, PProf: *o.pprof, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", o.addr, err)
	}
	fmt.Fprintln(stdout, s.Describe(*o.pprof))
	return func() { s.Close() }, nil
}
