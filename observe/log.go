package observe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/imsec/imsec/sip"
)

// ParseLevel parses a --log-level value: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
}

// NewLogger makes the process's logger on w: format "text" (logfmt-like
// key=value lines) or "json" (one JSON object per line), at level and
// above.
func NewLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// LogEvents returns an EventFunc that logs each sip event at info (a
// refusal or failure at warn): the machine view of what the ladder shows a
// person. Events carry no key material (a SQN at most), so neither does
// the log.
func LogEvents(l *slog.Logger) sip.EventFunc {
	return func(e sip.Event) {
		level := slog.LevelInfo
		if _, failed := failureCauses[e.Kind]; failed || e.Kind == sip.EvCallFailed {
			level = slog.LevelWarn
		}
		attrs := []slog.Attr{slog.String("event", e.Kind.String()), slog.String("from", e.From)}
		if e.To != "" {
			attrs = append(attrs, slog.String("to", e.To))
		}
		if e.Detail != "" {
			attrs = append(attrs, slog.String("detail", e.Detail))
		}
		if e.Addr.IsValid() {
			attrs = append(attrs, slog.String("addr", e.Addr.String()))
		}
		if e.Transport != "" {
			attrs = append(attrs, slog.String("transport", e.Transport))
		}
		if e.NAT {
			attrs = append(attrs, slog.Bool("nat", true))
		}
		l.LogAttrs(context.Background(), level, e.What, attrs...)
	}
}
