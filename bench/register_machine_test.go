package bench

import (
	"runtime"
	"testing"
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
	r.machineFigures(a, b, 2)
	if r.MachineBusyCores == nil || *r.MachineBusyCores != 1.5 || *r.MachineStealPct != 5 {
		t.Fatalf("busy %v, steal %v; want 1.5 cores and 5%%", r.MachineBusyCores, r.MachineStealPct)
	}
	var none RegisterResult
	none.machineFigures(b, a, 2)
	none.machineFigures(a, b, 0)
	if none.MachineBusyCores != nil || none.MachineStealPct != nil {
		t.Fatal("figures set for an empty or backward interval")
	}
	if _, ok := machineCPU(); !ok && runtime.GOOS == "linux" {
		t.Fatal("no machine CPU times on Linux")
	}
}
