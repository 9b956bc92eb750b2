package hss

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkAddAll provisions 100,000 subscribers of a test range (one IMPU
// each, OP given) into a new database in one AddAll: what `imsec sub
// import` does after reading the file. One op is the whole import.
func BenchmarkAddAll(b *testing.B) {
	r := TestRange{Prefix: "ue", Domain: "ims.example", Start: 1, Count: 100_000}
	subs := make([]Subscriber, r.Count)
	for i := range subs {
		subs[i] = r.Subscriber(r.Start + i)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		s, err := OpenSQLite(filepath.Join(b.TempDir(), "hss.db"), SQLiteOptions{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := s.AddAll(ctx, subs, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(r.Count)*float64(b.N)/b.Elapsed().Seconds(), "subscribers/s")
}
