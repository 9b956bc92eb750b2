package demo

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if the demo leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
