package tun

import (
	"testing"
	"time"
)

// TestRateWindow: the count of the last whole second, and 0 after a quiet
// one.
func TestRateWindow(t *testing.T) {
	var r rateWindow
	t0 := time.Unix(1_000_000, 0)
	steps := []struct {
		n    int
		at   time.Duration
		want int
	}{
		{500, 0, 0},
		{600, 500 * time.Millisecond, 0},
		{1, time.Second, 1100},
		{10, 1500 * time.Millisecond, 1100},
		{1, 2 * time.Second, 11},
		{1, 4500 * time.Millisecond, 0},
	}
	for _, s := range steps {
		if got := r.add(s.n, t0.Add(s.at).UnixNano()); got != s.want {
			t.Fatalf("add(%d) at +%v = %d, want %d", s.n, s.at, got, s.want)
		}
	}
}
