package bench

import (
	"math"
	"runtime"
	"testing"
	"time"
)

// TestParseCPUStat: the aggregate line of /proc/stat gives busy, steal and
// total ticks (guest time is inside user already); other lines and broken
// ones are refused.
func TestParseCPUStat(t *testing.T) {
	got, ok := parseCPUStat("cpu  1027323 818 326583 3401899 4045 0 40324 18803 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
	want := cpuTimes{busy: 1027323 + 818 + 326583 + 0 + 40324, steal: 18803}
	want.total = want.busy + 3401899 + 4045 + 18803
	if !ok || got != want {
		t.Fatalf("parseCPUStat = %+v, %v; want %+v", got, ok, want)
	}
	for _, bad := range []string{
		"", "cpu0 1 2 3 4 5 6 7 8", "cpu 1 2 3 4 5 6 7", "cpu 1 2 3 x 5 6 7 8", "intr 1 2 3 4 5 6 7 8",
	} {
		if _, ok := parseCPUStat(bad); ok {
			t.Errorf("parseCPUStat(%q) accepted", bad)
		}
	}
}

// TestMachineFigures: busy cores and steal over an interval; an interval
// with no time or counters that went backwards sets nothing.
func TestMachineFigures(t *testing.T) {
	var r RegisterResult
	a := cpuTimes{busy: 1000, steal: 10, total: 2000}
	b := cpuTimes{busy: 1300, steal: 30, total: 2400} // 400 ticks over 2 s: 2 CPUs
	r.MachineBusyCores, r.MachineStealPct = machineFigures(a, b, 2)
	if r.MachineBusyCores == nil || *r.MachineBusyCores != 1.5 || *r.MachineStealPct != 5 {
		t.Fatalf("busy %v, steal %v; want 1.5 cores and 5%%", r.MachineBusyCores, r.MachineStealPct)
	}
	busyBack, stealBack := machineFigures(b, a, 2)
	busyEmpty, stealEmpty := machineFigures(a, b, 0)
	if busyBack != nil || stealBack != nil || busyEmpty != nil || stealEmpty != nil {
		t.Fatal("figures set for an empty or backward interval")
	}
	if _, ok := machineCPU(); !ok && runtime.GOOS == "linux" {
		t.Fatal("no machine CPU times on Linux")
	}
}

// TestMachineSeries: each step gets the machine's figures over the samples
// that bracket it; a step past the samples gets the figures up to the
// last one, and a step before any sample gets none.
func TestMachineSeries(t *testing.T) {
	s := func(ms int, busy, steal, idle uint64) machineSample {
		return machineSample{at: time.Duration(ms) * time.Millisecond, t: cpuTimes{busy: busy, steal: steal, total: busy + steal + idle}}
	}
	// Step 0 (0-1 s): 2 cores busy, no steal. Step 1 (1-2 s): 1 core busy,
	// 10% steal, sampled at 1.0, 1.5 and 2.25 s (the bracket is 1.0-2.25).
	samples := []machineSample{s(0, 0, 0, 0), s(500, 100, 0, 0), s(1000, 200, 0, 0), s(1500, 250, 10, 40), s(2250, 325, 25, 100)}
	pts := make([]RegisterPoint, 3)
	machineSeries(pts, 1, samples)
	want := []struct{ busy, steal float64 }{{2, 0}, {1, 10}, {1, 100.0 * 15 / 150}}
	for i, w := range want {
		p := pts[i]
		if p.MachineBusyCores == nil || p.MachineStealPct == nil {
			t.Fatalf("step %d: no machine figures", i)
		}
		if math.Abs(*p.MachineBusyCores-w.busy) > 1e-9 || math.Abs(*p.MachineStealPct-w.steal) > 1e-9 {
			t.Errorf("step %d: %.3f cores, %.3f%% steal; want %.3f, %.3f", i, *p.MachineBusyCores, *p.MachineStealPct, w.busy, w.steal)
		}
	}
	late := []RegisterPoint{{}}
	machineSeries(late, 1, []machineSample{s(500, 0, 0, 0), s(1500, 100, 0, 0)})
	if late[0].MachineBusyCores != nil {
		t.Fatal("a step that began before the first sample got figures")
	}
}
