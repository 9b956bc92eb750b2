package hss

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"sync"
	"syscall"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

// The kill -9 tests: child processes (this test binary as TestHelperProcess)
// draw vectors for alice in a loop with the default SQN ranges, printing
// each SQN once Vector has returned it; the test kills them with SIGKILL
// after a random number of lines (so the kill lands anywhere: while issuing
// from memory, inside the UpdateSQN that renews a range, before or after
// its fsync) and starts new ones on the same file.

// killAfter kills a started helper with SIGKILL once it has printed n
// SQNs and returns every SQN it printed. It may run on a goroutine of its
// own: it reports through its error.
func killAfter(cmd *exec.Cmd, out io.Reader, n int) ([]uint64, error) {
	var got []uint64
	var bad error
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		b, err := hex.DecodeString(sc.Text())
		if err != nil || len(b) != 6 {
			bad = fmt.Errorf("helper printed %q", sc.Text())
			cmd.Process.Signal(syscall.SIGKILL)
			break
		}
		got = append(got, akakeys.SQN(b).Uint64())
		if len(got) == n {
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	io.Copy(io.Discard, out) // what was in the pipe when it died
	err := cmd.Wait()
	if bad != nil {
		return nil, bad
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		return nil, fmt.Errorf("helper ended with %v, not killed by SIGKILL", err)
	}
	if len(got) < n {
		return nil, fmt.Errorf("helper printed %d SQNs before it was killed, want at least %d", len(got), n)
	}
	return got, nil
}

// increasing requires the SEQs of sqns to grow strictly, each above floor.
func increasing(t *testing.T, what string, sqns []uint64, floor uint64) {
	t.Helper()
	for i, q := range sqns {
		if q>>akakeys.DefaultIndBits <= floor>>akakeys.DefaultIndBits {
			t.Fatalf("%s: SQN %012x (number %d) not above %012x", what, q, i, floor)
		}
		floor = q
	}
}

func TestKill9NeverReusesSQN(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills helper processes; skipped with -short")
	}
	s, path := openTemp(t)
	if err := s.Add(context.Background(), alice()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rng := rand.New(rand.NewPCG(33, 102))
	var all []uint64
	last := uint64(0)
	for round := range 8 {
		cmd, out := helper(t, path, 0)
		got, err := killAfter(cmd, out, 1+rng.IntN(3*DefaultReserve))
		if err != nil {
			t.Fatal(err)
		}
		increasing(t, "one process", got, 0)
		// Above everything the killed processes issued...
		increasing(t, "after a kill", got[:1], last)
		// ...skipping less than two ranges: the killed process had issued
		// at most one SQN more than it printed, and may have stored one
		// new range it did not use.
		if round > 0 {
			if skip := got[0]>>akakeys.DefaultIndBits - last>>akakeys.DefaultIndBits; skip > DefaultReserve+2 {
				t.Errorf("round %d skipped %d SEQ values after the kill, want at most %d", round, skip, DefaultReserve+2)
			}
		}
		all = append(all, got...)
		last = got[len(got)-1]
	}
	checkSQNs(t, all, 0)
	t.Logf("%d SQNs from 8 killed processes, up to SEQ %d", len(all), last>>akakeys.DefaultIndBits)
}

// Two processes at a time, both killed, four times: no SQN issued twice
// anywhere, and each pair starts above everything issued before it.
func TestKill9TwoProcessesNeverShareSQN(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills helper processes; skipped with -short")
	}
	s, path := openTemp(t)
	if err := s.Add(context.Background(), alice()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rng := rand.New(rand.NewPCG(35, 206))
	var all []uint64
	high := uint64(0)
	for range 4 {
		var wg sync.WaitGroup
		got := make([][]uint64, 2)
		errs := make([]error, 2)
		for i := range got {
			n := 1 + rng.IntN(3*DefaultReserve)
			cmd, out := helper(t, path, 0)
			wg.Go(func() { got[i], errs[i] = killAfter(cmd, out, n) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		roundHigh := high
		for _, g := range got {
			increasing(t, "one process", g, high)
			all = append(all, g...)
			roundHigh = max(roundHigh, g[len(g)-1])
		}
		high = roundHigh
	}
	checkSQNs(t, all, 0)
}
