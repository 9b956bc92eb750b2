package hss

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// benchSubscribers is how many subscribers the lookup and registration
// benchmarks provision (each with two IMPUs, see fill): enough that the
// identities do not all sit in one B-tree page.
const benchSubscribers = 10000

// BenchmarkLookupIMPUSQLite measures LookupIMPU (IMPU -> IMPI), what a
// registrar does for a REGISTER without a username, over benchSubscribers
// subscribers, serially and from parallel goroutines.
func BenchmarkLookupIMPUSQLite(b *testing.B) {
	s, _ := openTemp(b)
	fill(b, s, benchSubscribers)
	h, _ := New(s, Config{})
	ctx := context.Background()
	impu := func(i int) string { return fmt.Sprintf("sip:user%06d@ims.example", i%benchSubscribers) }
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := h.LookupIMPU(ctx, impu(i)); err != nil {
				b.Fatal(err)
			}
			i += 7919 // a prime: visits every subscriber, not in order
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := h.LookupIMPU(ctx, impu(i)); err != nil {
					b.Error(err)
					return
				}
				i += 7919
			}
		})
	})
}

// BenchmarkIMPUsSQLite measures HSS.IMPUs (IMPI -> its IMPUs), what a
// registrar does for every REGISTER that names its IMPI, serially and in
// parallel.
func BenchmarkIMPUsSQLite(b *testing.B) {
	s, _ := openTemp(b)
	fill(b, s, benchSubscribers)
	h, _ := New(s, Config{})
	ctx := context.Background()
	impi := func(i int) string { return fmt.Sprintf("user%06d@ims.example", i%benchSubscribers) }
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if u, err := h.IMPUs(ctx, impi(i)); err != nil || len(u) != 2 {
				b.Fatal(u, err)
			}
			i += 7919
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if u, err := h.IMPUs(ctx, impi(i)); err != nil || len(u) != 2 {
					b.Error(u, err)
					return
				}
				i += 7919
			}
		})
	})
}

// BenchmarkRegistrationSQLite is the HSS's share of one registration
// challenge as the registrar asks for it: the IMPI's IMPUs, then a vector,
// for 1000 subscribers taken in turn, from 8 goroutines per core (a
// registrar serves many REGISTERs at once, each waiting on the store). Each
// subscriber comes round again after 1000 operations, as a UE re-registers.
func BenchmarkRegistrationSQLite(b *testing.B) {
	const subscribers = 1000
	s, _ := openTemp(b)
	fill(b, s, subscribers)
	h, _ := New(s, Config{})
	ctx := context.Background()
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			impi := fmt.Sprintf("user%06d@ims.example", next.Add(1)%subscribers)
			if _, err := h.IMPUs(ctx, impi); err != nil {
				b.Error(err)
				return
			}
			if _, err := h.Vector(ctx, impi); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
