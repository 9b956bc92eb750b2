package main

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a command leaves a goroutine behind once
// it has returned.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
