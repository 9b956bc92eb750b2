package connlimit

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives its tests: the
// sweeper must be joined by Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
