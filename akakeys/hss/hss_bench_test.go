package hss

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

// BenchmarkVectorSQLite measures vectors for one subscriber as the HSS
// issues them: with the default Reserve, one BEGIN IMMEDIATE transaction
// with an fsync'd WAL commit (synchronous=FULL) per 64 vectors, a read of
// the identity generation per vector, then Milenage.
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

// BenchmarkVectorSQLiteReserve1 is BenchmarkVectorSQLite with Reserve 1:
// one durable commit per vector, what the HSS did before SQN ranges.
func BenchmarkVectorSQLiteReserve1(b *testing.B) {
	s, _ := openTemp(b)
	if err := s.Add(context.Background(), alice()); err != nil {
		b.Fatal(err)
	}
	h, _ := New(s, Config{Reserve: 1})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Vector(context.Background(), alice().IMPI); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVectorSQLiteParallel is BenchmarkVectorSQLite with concurrent
// callers, all for the one subscriber.
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

// BenchmarkVectorSQLiteParallelIMPIs has 8 goroutines per core, each
// drawing vectors for a subscriber of its own: concurrent registrations of
// different UEs, which no per-subscriber lock serialises.
func BenchmarkVectorSQLiteParallelIMPIs(b *testing.B) {
	s, _ := openTemp(b)
	fill(b, s, 64)
	h, _ := New(s, Config{})
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		impi := fmt.Sprintf("user%06d@ims.example", next.Add(1)-1)
		for pb.Next() {
			if _, err := h.Vector(context.Background(), impi); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkUpdateSQNSQLiteParallel measures the store's durable write
// alone, one UpdateSQN per operation, from 8 goroutines per core, each for
// a subscriber of its own: what a restarted HSS does for the first vector
// of every UE that registers.
func BenchmarkUpdateSQNSQLiteParallel(b *testing.B) {
	s, _ := openTemp(b)
	fill(b, s, 64)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		impi := fmt.Sprintf("user%06d@ims.example", next.Add(1)-1)
		for pb.Next() {
			_, err := s.UpdateSQN(context.Background(), impi, func(sub Subscriber) (SQNUpdate, error) {
				return SQNUpdate{SQN: akakeys.SQNFromUint64(sub.SQN.Uint64() + 1)}, nil
			})
			if err != nil {
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

// BenchmarkOpenSQLiteChecked measures OpenSQLite of an existing database,
// which reads the whole file to check it (integrity_check and
// foreign_key_check), against the subscriber count; the quick_check and
// foreign_key_check sub-benchmarks time those PRAGMAs alone. Each
// subscriber has two IMPUs.
func BenchmarkOpenSQLiteChecked(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		s, path := openTemp(b)
		fill(b, s, n)
		s.Close()
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			for b.Loop() {
				s, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
		for _, pragma := range []string{"integrity_check", "quick_check", "foreign_key_check"} {
			b.Run(fmt.Sprintf("subscribers=%d/%s", n, pragma), func(b *testing.B) {
				s, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				for b.Loop() {
					if _, err := pragmaLines(context.Background(), s.db, "PRAGMA "+pragma); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// fill adds n subscribers like bob in one transaction.
func fill(b *testing.B, s *SQLiteStore, n int) {
	b.Helper()
	ctx := context.Background()
	err := s.write(ctx, func(tx *sql.Tx) error {
		c := bob()
		for i := range n {
			impi := fmt.Sprintf("user%06d@ims.example", i)
			if _, err := tx.ExecContext(ctx,
				"INSERT INTO subscriber ("+subscriberColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
				impi, c.K[:], c.OPc[:], nil, c.AMF[:], i, 0, nil); err != nil {
				return err
			}
			for pos, u := range []string{"sip:" + impi, fmt.Sprintf("tel:+1555%07d", i)} {
				if _, err := tx.ExecContext(ctx, "INSERT INTO impu (impu, impi, pos) VALUES (?, ?, ?)", u, impi, pos); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
