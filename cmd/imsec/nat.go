package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/imsec/imsec/tun/nat"
)

func init() {
	register(command{
		name:  "nat",
		short: "run a userspace UDP NAT (RFC 4787 behaviours) in front of a UE",
		run:   runNAT,
	})
}

const natSynopsis = `nat --forward INSIDE=DEST [--forward ...] [flags]

A userspace UDP NAT, so NAT traversal can be shown without a router or root.
A UE sends to an INSIDE address; the NAT relays to DEST from a mapped port on
the --outside address, and relays replies back. Mappings follow RFC 4787:
endpoint-independent or address-and-port-dependent mapping and filtering; a
mapping lives --timeout after its last outbound packet, then the next packet
gets a new outside port (the UE sees NAT rebinding). Mapping events are logged
on stderr; counters are printed on exit (Ctrl-C).

Example: a UE behind the NAT talks to a P-CSCF at 127.0.0.1 (SIP 5060, ESP 4500)
  imsec nat --outside 127.0.0.1 \
    --forward 127.0.0.3:5060=127.0.0.1:5060 --forward 127.0.0.3:4500=127.0.0.1:4500
  imsec ue --pcscf 127.0.0.3:5060 ...`

func runNAT(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("nat", natSynopsis, stderr)
	var forwards multiFlag
	fs.Var(&forwards, "forward", "INSIDE=DEST: relay what arrives at INSIDE (ip:port) to DEST (ip:port); repeatable, at least one")
	outside := fs.String("outside", "127.0.0.1", "the NAT's public address: outside ports are bound here")
	mapping := fs.String("mapping", "endpoint-independent", "mapping behaviour: endpoint-independent (eim) or address-and-port-dependent (apdm)")
	filtering := fs.String("filtering", "address-and-port-dependent", "filtering behaviour: endpoint-independent (eif) or address-and-port-dependent (apdf)")
	timeout := fs.Duration("timeout", nat.DefaultTimeout, "mapping lifetime after the last outbound packet")
	inRefresh := fs.Bool("inbound-refresh", false, "let inbound packets refresh a mapping too")
	stats := fs.Duration("stats", 0, "print counters at this interval (0: only on exit)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	cfg := nat.Config{Timeout: *timeout, InboundRefresh: *inRefresh}
	var err error
	if cfg.Outside, err = netip.ParseAddr(*outside); err != nil {
		return usageErrorf("--outside: %v", err)
	}
	if cfg.Mapping, err = nat.ParseBehaviour(*mapping); err != nil {
		return usageErrorf("--mapping: %v", err)
	}
	if cfg.Filtering, err = nat.ParseBehaviour(*filtering); err != nil {
		return usageErrorf("--filtering: %v", err)
	}
	if *timeout <= 0 {
		return usageErrorf("--timeout must be positive, got %v", *timeout)
	}
	if *stats < 0 {
		return usageErrorf("--stats must not be negative")
	}
	if len(forwards) == 0 {
		return usageErrorf("at least one --forward INSIDE=DEST is required")
	}
	for _, f := range forwards {
		in, dest, ok := strings.Cut(f, "=")
		if !ok {
			return usageErrorf("--forward %q: want INSIDE=DEST", f)
		}
		var fw nat.Forward
		if fw.Inside, err = netip.ParseAddrPort(in); err != nil {
			return usageErrorf("--forward %q: inside: %v", f, err)
		}
		if fw.Destination, err = netip.ParseAddrPort(dest); err != nil {
			return usageErrorf("--forward %q: destination: %v", f, err)
		}
		cfg.Forwards = append(cfg.Forwards, fw)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	n, err := nat.New(cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	ins := n.InsideAddrs()
	for i, f := range cfg.Forwards {
		fmt.Fprintf(stdout, "nat: %v -> %v (outside %v, mapping %v, filtering %v, timeout %v)\n",
			ins[i], f.Destination, cfg.Outside, cfg.Mapping, cfg.Filtering, cfg.Timeout)
	}
	var tick <-chan time.Time
	if *stats > 0 {
		t := time.NewTicker(*stats)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			printNATCounters(stdout, n.Counters())
			return nil
		case <-tick:
			printNATCounters(stdout, n.Counters())
		}
	}
}

func printNATCounters(w io.Writer, c nat.Counters) {
	fmt.Fprintf(w, "nat: out %d in %d filtered %d no-route %d send-errors %d mappings active %d created %d expired %d\n",
		c.Out, c.In, c.Filtered, c.NoRoute, c.SendErrors, c.MappingsActive, c.MappingsCreated, c.MappingsExpired)
}
