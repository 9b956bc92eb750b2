package observe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ListenAddr turns a --metrics value into a TCP address: a bare port
// ("9090") or ":PORT" means loopback (127.0.0.1:PORT); HOST:PORT is taken
// as given, so that a non-loopback address is bound only when named.
func ListenAddr(v string) (string, error) {
	if v == "" {
		return "", errors.New("empty address")
	}
	if _, err := strconv.ParseUint(v, 10, 16); err == nil {
		v = ":" + v
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", fmt.Errorf("%q: want PORT, :PORT or HOST:PORT", v)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("%q: port %q is not a number from 0 to 65535", v, port)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// Config configures the HTTP listener of the metrics and status API.
type Config struct {
	// Addr is where to listen, as ListenAddr gives it (required).
	Addr string
	// Registry is what /metrics serves (required).
	Registry *prometheus.Registry
	// Status, if set, makes the value GET /status returns as JSON.
	Status func() any
	// PProf serves Go's profiles under /debug/pprof/ (CPU, heap,
	// goroutines, ...): off unless asked, as they cost CPU and show
	// internals.
	PProf  bool
	Logger *slog.Logger // errors of the HTTP server; nil: discard
}

// Server serves /metrics, /status and, with Config.PProf, /debug/pprof/.
// Start binds it; Close stops it and waits for its goroutine.
type Server struct {
	ln   net.Listener
	http *http.Server
	wg   sync.WaitGroup
}

// Start binds cfg.Addr and serves until Close or the end of ctx.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Registry == nil {
		return nil, errors.New("observe: no registry")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelError), Registry: cfg.Registry}))
	if cfg.Status != nil {
		mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(cfg.Status()); err != nil {
				cfg.Logger.Debug("observe: writing /status", "err", err)
			}
		})
	}
	if cfg.PProf {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "imsec: /metrics (Prometheus), /status (JSON)")
		if cfg.PProf {
			fmt.Fprintln(w, "/debug/pprof/ (Go profiles)")
		}
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, http: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}}
	stop := context.AfterFunc(ctx, func() { s.http.Close() })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer stop()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("observe: HTTP server stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() netip.AddrPort {
	return s.ln.Addr().(*net.TCPAddr).AddrPort()
}

// Loopback tells whether the listener is reachable from this host only.
func (s *Server) Loopback() bool { return s.Addr().Addr().Unmap().IsLoopback() }

// Describe is the line a command prints on start: where it listens and
// who can reach it.
func (s *Server) Describe(pprofOn bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "metrics on http://%v/metrics, status on /status", s.Addr())
	if pprofOn {
		b.WriteString(", profiles on /debug/pprof/")
	}
	if s.Loopback() {
		b.WriteString(" (loopback only)")
	} else {
		b.WriteString(" (NOT loopback: reachable from other hosts)")
	}
	return b.String()
}

// Close stops serving and waits for the server's goroutine.
func (s *Server) Close() error {
	err := s.http.Close()
	s.wg.Wait()
	return err
}
