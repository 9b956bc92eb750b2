package hss

import (
	"context"
	"testing"
)

// BenchmarkVectorSQLite measures one durable vector: a BEGIN IMMEDIATE
// transaction with an fsync'd WAL commit (synchronous=FULL), then Milenage.
func BenchmarkVectorSQLite(b *testing.B) {
	s, _ := openTemp(b)
	if err := s.Add(context.Background(), alice()); err != nil {
		b.Fatal(err)
	}
	h, _ := New(s, Config{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Vector(context.Background(), alice().IMPI); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVectorSQLiteParallel is the same with concurrent callers.
func BenchmarkVectorSQLiteParallel(b *testing.B) {
	s, _ := openTemp(b)
	if err := s.Add(context.Background(), alice()); err != nil {
		b.Fatal(err)
	}
	h, _ := New(s, Config{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Vector(context.Background(), alice().IMPI); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkVectorMem is the HSS logic and Milenage alone, without storage.
func BenchmarkVectorMem(b *testing.B) {
	s := NewMemStore()
	if err := s.Add(context.Background(), alice()); err != nil {
		b.Fatal(err)
	}
	h, _ := New(s, Config{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Vector(context.Background(), alice().IMPI); err != nil {
			b.Fatal(err)
		}
	}
}
