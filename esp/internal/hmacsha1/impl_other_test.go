//go:build !amd64 || purego

package hmacsha1

import "testing"

// forEachPath runs f once: this build has only the portable path.
func forEachPath(t *testing.T, f func(t *testing.T)) { t.Run("portable", f) }
