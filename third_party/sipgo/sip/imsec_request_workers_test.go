package sip

// imsec: tests of the reused request goroutines (imsec_request_workers.go).

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// growStack uses about n KiB of stack.
//
//go:noinline
func growStack(n int) byte {
	var b [1024]byte
	b[n%1024] = byte(n)
	if n <= 1 {
		return b[0]
	}
	return growStack(n-1) + b[1]
}

// TestImsecRequestWorkersReuse: requests one after another run on one
// goroutine, which keeps the stack it grew; concurrent requests each get
// their own; close ends the parked ones and run still works after it.
func TestImsecRequestWorkersReuse(t *testing.T) {
	var w requestWorkers
	before := runtime.NumGoroutine()

	// One after another: one worker.
	ids := make(chan uint64, 10)
	for range 10 {
		done := make(chan struct{})
		w.run(func() {
			growStack(32)
			ids <- goid()
			close(done)
		})
		<-done
		waitIdle(t, &w, 1)
	}
	first := <-ids
	for range 9 {
		if id := <-ids; id != first {
			t.Fatalf("sequential requests ran on goroutines %d and %d, want one reused", first, id)
		}
	}

	// At once: each its own goroutine, none waits for another.
	const n = 20
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	for range n {
		w.run(func() { started.Done(); release.Wait() })
	}
	started.Wait() // would hang if run queued requests behind busy workers
	release.Done()
	waitIdle(t, &w, n)

	w.close()
	if got := w.idleWorkers(); got != 0 {
		t.Fatalf("%d workers parked after close", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	if got := runtime.NumGoroutine(); got > before {
		t.Fatalf("%d goroutines after close, %d before", got, before)
	}

	// After close, a request still runs (on a goroutine that then ends).
	done := make(chan struct{})
	w.run(func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run after close did not run")
	}
}

// waitIdle waits until n workers are parked.
func waitIdle(t *testing.T, w *requestWorkers, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for w.idleWorkers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers parked, want %d", w.idleWorkers(), n)
		}
		runtime.Gosched()
	}
}

// goid is the calling goroutine's ID, read from its stack trace header.
func goid() uint64 {
	var buf [32]byte
	b := buf[:runtime.Stack(buf[:], false)]
	var id uint64
	for _, c := range b[len("goroutine "):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}

// BenchmarkImsecRequestWorkers: a handler that needs ~16 KiB of stack, run
// on reused workers against a fresh goroutine each.
func BenchmarkImsecRequestWorkers(b *testing.B) {
	handler := func(wg *sync.WaitGroup) func() {
		return func() { growStack(16); wg.Done() }
	}
	b.Run("reused", func(b *testing.B) {
		var w requestWorkers
		defer w.close()
		var wg sync.WaitGroup
		for range b.N {
			wg.Add(1)
			w.run(handler(&wg))
			wg.Wait()
		}
	})
	b.Run("go", func(b *testing.B) {
		var wg sync.WaitGroup
		for range b.N {
			wg.Add(1)
			go handler(&wg)()
			wg.Wait()
		}
	})
}
