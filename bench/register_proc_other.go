//go:build !linux

package bench

import (
	"runtime"
	"time"
)

// Process figures for RunRegister: only Linux has them (/proc); elsewhere
// the P-CSCF's RSS, another process's CPU and the machine's are not
// measured.

func selfRSSKiB() (float64, bool)      { return 0, false }
func pidRSSKiB(int) (float64, bool)    { return 0, false }
func pidCPU(int) (time.Duration, bool) { return 0, false }
func machineCPU() (cpuTimes, bool)     { return cpuTimes{}, false }

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
