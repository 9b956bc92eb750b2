package bench

import (
	"math"
	"slices"
	"time"
)

// The registration load's time series (RegisterResult.Series): what
// ended in each second of the registration phase, for `imsec bench
// register --svg`. Workers report when each registration ended
// (workerLine.EndMS, FailMS); the runner buckets them here. The series is
// bounded: a long run gets wider steps, never more than MaxSeriesPoints.

// MaxSeriesPoints is the most points RegisterResult.Series holds: a run
// longer than that many seconds gets steps of several seconds.
const MaxSeriesPoints = 600

// RegisterPoint is one step of the time series.
type RegisterPoint struct {
	// T is the step's start, in seconds after the first UE started.
	T float64 `json:"t_s"`
	// Registered and Failed count the registrations that ended in the
	// step; RegPerS is Registered per second of the step (the last step
	// ends at the last end: its rate is over that part, at least a tenth
	// of a step).
	Registered int     `json:"registered"`
	Failed     int     `json:"failed"`
	RegPerS    float64 `json:"reg_per_s"`
	// Latency percentiles of the registrations that ended in the step
	// (first REGISTER to the final 200), ms; 0 when none did.
	P50ms float64 `json:"p50_ms"`
	P95ms float64 `json:"p95_ms"`
	P99ms float64 `json:"p99_ms"`
	// MachineBusyCores and MachineStealPct are the whole machine's over
	// the step (RegisterResult's, per step; Linux), from the samples the
	// runner took every progressEvery: a run's average hides whether the
	// machine was saturated while it fell behind, since the tail of a run
	// that shed is mostly UEs waiting out their Retry-After.
	MachineBusyCores *float64 `json:"machine_busy_cores,omitempty"`
	MachineStealPct  *float64 `json:"machine_steal_pct,omitempty"`
}

// machineSample is the machine's CPU times at a moment of the run.
type machineSample struct {
	at time.Duration // since the runner's start
	t  cpuTimes
}

// machineSeries sets each point's machine figures from samples (in time
// order), over the samples that bracket the step most closely: the last
// at or before its start and the first at or after its end (or the last
// sample). A step the samples do not cover gets none.
func machineSeries(pts []RegisterPoint, stepS float64, samples []machineSample) {
	step := time.Duration(stepS * float64(time.Second))
	for i := range pts {
		from, to := time.Duration(i)*step, time.Duration(i+1)*step
		a := -1
		for j, s := range samples {
			if s.at <= from {
				a = j
			}
		}
		b := slices.IndexFunc(samples, func(s machineSample) bool { return s.at >= to })
		if b < 0 {
			b = len(samples) - 1
		}
		if a < 0 || b <= a {
			continue
		}
		pts[i].MachineBusyCores, pts[i].MachineStealPct = machineFigures(samples[a].t, samples[b].t, (samples[b].at - samples[a].at).Seconds())
	}
}

// regEnd is one UE's end of registration, for the series.
type regEnd struct {
	at     time.Duration // since the runner's start
	latUS  int64
	failed bool
}

// workerEnds converts a worker's final line to regEnds, its times taken
// relative to the runner's start.
func workerEnds(l *workerLine, start time.Time) []regEnd {
	off := time.Duration(l.BeginUS-start.UnixMicro()) * time.Microsecond
	if l.BeginUS == 0 {
		off = 0 // a worker of an older build: no times
	}
	out := make([]regEnd, 0, len(l.EndMS)+len(l.FailMS))
	for i, ms := range l.EndMS {
		if i < len(l.LatencyUS) {
			out = append(out, regEnd{at: off + time.Duration(ms)*time.Millisecond, latUS: l.LatencyUS[i]})
		}
	}
	for _, ms := range l.FailMS {
		out = append(out, regEnd{at: off + time.Duration(ms)*time.Millisecond, failed: true})
	}
	return out
}

// registerSeries buckets ends into steps of a whole number of seconds,
// one second unless that would make more than MaxSeriesPoints, from the
// runner's start to the last end. Nothing ended: no series.
func registerSeries(ends []regEnd) (stepS float64, pts []RegisterPoint) {
	if len(ends) == 0 {
		return 0, nil
	}
	var last time.Duration
	for _, e := range ends {
		last = max(last, e.at)
	}
	step := time.Second
	if n := int(last/step) + 1; n > MaxSeriesPoints {
		step = time.Duration(math.Ceil(float64(n)/MaxSeriesPoints)) * time.Second
	}
	n := int(last/step) + 1
	pts = make([]RegisterPoint, n)
	lats := make([][]int64, n)
	for _, e := range ends {
		i := min(int(max(e.at, 0)/step), n-1)
		if e.failed {
			pts[i].Failed++
			continue
		}
		pts[i].Registered++
		lats[i] = append(lats[i], e.latUS)
	}
	for i := range pts {
		p := &pts[i]
		p.T = (time.Duration(i) * step).Seconds()
		span := step
		if i == n-1 {
			span = max(last-time.Duration(i)*step, step/10)
		}
		p.RegPerS = float64(p.Registered) / span.Seconds()
		l := lats[i]
		slices.Sort(l)
		p.P50ms, p.P95ms, p.P99ms = percentileMS(l, 0.50), percentileMS(l, 0.95), percentileMS(l, 0.99)
	}
	return step.Seconds(), pts
}

// percentileMS is the p-th percentile (nearest rank) of sorted µs, in ms;
// 0 for none.
func percentileMS(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return float64(sorted[max(0, min(i, len(sorted)-1))]) / 1000
}
