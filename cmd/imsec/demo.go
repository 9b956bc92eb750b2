package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/imsec/imsec/sip/demo"
)

func init() {
	register(command{
		name:  "demo",
		short: "run the whole system on loopback: two domains, a UE behind a NAT, registration, a call with media, rekey",
		run:   runDemo,
	})
}

const demoSynopsis = `demo [--json] [--keylog FILE] [--duration D]

Runs the seed's demonstrator in one process on loopback, with no root and no
setup: HSS A and B, P-CSCF A and B (peered), UE A behind a userspace NAT and
UE B with a routable address. Both UEs register (the ladders of the seed's
Figures 3 and 2 are printed as they happen), get inner addresses over their
tunnels and a separate media tunnel each, exchange traffic inside them; UE A
calls UE B with synthetic audio and video relayed by both P-CSCFs for
--duration and both print a media report; UE A re-registers once (SA
rollover) and both de-register. Exits 0 when every step passed, non-zero
naming the step that failed.`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", demoSynopsis, stderr)
	asJSON := fs.Bool("json", false, "print a JSON summary on stdout (the ladder goes to stderr)")
	keylog := fs.String("keylog", "", "write every SA to this file in Wireshark's esp_sa format (secrets!)")
	duration := fs.Duration("duration", 3*time.Second, "how long the call from UE A to UE B sends media")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *duration <= 0 || *duration > 10*time.Minute {
		return usageErrorf("--duration %v: want more than 0 and at most 10m", *duration)
	}
	cfg := demo.Config{Out: stdout, CallDuration: *duration}
	if *asJSON {
		cfg.Out = stderr
	}
	kl, err := openKeyLog(*keylog, true)
	if err != nil {
		return err
	}
	if kl != nil {
		defer kl.Close()
		cfg.KeyLog = kl
	}
	cliLogger(stderr, false)
	sum, err := demo.Run(ctx, cfg)
	if err != nil {
		return fmt.Errorf("demo failed: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	return nil
}
