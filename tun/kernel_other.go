//go:build !linux

package tun

import (
	"errors"
	"fmt"
	"net/netip"
)

// kernelConfig has nothing to hold where the interface is configured with
// the system's tools.
type kernelConfig struct{}

func (*kernelConfig) open(string) error { return nil }
func (*kernelConfig) close()            {}

func (k *Kernel) queryMTU() (int, error) { return k.dev.MTU() }

// SetUp is not supported here; see Kernel.
func (k *Kernel) SetUp() error { return unsupported("set up", k.name) }

// SetMTU is not supported here; see Kernel.
func (k *Kernel) SetMTU(mtu int) error { return unsupported("set MTU of", k.name) }

// AddAddress is not supported here; see Kernel.
func (k *Kernel) AddAddress(p netip.Prefix) error { return unsupported("add address to", k.name) }

// RemoveAddress is not supported here; see Kernel.
func (k *Kernel) RemoveAddress(p netip.Prefix) error {
	return unsupported("remove address from", k.name)
}

// AddRoute is not supported here; see Kernel.
func (k *Kernel) AddRoute(dst netip.Prefix) error { return unsupported("add route via", k.name) }

func unsupported(what, name string) error {
	return fmt.Errorf("tun: %s %s: configure it with the system's tools: %w", what, name, errors.ErrUnsupported)
}
