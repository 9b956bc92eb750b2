package sip

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestListenerDeathReported: a listener that stops while the Server is
// open is an error Wait returns (the command then exits non-zero), not a
// half-dead server; Close is no such death.
func TestListenerDeathReported(t *testing.T) {
	r := newRig(t, nil)
	r.srv.outerTCP.Close() // what an accept loop that gave up looks like
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.srv.Wait(ctx)
	if err == nil || !strings.Contains(err.Error(), "unprotected TCP listener stopped") {
		t.Fatalf("Wait: %v, want the TCP listener's death", err)
	}

	r2 := newRig(t, nil)
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r2.srv.Wait(ctx2) }()
	r2.srv.Close()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v after Close, want it to keep waiting for ctx", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel2()
	if err := <-done; err != nil {
		t.Fatalf("Wait after ctx ended: %v", err)
	}
}
