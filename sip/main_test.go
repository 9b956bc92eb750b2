package sip

import (
	"log/slog"
	"os"
	"testing"

	sipgosip "github.com/emiago/sipgo/sip"
)

// TestMain silences sipgo's global logger (its transaction layer logs
// through it; our own code takes loggers explicitly).
func TestMain(m *testing.M) {
	sipgosip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
