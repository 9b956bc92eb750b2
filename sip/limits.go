package sip

import (
	"net/netip"
	"time"

	"github.com/imsec/imsec/sip/internal/connlimit"
	"golang.org/x/time/rate"
)

// Limits protect legitimate UEs while the unprotected port is flooded.
// Every unauthenticated REGISTER costs the P-CSCF a parse, an HSS lookup,
// perhaps a vector and an SA set; these limits bound what one source, and
// what strangers to one IMPI, can make it spend. The zero value is the
// documented defaults, which a real UE never reaches; Off turns every limit
// off (a load test where one host plays many UEs).
type Limits struct {
	Off bool
	// SourceRate and SourceBurst are a token bucket per source IP address
	// over unprotected REGISTERs, checked before any other work; past it
	// the answer is 503 with Retry-After. Default DefaultSourceRate and
	// DefaultSourceBurst. A UE sends two REGISTERs per registration (three
	// with a resynchronisation); a carrier-grade NAT puts many UEs behind
	// one address, which is what the default's headroom is for.
	SourceRate  float64
	SourceBurst int
	// PendingPerIMPI bounds the unanswered challenges of one IMPI. They are
	// kept per source address and Call-ID, at most PendingPerSource for one
	// source address, so that a stranger cannot replace the real UE's:
	// past a bound, the oldest unproven challenge of the source that holds
	// the most goes, never one whose SA set has carried the UE's packets.
	// Defaults DefaultPendingPerIMPI and DefaultPendingPerSource.
	PendingPerIMPI   int
	PendingPerSource int
	// TempSetsPerSource bounds the temporary SA sets that one source IP
	// address holds, so that one source cannot take the global cap
	// (ServerConfig.MaxTempSets). Default DefaultTempSetsPerSource.
	TempSetsPerSource int
	// RegisterRate, if positive, is a ceiling on new registrations per
	// second, all sources together: past it, an unprotected REGISTER that
	// would draw a challenge gets 503 with Retry-After (overload.go). Set
	// it a little under what 'imsec bench register' measures for the
	// machine. RegisterBurst is its bucket (default: one second's worth).
	RegisterRate  float64
	RegisterBurst int
	// MaxInFlight sheds new registrations the same way while this many
	// REGISTER handlers are running (the CPU or the HSS is behind).
	// Default DefaultMaxInFlight. Off leaves both on: they protect the
	// process, not fairness.
	MaxInFlight int
	// TCP bounds the unprotected TCP listener: connections in all and per
	// source, and how long a connection may idle or take over one message
	// header (a slowloris). Its zero value is connlimit's defaults; Off
	// lifts the per-source cap (the total and the timeouts stay: they
	// protect the process, not fairness).
	TCP connlimit.Config
}

// Defaults of Limits.
const (
	DefaultSourceRate        = 20 // REGISTERs per second per source address
	DefaultSourceBurst       = 60
	DefaultPendingPerIMPI    = 16
	DefaultPendingPerSource  = 2
	DefaultTempSetsPerSource = 64
	// maxTrackedSources bounds the token buckets kept; past it, idle ones
	// and then about half of the rest are forgotten (they start full again).
	maxTrackedSources = 65536
	// sourceIdle is how long a bucket is kept after its last use.
	sourceIdle = time.Minute
	// retryAfter is the Retry-After of a 503 for a limit.
	retryAfter = "5"
)

func (l *Limits) fill() error {
	if l.SourceRate == 0 {
		l.SourceRate = DefaultSourceRate
	}
	if l.SourceBurst == 0 {
		l.SourceBurst = DefaultSourceBurst
	}
	if l.PendingPerIMPI == 0 {
		l.PendingPerIMPI = DefaultPendingPerIMPI
	}
	if l.PendingPerSource == 0 {
		l.PendingPerSource = DefaultPendingPerSource
	}
	if l.TempSetsPerSource == 0 {
		l.TempSetsPerSource = DefaultTempSetsPerSource
	}
	if l.MaxInFlight == 0 {
		l.MaxInFlight = DefaultMaxInFlight
	}
	if l.RegisterBurst == 0 {
		l.RegisterBurst = max(1, int(l.RegisterRate))
	}
	if l.RegisterRate < 0 || l.RegisterBurst < 1 || l.MaxInFlight < 1 {
		return configErrorf("limits %+v: the registration ceiling, its burst and the handlers in flight must be positive", *l)
	}
	if l.SourceRate < 0 || l.SourceBurst < 1 || l.PendingPerIMPI < 1 || l.PendingPerSource < 1 || l.TempSetsPerSource < 1 {
		return configErrorf("limits %+v: rates and sizes must be positive", *l)
	}
	return nil
}

// sourceLimits holds the per-source token buckets and temporary-set
// counts. Guarded by Server.mu.
type sourceLimits struct {
	cfg     Limits
	buckets map[netip.Addr]*sourceBucket
	temps   map[netip.Addr]int // temporary SA sets per source address
}

type sourceBucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newSourceLimits(cfg Limits) *sourceLimits {
	return &sourceLimits{cfg: cfg, buckets: map[netip.Addr]*sourceBucket{}, temps: map[netip.Addr]int{}}
}

// allow takes a token for src at now; false when its bucket is empty.
func (l *sourceLimits) allow(src netip.Addr, now time.Time) bool {
	if l.cfg.Off {
		return true
	}
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= maxTrackedSources {
			l.sweep(now, true)
		}
		b = &sourceBucket{lim: rate.NewLimiter(rate.Limit(l.cfg.SourceRate), l.cfg.SourceBurst)}
		l.buckets[src] = b
	}
	b.last = now
	return b.lim.AllowN(now, 1)
}

// tempOK tells whether src may hold one more temporary SA set.
func (l *sourceLimits) tempOK(src netip.Addr) bool {
	return l.cfg.Off || l.temps[src] < l.cfg.TempSetsPerSource
}

// addTemp counts a temporary set of src in (+1) or out (-1).
func (l *sourceLimits) addTemp(src netip.Addr, d int) {
	n := l.temps[src] + d
	if n <= 0 {
		delete(l.temps, src)
		return
	}
	l.temps[src] = n
}

// sweep forgets buckets idle for sourceIdle (all but the newest half when
// full is set: the table is at its bound).
func (l *sourceLimits) sweep(now time.Time, full bool) {
	for a, b := range l.buckets {
		if now.Sub(b.last) > sourceIdle || (full && len(l.buckets) > maxTrackedSources/2) {
			delete(l.buckets, a)
		}
	}
}
