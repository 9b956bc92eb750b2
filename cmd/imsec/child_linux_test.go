package main

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

// The child-process tests build the imsec binary (buildImsec) and run on
// Linux only.

// child is an imsec binary running as a child process (to be killed like a
// real process), with its output captured as running's is.
type child struct {
	cmd      *exec.Cmd
	out, err output
	exited   chan struct{} // closed when the process has ended
}

// startChild runs bin with args until ctx ends; the test's cleanup kills it
// if the test did not.
func startChild(t *testing.T, ctx context.Context, bin string, args ...string) *child {
	t.Helper()
	c := &child{cmd: exec.CommandContext(ctx, bin, args...), exited: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.err
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() { c.cmd.Process.Kill(); <-c.exited })
	return c
}

// waitLine waits for a stdout line holding s (see waitLine above).
func (c *child) waitLine(t *testing.T, name, s string, timeout time.Duration) string {
	t.Helper()
	return waitLine(t, name, &c.out, &c.err, c.exited, s, timeout)
}
