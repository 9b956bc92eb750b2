//go:build !linux

package bench

import (
	"context"
	"errors"
	"fmt"
)

// MeasureTUN needs Linux network namespaces.
func MeasureTUN(ctx context.Context, build TUNBuilder, opt MeasureOptions) (TunnelResult, error) {
	return TunnelResult{Mode: ModeTUN}, fmt.Errorf("bench: --mode tun needs Linux network namespaces: %w", errors.ErrUnsupported)
}
