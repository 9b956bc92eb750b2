package bench

import (
	"math"
	"testing"
	"time"
)

// TestRegisterSeriesBuckets: ends land in the second they happened, with
// the percentiles of that second's latencies; failures count apart; a
// second with nothing is a zero point, not a gap.
func TestRegisterSeriesBuckets(t *testing.T) {
	var ends []regEnd
	for i := range 100 { // second 0: 100 registrations of 1..100 ms
		ends = append(ends, regEnd{at: time.Duration(i) * 5 * time.Millisecond, latUS: int64(i+1) * 1000})
	}
	ends = append(ends, regEnd{at: 2500 * time.Millisecond, latUS: 7000}, regEnd{at: 2600 * time.Millisecond, failed: true})
	step, pts := registerSeries(ends)
	if step != 1 || len(pts) != 3 {
		t.Fatalf("step %v, %d points: %+v", step, len(pts), pts)
	}
	if p := pts[0]; p.T != 0 || p.Registered != 100 || p.Failed != 0 || p.RegPerS != 100 || p.P50ms != 50 || p.P95ms != 95 || p.P99ms != 99 {
		t.Errorf("second 0: %+v", p)
	}
	if p := pts[1]; p.T != 1 || p.Registered != 0 || p.Failed != 0 || p.P50ms != 0 {
		t.Errorf("second 1: %+v", p)
	}
	// The last second ends at 2.6 s: one registration in 0.6 s.
	if p := pts[2]; p.T != 2 || p.Registered != 1 || p.Failed != 1 || p.P99ms != 7 || math.Abs(p.RegPerS-1/0.6) > 1e-9 {
		t.Errorf("second 2: %+v", p)
	}
	if step, pts := registerSeries(nil); step != 0 || pts != nil {
		t.Errorf("no ends: step %v, %v", step, pts)
	}
}

// TestRegisterSeriesBounded: a run of an hour gets steps of whole seconds
// wide enough to stay within MaxSeriesPoints, and loses no registration.
func TestRegisterSeriesBounded(t *testing.T) {
	var ends []regEnd
	for s := range 3600 {
		ends = append(ends, regEnd{at: time.Duration(s) * time.Second, latUS: 1000})
	}
	step, pts := registerSeries(ends)
	if len(pts) > MaxSeriesPoints || step != 6 {
		t.Fatalf("%d points of %v s", len(pts), step)
	}
	n := 0
	for i, p := range pts {
		n += p.Registered
		if i < len(pts)-1 && p.RegPerS != float64(p.Registered)/step {
			t.Errorf("point %+v: rate per second wrong", p)
		}
	}
	if n != len(ends) {
		t.Errorf("series holds %d registrations of %d", n, len(ends))
	}
}

// TestWorkerEndsOffset: a worker's times are taken relative to the
// runner's start through its begin time.
func TestWorkerEndsOffset(t *testing.T) {
	start := time.UnixMicro(1_000_000_000)
	l := &workerLine{BeginUS: start.UnixMicro() + 2_000_000, LatencyUS: []int64{1500, 2500}, EndMS: []int64{0, 1500}, FailMS: []int64{100}}
	got := workerEnds(l, start)
	want := []regEnd{{at: 2 * time.Second, latUS: 1500}, {at: 3500 * time.Millisecond, latUS: 2500}, {at: 2100 * time.Millisecond, failed: true}}
	if len(got) != len(want) {
		t.Fatalf("%+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("end %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}
