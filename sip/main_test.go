package sip

import (
	"log/slog"
	"testing"

	sipgosip "github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"
)

// TestMain silences sipgo's global logger (its transaction layer logs
// through it; our own code takes loggers explicitly) and fails the package
// if any goroutine outlives its tests: every Server and UE must join what
// it started when it is closed.
func TestMain(m *testing.M) {
	sipgosip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	goleak.VerifyTestMain(m)
}
