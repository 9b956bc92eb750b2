package connlimit

import "time"

// Off, as any negative value of a Config field, turns that limit off.
const Off = -1

// Defaults of the zero Config. doc.go says why each is one a real UE never
// reaches.
const (
	DefaultMaxConns      = 10000
	DefaultMaxPerSource  = 32
	DefaultIdleTimeout   = 10 * time.Minute
	DefaultHeaderTimeout = 32 * time.Second // 64*T1, RFC 3261 Timer B
)

// Config holds the limits of a Listener. A zero field takes its default; a
// negative one (Off) turns the limit off.
type Config struct {
	// MaxConns caps the connections open at once, over all sources.
	// Zero: DefaultMaxConns, or half the process's file limit if that is
	// lower (so that the listener refuses before the process runs out of
	// descriptors).
	MaxConns int

	// MaxPerSource caps the connections open at once from one source: one
	// IPv4 address, or one IPv6 /64 (a UE's prefix in 3GPP). Zero:
	// DefaultMaxPerSource.
	MaxPerSource int

	// IdleTimeout closes a connection that has delivered no byte for this
	// long. Zero: DefaultIdleTimeout.
	IdleTimeout time.Duration

	// HeaderTimeout closes a connection whose message header is not
	// complete (CRLF CRLF) this long after it started: from accept for the
	// first message, from its first byte for each later one. Zero:
	// DefaultHeaderTimeout.
	HeaderTimeout time.Duration

	// Now is the clock of the timeouts. Nil: time.Now. Timeouts fire on a
	// time.Ticker, so a test that wants no sleeping runs in a
	// testing/synctest bubble, where both are fake.
	Now func() time.Time
}

// withDefaults resolves zero fields. fdLimit is the process's file limit,
// 0 if unknown.
func (c Config) withDefaults(fdLimit uint64) Config {
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
		if fdLimit > 0 && fdLimit/2 < uint64(c.MaxConns) {
			c.MaxConns = max(int(fdLimit/2), 1)
		}
	}
	if c.MaxPerSource == 0 {
		c.MaxPerSource = DefaultMaxPerSource
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.HeaderTimeout == 0 {
		c.HeaderTimeout = DefaultHeaderTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Sweep interval bounds: a timeout fires at most one interval late.
const (
	minSweep = 10 * time.Millisecond
	maxSweep = time.Second
)

// sweepInterval is an eighth of the shortest timeout that is on, within
// [minSweep, maxSweep]; 0 if both timeouts are off.
func (c Config) sweepInterval() time.Duration {
	d := time.Duration(0)
	for _, t := range []time.Duration{c.IdleTimeout, c.HeaderTimeout} {
		if t > 0 && (d == 0 || t < d) {
			d = t
		}
	}
	if d == 0 {
		return 0
	}
	return min(max(d/8, minSweep), maxSweep)
}
