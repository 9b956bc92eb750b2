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

// Netns is a Linux network namespace: there are none on this OS, and
// nothing here makes one.
type Netns struct{}

// Do returns errors.ErrUnsupported: there is no namespace to run f in.
func (n *Netns) Do(f func() error) error { return errors.ErrUnsupported }
