package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/imsec/imsec/sip"
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

// hexField is one hex flag to decode into a fixed-size destination.
type hexField struct {
	name, value string
	dst         []byte
}

// hexFields decodes each field with hexArg into its destination, stopping
// at the first error.
func hexFields(fields ...hexField) error {
	for _, f := range fields {
		b, err := hexArg(f.name, f.value, len(f.dst))
		if err != nil {
			return err
		}
		copy(f.dst, b)
	}
	return nil
}

// multiFlag collects a repeated string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// loadConfig reads a JSON object whose keys are flag names and sets every
// flag the command line did not set: `"domain": "a.example"`, `"pool":
// "100.64.0.0/16"`, repeatable flags as arrays. Unknown keys are an error,
// so a typo does not pass silently.
func loadConfig(fs *flag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return usageErrorf("--config: %v", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return usageErrorf("--config %s: not a JSON object of flag names: %v", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "config" || fs.Lookup(k) == nil {
			return usageErrorf("--config %s: unknown setting %q", path, k)
		}
		if set[k] {
			continue // the command line wins
		}
		var vals []string
		var one any
		if err := json.Unmarshal(raw[k], &one); err != nil {
			return usageErrorf("--config %s: %s: %v", path, k, err)
		}
		switch v := one.(type) {
		case []any:
			for _, x := range v {
				vals = append(vals, fmt.Sprint(x))
			}
		case float64:
			vals = []string{strconv.FormatFloat(v, 'f', -1, 64)}
		default:
			vals = []string{fmt.Sprint(v)}
		}
		for _, v := range vals {
			if err := fs.Set(k, v); err != nil {
				return usageErrorf("--config %s: %s: %v", path, k, err)
			}
		}
	}
	return nil
}

// addrPortArg parses ADDR:PORT, or :PORT meaning all addresses.
func addrPortArg(flagName, v string) (netip.AddrPort, error) {
	if strings.HasPrefix(v, ":") {
		v = "0.0.0.0" + v
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil {
		return ap, usageErrorf("--%s %q: want ADDR:PORT (e.g. 127.0.0.1:5060)", flagName, v)
	}
	return ap, nil
}

// openKeyLog opens a Wireshark key log for appending (or truncating),
// created 0600 (its lines are secrets). An empty path is no key log: a nil
// writer. The returned close function is always safe to call.
func openKeyLog(path string, truncate bool) (io.Writer, func() error, error) {
	if path == "" {
		return nil, func() error { return nil }, nil
	}
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if truncate {
		flags = os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, func() error { return nil }, fmt.Errorf("--keylog: %w", err)
	}
	return f, f.Close, nil
}

// The --modes help of the two ends: what each offers or accepts.
const (
	modesUsageUE = "sec-agree modes (mod=) to offer, most preferred first: UDP-enc-tun (ESP in UDP, crosses NATs, no privilege), " +
		"trans and tun (plain ESP, IP protocol 50: transport or tunnel mode; CAP_NET_RAW; no NAT may be in the way), " +
		"UDP-enc-trans (imsec's extension: ESP in UDP, transport mode). A mode this process cannot carry is left out, with a warning"
	modesUsagePCSCF = "sec-agree modes (mod=) to accept, most preferred first: UDP-enc-tun (ESP in UDP, crosses NATs, no privilege), " +
		"trans and tun (plain ESP, IP protocol 50: transport or tunnel mode; CAP_NET_RAW, else dropped with a warning), UDP-enc-trans (imsec's extension: ESP in UDP, transport mode). " +
		"A UE seen behind a NAT (Via differs from its source) never gets plain ESP"
)

// modesArg parses a --modes value (sip.ParseModes) into a usage error on failure.
func modesArg(v string) ([]string, error) {
	ms, err := sip.ParseModes(v)
	if err != nil {
		return nil, usageErrorf("--modes %q: %v", v, err)
	}
	return ms, nil
}
