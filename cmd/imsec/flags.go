package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// newFlagSet makes a flag set that reports errors instead of exiting, and
// prints its help to w.
func newFlagSet(name, synopsis string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: imsec %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and turns every failure into a usage error. A
// positional argument left over is an error too unless allowArgs.
func parseFlags(fs *flag.FlagSet, args []string, allowArgs bool) error {
	out := fs.Output()
	fs.SetOutput(io.Discard) // we print one line ourselves, not the whole usage
	err := fs.Parse(args)
	fs.SetOutput(out)
	if err == flag.ErrHelp {
		fs.Usage()
		return err
	}
	if err != nil {
		return usageErrorf("%v", err)
	}
	if !allowArgs && fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// hexArg decodes a hex flag value that must be exactly n bytes long. The
// value is never echoed in an error: it may be a key (K, OP, OPc).
func hexArg(flagName, v string, n int) ([]byte, error) {
	if v == "" {
		return nil, usageErrorf("--%s is required", flagName)
	}
	v = strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X")
	b, err := hex.DecodeString(v)
	if err != nil {
		var ie hex.InvalidByteError
		if errors.As(err, &ie) {
			return nil, usageErrorf("--%s: not hex: invalid character at position %d (value not shown)", flagName, strings.IndexByte(v, byte(ie))+1)
		}
		return nil, usageErrorf("--%s: not hex: odd number of digits (%d)", flagName, len(v))
	}
	if len(b) != n {
		return nil, usageErrorf("--%s: want %d bytes (%d hex digits), got %d bytes", flagName, n, 2*n, len(b))
	}
	return b, nil
}

// multiFlag collects a repeated string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
