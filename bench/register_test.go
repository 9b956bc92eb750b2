package bench

import (
	"context"
	"testing"
	"time"
)

// TestRunRegisterInProcess: a small load against the in-process P-CSCF,
// workers as goroutines: every UE registers with SAs, DHCP and the
// protected REGISTER, and holds with keepalives that the P-CSCF counts,
// re-registering (new AKA, new SAs) as it goes.
func TestRunRegisterInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress int
	res, err := RunRegister(ctx, RegisterConfig{UEs: 60, Rate: 300, Hold: time.Second, Keepalive: 100 * time.Millisecond,
		Reregister: 800 * time.Millisecond, PerWorker: 25, Progress: func(RegisterProgress) { progress++ }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Registered != 60 || len(res.Failed) != 0 || res.Workers != 3 {
		t.Fatalf("registered %d of 60, failed %v, %d workers", res.Registered, res.Failed, res.Workers)
	}
	if res.P50ms <= 0 || res.P99ms < res.P50ms || res.RegPerS <= 0 || progress == 0 {
		t.Fatalf("figures: %+v (progress calls %d)", res, progress)
	}
	if res.KeepalivesRx == 0 {
		t.Fatal("no keepalive reached the P-CSCF during the hold")
	}
	// Each UE re-registered once (a new AKA run and SA set), none failed.
	if res.Reregistered < 60 || len(res.ReregFailed) != 0 {
		t.Fatalf("re-registrations: %d, failed %v", res.Reregistered, res.ReregFailed)
	}
	if !res.Shared || res.PCSCFCPUMsPerReg == nil {
		t.Fatalf("in-process measurement missing: %+v", res)
	}
	// The time series holds every registration, in steps of a second
	// over the phase (60 UEs at 300/s: about a second).
	n := 0
	for _, p := range res.Series {
		n += p.Registered
	}
	if res.SeriesStepS != 1 || len(res.Series) == 0 || len(res.Series) > int(res.Seconds)+2 || n != 60 {
		t.Fatalf("series of %v s, %d points, %d registrations: %+v", res.SeriesStepS, len(res.Series), n, res.Series)
	}
}

// TestRunRegisterCountsFailures: against an external P-CSCF whose HSS
// holds other keys for the range, every UE's USIM refuses the network's
// AUTN: all fail with that cause, none counts as registered.
func TestRunRegisterCountsFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := startBenchPCSCF(ctx, RegisterConfig{UEs: 5, Domain: "bench.example", Prefix: "ue", Seed: "hss"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err := RunRegister(ctx, RegisterConfig{UEs: 5, Rate: 100, Seed: "other", SIP: srv.SIPAddr(), ESP: srv.ESPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Registered != 0 || res.Failed["usim"] != 5 || res.PCSCFCPUMsPerReg != nil {
		t.Fatalf("%+v", res)
	}
	failed := 0
	for _, p := range res.Series {
		failed += p.Failed
	}
	if failed != 5 {
		t.Fatalf("series counts %d failures, want 5: %+v", failed, res.Series)
	}
}

// TestRunRegisterStream: with the others held, one more UE registers and
// its echoes come back through the P-CSCF's data plane; against a P-CSCF
// whose HSS lacks that subscriber the stream says why it did not run.
func TestRunRegisterStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := RunRegister(ctx, RegisterConfig{UEs: 5, Rate: 100, Stream: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Stream
	if s == nil || res.StreamError != "" {
		t.Fatalf("no stream: %q", res.StreamError)
	}
	t.Logf("%+v", *s)
	if s.Replies == 0 || s.Replies > s.Sent || s.Mbps <= 0 || s.Seconds < 0.3 {
		t.Fatalf("stream: %+v", *s)
	}
	if res.Registered != 5 {
		t.Fatalf("registered %d of 5 (the stream's UE is not one of them)", res.Registered)
	}

	// An external P-CSCF whose HSS holds exactly the range: no stream UE.
	srv, err := startBenchPCSCF(ctx, RegisterConfig{UEs: 2, Domain: "bench.example", Prefix: "ue"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err = RunRegister(ctx, RegisterConfig{UEs: 2, Rate: 100, Stream: 300 * time.Millisecond, SIP: srv.SIPAddr(), ESP: srv.ESPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Registered != 2 || res.Stream != nil || res.StreamError == "" {
		t.Fatalf("stream against a range without its UE: %+v", res)
	}
	t.Log(res.StreamError)
}
