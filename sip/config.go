package sip

import (
	"errors"
	"fmt"
)

// ErrConfig is wrapped by every error New and NewUE return for a
// configuration that cannot work (a missing field, a value out of range),
// as opposed to a failure at run time (a port already taken). Commands map
// it to a usage error.
var ErrConfig = errors.New("sip: bad configuration")

func configErrorf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
}
