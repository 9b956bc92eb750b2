package bench

import (
	"testing"
	"time"
)

// TestHolderTick: a worker's hold loop wakes as often as its UEs' sends
// fall due, between 1 ms and 1 s; a negative or zero interval is none.
func TestHolderTick(t *testing.T) {
	for _, c := range []struct {
		ues             int
		keepalive, rere time.Duration
		want            time.Duration
	}{
		{16000, 20 * time.Second, 0, 5 * time.Millisecond}, // 1.25 ms: the floor
		{2000, 20 * time.Second, 0, 10 * time.Millisecond},
		{10, 20 * time.Second, 0, time.Second},
		{16000, 20 * time.Second, time.Second, 5 * time.Millisecond}, // 62.5 µs: the floor
		{4000, -1, 60 * time.Second, 15 * time.Millisecond},
		{4000, -1, 0, time.Second},
	} {
		h := &holder{live: make([]*regUE, c.ues), spec: WorkerSpec{Keepalive: c.keepalive, Reregister: c.rere}}
		if got := h.tick(); got != c.want {
			t.Errorf("%d UEs, keepalive %v, re-register %v: tick %v, want %v", c.ues, c.keepalive, c.rere, got, c.want)
		}
	}
}
