package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// output is a command's stdout or stderr as a test sees it: written by the
// command, read by the test at any time, and waited on line by line
// without polling.
type output struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed by the next Write; nil until someone waits
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, err := o.b.Write(p)
	if o.written != nil {
		close(o.written)
		o.written = nil
	}
	return n, err
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// line returns the first complete line holding s, and a channel closed by
// the next write if there is none yet.
func (o *output) line(s string) (string, bool, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	text := o.b.String()
	if i := strings.Index(text, s); i >= 0 {
		if end := strings.IndexByte(text[i:], '\n'); end >= 0 {
			start := strings.LastIndexByte(text[:i], '\n') + 1
			return text[start : i+end], true, nil
		}
	}
	if o.written == nil {
		o.written = make(chan struct{})
	}
	return "", false, o.written
}

// waitLine waits for a complete line holding s in o and returns it. The
// test fails if exited is closed first (the command ended without printing
// it) or if timeout passes; who names the command in the message and
// stderr, if not nil, is shown with it.
func waitLine(t *testing.T, who string, o, stderr *output, exited <-chan struct{}, s string, timeout time.Duration) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		l, ok, written := o.line(s)
		if ok {
			return l
		}
		fail := ""
		select {
		case <-written:
			continue
		case <-exited:
			if l, ok, _ := o.line(s); ok { // printed just before exiting
				return l
			}
			fail = "exited"
		case <-timer.C:
			fail = "still running after " + timeout.String()
		}
		errs := ""
		if stderr != nil {
			errs = stderr.String()
		}
		t.Fatalf("%s %s without printing a line with %q\nstdout:\n%s\nstderr:\n%s", who, fail, s, o.String(), errs)
	}
}

// running is an imsec command running in this test's process (run in a
// goroutine), stopped by cancelling its context as Ctrl-C would.
type running struct {
	name     string
	out, err output
	cancel   context.CancelFunc
	exited   chan struct{} // closed when run returns
	code     int           // run's exit code, once exited is closed
}

// startCLI runs `imsec args...` until ctx ends or stop; the test's cleanup
// stops it if the test did not.
func startCLI(t *testing.T, ctx context.Context, name string, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	c := &running{name: name, cancel: cancel, exited: make(chan struct{})}
	go func() {
		defer close(c.exited)
		c.code = run(ctx, args, &c.out, &c.err)
	}()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// waitLine waits for a stdout line holding s (see waitLine above).
func (c *running) waitLine(t *testing.T, s string, timeout time.Duration) string {
	t.Helper()
	return waitLine(t, c.name, &c.out, &c.err, c.exited, s, timeout)
}

// wait waits for the command to end by itself and returns its exit code;
// the test fails if it has not ended after timeout.
func (c *running) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-c.exited:
		return c.code
	case <-time.After(timeout):
		c.cancel()
		<-c.exited
		t.Fatalf("%s still running after %v\nstdout:\n%s\nstderr:\n%s", c.name, timeout, c.out.String(), c.err.String())
		return -1
	}
}

// stop cancels the command (Ctrl-C) and returns its exit code (-1 and a
// failed test if it does not end within 10 s). Stopping twice is harmless.
func (c *running) stop(t *testing.T) int {
	t.Helper()
	c.cancel()
	select {
	case <-c.exited:
		return c.code
	case <-time.After(10 * time.Second):
		t.Errorf("%s did not stop within 10 s of Ctrl-C\nstdout:\n%s\nstderr:\n%s", c.name, c.out.String(), c.err.String())
		return -1
	}
}

// pcscfStarted is the start line of `imsec pcscf`, naming the addresses it
// bound: "P-CSCF DOMAIN: SIP ADDR:PORT (UDP+TCP), ESP-in-UDP ADDR:PORT,
// media relay ESP ADDR:PORT, ...".
var pcscfStarted = regexp.MustCompile(`^P-CSCF \S+: SIP (\S+) \(UDP\+TCP\), ESP-in-UDP (\S+), media relay ESP (\S+),`)

// pcscf is a running `imsec pcscf` and the addresses it bound.
type pcscf struct {
	*running
	sip, esp, media string
}

// startPCSCF runs `imsec pcscf args...` on loopback ports of its own
// choosing (--sip and --esp 127.0.0.1:0, so the media relay's too) and
// returns once it has printed them. It fails the test if the P-CSCF exits
// first or has not started within 10 s.
func startPCSCF(t *testing.T, ctx context.Context, name string, args ...string) *pcscf {
	t.Helper()
	args = append([]string{"pcscf", "--sip", "127.0.0.1:0", "--esp", "127.0.0.1:0"}, args...)
	c := startCLI(t, ctx, name, args...)
	l := c.waitLine(t, "ESP-in-UDP", 10*time.Second)
	m := pcscfStarted.FindStringSubmatch(l)
	if m == nil {
		t.Fatalf("%s: start line %q does not match %v", name, l, pcscfStarted)
	}
	return &pcscf{running: c, sip: m[1], esp: m[2], media: m[3]}
}
