package bench

import "runtime/metrics"

// memClasses are the Go runtime's memory classes (runtime/metrics) that
// the register bench breaks the in-process P-CSCF's memory per UE into:
// where RSS goes besides live objects (fragmented spans, goroutine stacks,
// the runtime's own metadata).
var memClasses = map[string]string{
	"/memory/classes/heap/objects:bytes":          "heap-objects", // live and not yet swept objects
	"/memory/classes/heap/unused:bytes":           "heap-unused",  // free slots in spans that hold objects: fragmentation
	"/memory/classes/heap/free:bytes":             "heap-free",    // free spans not yet returned to the OS
	"/memory/classes/heap/stacks:bytes":           "stacks",       // goroutine stacks
	"/memory/classes/metadata/mspan/inuse:bytes":  "metadata",     // span descriptors
	"/memory/classes/metadata/other:bytes":        "metadata",     // GC bitmaps and the like
	"/memory/classes/metadata/mcache/inuse:bytes": "metadata",
	"/memory/classes/other:bytes":                 "other",
	"/memory/classes/os-stacks:bytes":             "stacks",
	"/memory/classes/profiling/buckets:bytes":     "other",
}

// memBreakdown reads the classes, summed by name, in bytes.
func memBreakdown() map[string]float64 {
	samples := make([]metrics.Sample, 0, len(memClasses))
	for name := range memClasses {
		samples = append(samples, metrics.Sample{Name: name})
	}
	metrics.Read(samples)
	out := map[string]float64{}
	for _, s := range samples {
		if s.Value.Kind() == metrics.KindUint64 {
			out[memClasses[s.Name]] += float64(s.Value.Uint64())
		}
	}
	return out
}

// perUEKiB is the growth of each class from idle to now per UE, in KiB.
func perUEKiB(idle, now map[string]float64, ues int) map[string]float64 {
	out := map[string]float64{}
	for k, v := range now {
		out[k] = (v - idle[k]) / 1024 / float64(ues)
	}
	return out
}

// gcCounters are the in-process runtime's cumulative heap allocation and
// the CPU its collector spent (runtime/metrics; the collector's figure
// includes mark work on otherwise idle processors).
type gcCounters struct {
	allocBytes uint64
	cycles     uint64
	gcCPU      float64 // seconds
}

func readGCCounters() gcCounters {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}, {Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	var c gcCounters
	if s[0].Value.Kind() == metrics.KindUint64 {
		c.allocBytes = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		c.cycles = s[1].Value.Uint64()
	}
	if s[2].Value.Kind() == metrics.KindFloat64 {
		c.gcCPU = s[2].Value.Float64()
	}
	return c
}
