package main

import (
	"context"
	"fmt"
	"io"

	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/akakeys/hss/cx"
	"github.com/imsec/imsec/observe"
)

func init() {
	register(command{
		name:  "hss",
		short: "run the HSS as a Diameter Cx server (TS 29.228/29.229) over the subscriber database",
		run:   runHSS,
	})
}

const hssSynopsis = `hss --db FILE|URL [--listen ADDR:3868] [--origin-host H] [--origin-realm R] [flags]

A home subscriber server on Diameter Cx (TS 29.228, TS 29.229) over TCP,
for an I-/S-CSCF such as Kamailio's ims_icscf/ims_scscf or 'imsec pcscf
--hss': CER/CEA, DWR/DWA, DPR/DPA; MAR/MAA with Digest-AKAv1-MD5 vectors
(SIP-Number-Auth-Items honoured, resynchronisation with RAND||AUTS);
UAR/UAA, SAR/SAA with the User-Data XML, LIR/LIA. The SQN is durable in
the database, reserved --sqn-reserve at a time ('imsec sub' manages the
subscribers, also while this runs: changes are seen at the next request);
the S-CSCF assigned to each IMPU is kept in memory only.

Example:
  imsec sub add --db hss.db --impi alice@a.example --impu sip:alice@a.example \
    --k 465b5ce8b199b49faa5f0a2ee238a6bc --op cdc202d5123e20f62b6d676ac72cb318
  imsec hss --db hss.db --listen 127.0.0.1:3868 --origin-host hss.a.example --origin-realm a.example`

func runHSS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("hss", hssSynopsis, stderr)
	db := fs.String("db", "", dbFlagHelp+" (required)")
	listen := fs.String("listen", "0.0.0.0:3868", "TCP address for Diameter")
	originHost := fs.String("origin-host", "hss.localdomain", "this HSS's Origin-Host (a DiameterIdentity)")
	originRealm := fs.String("origin-realm", "localdomain", "this HSS's Origin-Realm")
	scscf := fs.String("scscf", "", "S-CSCF SIP URI named in UAA for a first registration (default: none, the UAA carries Server-Capabilities)")
	reserve := fs.Int("sqn-reserve", hss.DefaultReserve, "SQNs reserved per subscriber with one durable database write, then issued from memory "+
		"(TS 33.102 Annex C SEQ steps; a restart skips at most N-1, which USIMs accept); 1 writes every vector, "+
		"for UEs served in turn by several HSS processes on one database")
	verbose := fs.Bool("v", false, "log connection events to stderr")
	obs := addObsFlags(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if err := obs.check(*verbose); err != nil {
		return err
	}
	if *db == "" {
		return usageErrorf("--db is required (create it with 'imsec sub add --db FILE ...')")
	}
	if *reserve < 1 || *reserve > hss.MaxReserve {
		return usageErrorf("--sqn-reserve: want 1 to %d, got %d", hss.MaxReserve, *reserve)
	}
	if *originHost == "" || *originRealm == "" {
		return usageErrorf("--origin-host and --origin-realm must not be empty")
	}
	store, err := openServedStore(ctx, *db)
	if err != nil {
		return err
	}
	defer store.Close()
	log := obs.logger(stderr)
	h, err := hss.New(store, hss.Config{Logger: log, Reserve: *reserve})
	if err != nil {
		return err
	}
	var backend cx.Backend = h
	var hssMetrics *observe.HSS
	if obs.on() {
		hssMetrics = observe.NewHSS(h)
		backend = hssMetrics
	}
	srv, err := cx.NewServer(cx.ServerConfig{Listen: *listen, OriginHost: *originHost, OriginRealm: *originRealm, HSS: backend, ServerName: *scscf, Logger: log})
	if err != nil {
		return err
	}
	if obs.on() {
		reg, err := newRegistry(hssMetrics, observe.Cx(srv))
		if err != nil {
			return err
		}
		stop, err := obs.serve(ctx, stdout, log, reg, func() any { return observe.HSSStatus(*originHost, srv) })
		if err != nil {
			return err
		}
		defer stop()
	}
	fmt.Fprintf(stdout, "HSS %s (realm %s): Diameter Cx on %v (TCP)\n", *originHost, *originRealm, srv.Addr())
	err = srv.Serve(ctx)
	c := srv.Counters()
	fmt.Fprintf(stdout, "HSS %s: stopping; %d connections, MAR %d UAR %d SAR %d LIR %d, DWR %d DPR %d; refused: user unknown %d, identities don't match %d, missing AVP %d, invalid AVP %d, auth rejected %d, failed %d; dropped: framing %d, malformed %d, unsupported %d, before CER %d\n",
		*originHost, c.Connections, c.MAR, c.UAR, c.SAR, c.LIR, c.DWR, c.DPR, c.UserUnknown, c.IdentityMismatch, c.MissingAVP, c.InvalidAVP, c.AuthRejected, c.Failed, c.Framing, c.Malformed, c.Unsupported, c.BeforeCER)
	return err
}
