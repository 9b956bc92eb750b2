package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

// asCLI, set in the environment, makes the test binary run as imsec: a
// command that starts itself again (bench register's worker processes)
// gets the CLI, not the tests.
const asCLI = "IMSEC_TEST_AS_CLI"

// TestMain fails the package if a command leaves a goroutine behind once
// it has returned.
func TestMain(m *testing.M) {
	if os.Getenv(asCLI) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}
