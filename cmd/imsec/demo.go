package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/imsec/imsec/sip"
	"github.com/imsec/imsec/sip/demo"
)

func init() {
	register(command{
		name:  "demo",
		short: "run the whole system on loopback: two domains, a UE behind a NAT, registration, a call with media, rekey",
		run:   runDemo,
	})
}

const demoSynopsis = `demo [--ipv6] [--json] [--keylog FILE] [--pcap FILE] [--mermaid FILE] [--duration D]

Runs the seed's demonstrator in one process on loopback, with no root and no
setup: HSS A and B, P-CSCF A and B (peered), UE A behind a userspace NAT and
UE B with a routable address. Both UEs register (the ladders of the seed's
Figures 3 and 2 are printed as they happen), get inner addresses over their
tunnels and a separate media tunnel each, exchange traffic inside them; UE A
calls UE B with synthetic audio and video relayed by both P-CSCFs for
--duration and both print a media report; UE A re-registers once (SA
rollover) and both de-register. Exits 0 when every step passed, non-zero
naming the step that failed. --ipv6 runs it all on IPv6: outside on ::1
(the NAT included) and inside the tunnels, where each P-CSCF leases from an
IPv6 pool over DHCPv6 and SIP and media run over those addresses.

--pcap records the access side: every datagram both UEs' signalling and
media ESP-in-UDP sockets send and receive (ESP and NAT keepalives only; the
unprotected first REGISTER and its 401, sent before any SA exists, and the
plain P-CSCF-to-P-CSCF leg are not in it). With --keylog, Wireshark decrypts
it: load the key log as the ESP SA table (or pass each line to tshark as
-o "uat:esp_sa:LINE"), enable ESP decryption, and decode as UDPENCAP the
ESP ports the demo prints for P-CSCF B and for the NAT's inside.

--mermaid writes the ladder's steps as a Mermaid sequenceDiagram (the text
of a ` + "```mermaid" + ` block, which GitHub and GitLab draw): each message an
arrow between its parties, each action a note over its party; the file
stops growing at 40,000 bytes (Mermaid's limit is 50,000) with a note of
what was left out. It is written even if a step fails.`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", demoSynopsis, stderr)
	asJSON := fs.Bool("json", false, "print a JSON summary on stdout (the ladder goes to stderr)")
	keylog := fs.String("keylog", "", "write every SA to this file in Wireshark's esp_sa format (secrets!)")
	pcapPath := fs.String("pcap", "", "write both UEs' signalling and media ESP traffic to this pcap file (opens decrypted in Wireshark with --keylog)")
	duration := fs.Duration("duration", 3*time.Second, "how long the call from UE A to UE B sends media")
	mermaid := fs.String("mermaid", "", "write the run's flows (the ladder's steps) to this `FILE` as a Mermaid sequence diagram")
	ipv6 := fs.Bool("ipv6", false, "IPv6 outside (loopback ::1) and inside the tunnels (DHCPv6 from IPv6 pools)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *duration <= 0 || *duration > 10*time.Minute {
		return usageErrorf("--duration %v: want more than 0 and at most 10m", *duration)
	}
	cfg := demo.Config{Out: stdout, CallDuration: *duration, IPv6: *ipv6}
	if *asJSON {
		cfg.Out = stderr
	}
	kl, closeKL, err := openKeyLog(*keylog, true)
	if err != nil {
		return err
	}
	defer closeKL()
	cfg.KeyLog = kl
	var capFile *os.File
	var capBuf *bufio.Writer
	if *pcapPath != "" {
		if capFile, err = os.OpenFile(*pcapPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600); err != nil {
			return fmt.Errorf("--pcap: %w", err)
		}
		defer capFile.Close()
		capBuf = bufio.NewWriter(capFile)
		cfg.Capture = capBuf
	}
	var diagram *sip.SequenceDiagram
	var mermaidFile *os.File
	if *mermaid != "" {
		if mermaidFile, err = os.Create(*mermaid); err != nil {
			return fmt.Errorf("--mermaid: %w", err)
		}
		defer mermaidFile.Close()
		diagram = &sip.SequenceDiagram{}
		cfg.Events = diagram.Event
	}
	cliLogger(stderr, false)
	sum, err := demo.Run(ctx, cfg)
	if mermaidFile != nil {
		// Written even if a step failed: the diagram shows how far it got.
		_, merr := diagram.WriteTo(mermaidFile)
		if e := mermaidFile.Close(); merr == nil {
			merr = e
		}
		if merr != nil && err == nil {
			return fmt.Errorf("--mermaid: %w", merr)
		}
	}
	if capFile != nil {
		// Run has stopped writing; keep what it captured even if it failed.
		cerr := capBuf.Flush()
		if e := capFile.Close(); cerr == nil {
			cerr = e
		}
		if cerr != nil && err == nil {
			return fmt.Errorf("--pcap: %w", cerr)
		}
	}
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
