package bench

import (
	"strconv"
	"strings"
)

// The machine's CPU over the registration phase, from the kernel's counts
// of every CPU's time (Linux: the first line of /proc/stat): how busy the
// whole machine was, and how much of its time the hypervisor gave to
// someone else (steal). A load run on two cores shared with the load
// generator is sensitive to both, and runs of the same build an hour
// apart can differ by more than the change under test.

// clockTicks is USER_HZ, the unit of the CPU times in /proc/stat and
// /proc/PID/stat: 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTimes are a machine's CPU times summed over its CPUs, in clock ticks.
type cpuTimes struct {
	busy  uint64 // user, nice, system, irq, softirq
	steal uint64
	total uint64 // busy, idle, iowait and steal
}

// parseCPUStat reads the aggregate "cpu" line of /proc/stat: user nice
// system idle iowait irq softirq steal [guest guest_nice], where guest
// time is already counted in user (proc(5)).
func parseCPUStat(s string) (cpuTimes, bool) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, false
	}
	var v [8]uint64
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return cpuTimes{}, false
		}
		v[i] = n
	}
	t := cpuTimes{busy: v[0] + v[1] + v[2] + v[5] + v[6], steal: v[7]}
	t.total = t.busy + v[3] + v[4] + t.steal
	return t, true
}

// machineFigures returns the machine figures (RegisterResult's, and each
// series step's) for the interval from a to b, seconds long; nil for an
// empty interval or counters that went backwards.
func machineFigures(a, b cpuTimes, seconds float64) (busyCores, stealPct *float64) {
	if b.total <= a.total || seconds <= 0 {
		return nil, nil
	}
	busy := float64(b.busy-a.busy) / clockTicks / seconds
	steal := 100 * float64(b.steal-a.steal) / float64(b.total-a.total)
	return &busy, &steal
}
