package sip

import "sync"

// imsec: request handling runs on reused goroutines (IMSEC.md section 8).

// maxIdleRequestWorkers bounds the goroutines parked between requests.
const maxIdleRequestWorkers = 256

// requestWorkers runs each request's handling on a goroutine of its own,
// as `go f()` did, but parks a goroutine that finished one for the next:
// a reused goroutine keeps the stack it grew. A fresh goroutine starts
// small, and a handler that signs, seals and sends grows it two or three
// times, each a copy of every frame. Busy workers are never waited for: a
// burst gets as many goroutines as it has requests, as before.
type requestWorkers struct {
	mu     sync.Mutex
	idle   []chan func() // guarded by mu; parked workers, most recent last
	closed bool          // guarded by mu; no worker parks once set
	parked sync.WaitGroup
}

// run calls f on a parked worker, or on a new one.
func (w *requestWorkers) run(f func()) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		ch := w.idle[n-1]
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		ch <- f // buffered: never blocks
		return
	}
	w.mu.Unlock()
	go w.loop(f)
}

func (w *requestWorkers) loop(f func()) {
	ch := make(chan func(), 1)
	for {
		f()
		w.mu.Lock()
		if w.closed || len(w.idle) == maxIdleRequestWorkers {
			w.mu.Unlock()
			return
		}
		w.idle = append(w.idle, ch)
		w.parked.Add(1)
		w.mu.Unlock()
		next, ok := <-ch
		w.parked.Done()
		if !ok {
			return
		}
		f = next
	}
}

// close ends the parked workers and waits for them. Workers still running
// a handler end when it returns, as upstream's goroutines did.
func (w *requestWorkers) close() {
	w.mu.Lock()
	w.closed = true
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, ch := range idle {
		close(ch)
	}
	w.parked.Wait()
}

// idleWorkers is how many workers are parked.
func (w *requestWorkers) idleWorkers() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle)
}
