package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

func init() {
	register(command{
		name:  "sub",
		usage: "sub add|list|show|del|import|gen [flags]",
		short: "manage the subscribers of the HSS database (SQLite or PostgreSQL)",
		run:   runSub,
	})
}

const subHelp = `Usage: imsec sub add|list|show|del|import|gen [flags]

Manage the subscribers of the HSS: an SQLite file (created with mode 0600)
holding, per private identity (IMPI), its public identities (IMPUs), the
USIM/ISIM secrets K and OP or OPc (TS 35.206), the AMF, and the SQN state
(TS 33.102 Annex C: SQN = SEQ || IND, IND of 5 bits). The registrar draws
vectors from the same file; it reserves SQNs 64 at a time (by default), so the SQN
shown is the top of the range it reserved last, up to 63 steps above the last
SQN it issued (a restart skips the rest, which the USIM accepts).

  add   provision a subscriber (--impu repeatable, first one the default):
    imsec sub add --db hss.db --impi alice@ims.example \
      --impu sip:alice@ims.example --impu tel:+15550100 \
      --k 465b5ce8b199b49faa5f0a2ee238a6bc --op cdc202d5123e20f62b6d676ac72cb318

  list  one line per subscriber (or --json); keys appear only as
        fingerprints, never in full:
    imsec sub list --db hss.db

  show  one subscriber in detail:
    imsec sub show --db hss.db --impi alice@ims.example

  del   remove a subscriber and its IMPUs:
    imsec sub del --db hss.db --impi alice@ims.example

  import  provision every subscriber of a CSV file in one transaction,
        all or nothing (the error names the line of the first bad row):
    imsec sub import --db hss.db ues.csv

  gen   write such a CSV for a numbered test range, with keys given or
        derived from a seed so that a load generator can compute them:
    imsec sub gen --count 100000 --domain ims.example --out ues.csv

` + csvFormatHelp + `
Key fingerprints are "sha256:" and the first 8 hex digits of SHA-256 over the
raw key, so you can check a key you hold without the tool printing it:
  printf %s 465b5ce8b199b49faa5f0a2ee238a6bc | xxd -r -p | sha256sum | cut -c1-8

Keys given on the command line are visible to other local users (ps) and in
shell history; provision from a private shell or script.

Every action checks an existing database file before it uses it, and
refuses, changing nothing, one that is empty, not SQLite, another
application's, of an unknown schema version, or damaged (PRAGMA
integrity_check); only add and import create a file, and only one that does
not exist.

Exit status: 0 success; 2 bad usage (flags, hex, identities, a bad row of an
import file); 1 otherwise
(unknown subscriber, IMPI or IMPU already present, a refused database, other
database errors).

--db may also be a PostgreSQL database, as a postgres:// (or postgresql://)
URL, e.g. postgres://hss@db.example/imsec?sslmode=verify-full, which any
number of 'imsec hss' and 'imsec pcscf' processes can share: they draw each
subscriber's SQNs from one counter. The subscribers are in the schema imsec,
which the first 'sub add' creates; a schema imsec that is not imsec's, or
of a newer version, is refused. Give the password in PGPASSWORD or
~/.pgpass rather than in the URL, where ps shows it; errors never do.

Run 'imsec sub ACTION --help' for the flags of one action.
`

func runSub(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageErrorf("missing action: want add, list, show, del, import or gen (see 'imsec sub --help')")
	}
	var err error
	switch action := args[0]; action {
	case "-h", "-help", "--help", "help":
		io.WriteString(stdout, subHelp)
		return flag.ErrHelp
	case "add":
		err = subAdd(ctx, args[1:], stdout)
	case "list", "ls":
		err = subList(ctx, args[1:], stdout)
	case "show":
		err = subShow(ctx, args[1:], stdout)
	case "del", "delete", "rm":
		err = subDel(ctx, args[1:], stdout)
	case "import":
		err = subImport(ctx, args[1:], stdout, stderr)
	case "gen":
		err = subGen(ctx, args[1:], stdout, stderr)
	default:
		return usageErrorf("unknown action %q: want add, list, show, del, import or gen", action)
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return err
	case errors.Is(err, errUsage):
		return usageErrorf("%s: %s", args[0], trimUsage(err))
	}
	return fmt.Errorf("%s: %w", args[0], err)
}

// subFlagSet is a flag set whose --help prints the synopsis, a description
// with an example, and the flags, on w.
func subFlagSet(action, synopsis, about string, w io.Writer) *flag.FlagSet {
	fs := newFlagSet("sub "+action, synopsis, w)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: imsec %s\n\n%s\nFlags:\n", synopsis, about)
		fs.PrintDefaults()
	}
	return fs
}

func requireDB(db string) error {
	if db == "" {
		return usageErrorf("--db FILE is required")
	}
	return nil
}

func openSubDB(ctx context.Context, db string, mustExist bool) (subscriberStore, error) {
	return openStore(ctx, db, !mustExist)
}

func subAdd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := subFlagSet("add",
		"sub add --db FILE --impi ID --impu URI [--impu URI ...] --k HEX (--op HEX | --opc HEX) [--amf HEX] [--sqn HEX]",
		`Provision a subscriber. OPc is stored derived from OP when --op is given;
the database remembers which of the two was provisioned. --sqn is the last
SQN already used with this USIM (000000000000: none yet); the next vector
takes SEQ+1.

Example:
  imsec sub add --db hss.db --impi alice@ims.example \
    --impu sip:alice@ims.example --impu tel:+15550100 \
    --k 465b5ce8b199b49faa5f0a2ee238a6bc --op cdc202d5123e20f62b6d676ac72cb318
`, stdout)
	db := fs.String("db", "", "subscriber database: an SQLite `FILE` (created with mode 0600 if it does not exist), or a postgres:// URL")
	impi := fs.String("impi", "", "private identity, e.g. alice@ims.example (required)")
	var impus multiFlag
	fs.Var(&impus, "impu", "public identity `URI` (sip:, sips: or tel:); repeatable, at least one; the first is the default")
	keys := addSubscriberFlags(fs)
	amfF := fs.String("amf", "8000", "authentication management field AMF, 2 bytes hex")
	sqnF := fs.String("sqn", "000000000000", "last SQN used, 6 bytes hex")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if err := requireDB(*db); err != nil {
		return err
	}
	if *impi == "" {
		return usageErrorf("--impi is required")
	}
	if len(impus) == 0 {
		return usageErrorf("at least one --impu is required")
	}
	sub := hss.Subscriber{IMPI: *impi, IMPUs: impus}
	k, op, opc, err := keys.keys()
	if err != nil {
		return err
	}
	sub.K = k
	if op != nil {
		sub.SetOP(*op)
	} else {
		sub.OPc = opc
	}
	if err := hexFields(hexField{"amf", *amfF, sub.AMF[:]}, hexField{"sqn", *sqnF, sub.SQN[:]}); err != nil {
		return err
	}
	if err := sub.Validate(); err != nil {
		// Bad identities are bad input: exit 2, before touching the file.
		return usageErrorf("%s", strings.TrimPrefix(err.Error(), "hss: "))
	}

	store, err := openSubDB(ctx, *db, false)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.Add(ctx, sub); err != nil {
		return err
	}
	keyNote := "OPc " + hss.Fingerprint(sub.OPc[:])
	if sub.OP != nil {
		keyNote = "OP " + hss.Fingerprint(sub.OP[:]) + " (OPc derived)"
	}
	fmt.Fprintf(stdout, "added %s: %s, K %s, %s, AMF %x, SQN %x\n",
		sub.IMPI, strings.Join(sub.IMPUs, " "), hss.Fingerprint(sub.K[:]), keyNote, sub.AMF[:], sub.SQN[:])
	return nil
}

// indBitsFlag adds --ind-bits, used to split SQN into SEQ and IND for display.
func indBitsFlag(fs *flag.FlagSet) *uint {
	return fs.Uint("ind-bits", akakeys.DefaultIndBits, "IND length in bits, to show SQN as SEQ/IND (TS 33.102 Annex C)")
}

func indScheme(bits uint) (akakeys.SQNScheme, error) {
	if bits == 0 || bits > hss.MaxIndBits {
		return akakeys.SQNScheme{}, usageErrorf("--ind-bits: want 1 to %d, got %d", hss.MaxIndBits, bits)
	}
	return akakeys.SQNScheme{IndBits: bits}, nil
}

func subList(ctx context.Context, args []string, stdout io.Writer) error {
	fs := subFlagSet("list", "sub list --db FILE [--json] [--ind-bits N]",
		`List the subscribers, sorted by IMPI: IMPUs, which of OP or OPc was
provisioned, key fingerprints (never the keys), AMF, the last SQN issued as
hex and as SEQ/IND, and the re-synchronisations counted so far.

Example:
  imsec sub list --db hss.db --json
`, stdout)
	db := fs.String("db", "", "subscriber database: an SQLite `FILE` or a postgres:// URL (must exist)")
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	indBits := indBitsFlag(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if err := requireDB(*db); err != nil {
		return err
	}
	scheme, err := indScheme(*indBits)
	if err != nil {
		return err
	}
	store, err := openSubDB(ctx, *db, true)
	if err != nil {
		return err
	}
	defer store.Close()
	subs, err := store.List(ctx)
	if err != nil {
		return err
	}
	views := make([]hss.SubscriberView, len(subs))
	for i, s := range subs {
		views[i] = s.View(scheme)
	}
	if *asJSON {
		return writeJSON(stdout, views)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMPI\tIMPUS\tK\tOP/OPC\tAMF\tSQN\tSEQ/IND\tRESYNCS\tLAST RESYNC")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\n",
			v.IMPI, strings.Join(v.IMPUs, ","), v.KFingerprint, keyColumn(v), v.AMF, v.SQN, v.SEQ, v.IND, v.Resyncs, lastResync(v))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(views) == 0 {
		fmt.Fprintln(stdout, "(no subscribers)")
	}
	return nil
}

func keyColumn(v hss.SubscriberView) string {
	if v.KeyKind == "OP" {
		return "OP " + v.OPFingerprint
	}
	return "OPc " + v.OPcFingerprint
}

func lastResync(v hss.SubscriberView) string {
	if v.LastResync == nil {
		return "never"
	}
	return v.LastResync.Format(time.RFC3339)
}

func subShow(ctx context.Context, args []string, stdout io.Writer) error {
	fs := subFlagSet("show", "sub show --db FILE --impi ID [--json] [--ind-bits N]",
		`Show one subscriber, keys as fingerprints only.

Example:
  imsec sub show --db hss.db --impi alice@ims.example
`, stdout)
	db := fs.String("db", "", "subscriber database: an SQLite `FILE` or a postgres:// URL (must exist)")
	impi := fs.String("impi", "", "private identity (required)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	indBits := indBitsFlag(fs)
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if err := requireDB(*db); err != nil {
		return err
	}
	if *impi == "" {
		return usageErrorf("--impi is required")
	}
	scheme, err := indScheme(*indBits)
	if err != nil {
		return err
	}
	store, err := openSubDB(ctx, *db, true)
	if err != nil {
		return err
	}
	defer store.Close()
	sub, err := store.Get(ctx, *impi)
	if err != nil {
		return err
	}
	v := sub.View(scheme)
	if *asJSON {
		return writeJSON(stdout, v)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "IMPI:\t%s\n", v.IMPI)
	for i, u := range v.IMPUs {
		note := ""
		if i == 0 {
			note = " (default)"
		}
		fmt.Fprintf(tw, "IMPU:\t%s%s\n", u, note)
	}
	fmt.Fprintf(tw, "K:\t%s\n", v.KFingerprint)
	if v.KeyKind == "OP" {
		fmt.Fprintf(tw, "OP:\t%s (provisioned)\n", v.OPFingerprint)
		fmt.Fprintf(tw, "OPc:\t%s (derived from OP)\n", v.OPcFingerprint)
	} else {
		fmt.Fprintf(tw, "OPc:\t%s (provisioned)\n", v.OPcFingerprint)
	}
	fmt.Fprintf(tw, "AMF:\t%s\n", v.AMF)
	fmt.Fprintf(tw, "SQN:\t%s (SEQ %d, IND %d of %d bits)\n", v.SQN, v.SEQ, v.IND, *indBits)
	fmt.Fprintf(tw, "Resyncs:\t%d\n", v.Resyncs)
	fmt.Fprintf(tw, "Last resync:\t%s\n", lastResync(v))
	return tw.Flush()
}

func subDel(ctx context.Context, args []string, stdout io.Writer) error {
	fs := subFlagSet("del", "sub del --db FILE --impi ID",
		`Delete a subscriber and its IMPUs. Its SQN state goes with it: a
subscriber provisioned again later must get the USIM's SQN (--sqn), or the
first challenges end in a re-synchronisation.

Example:
  imsec sub del --db hss.db --impi alice@ims.example
`, stdout)
	db := fs.String("db", "", "subscriber database: an SQLite `FILE` or a postgres:// URL (must exist)")
	impi := fs.String("impi", "", "private identity (required)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if err := requireDB(*db); err != nil {
		return err
	}
	if *impi == "" {
		return usageErrorf("--impi is required")
	}
	store, err := openSubDB(ctx, *db, true)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := store.Delete(ctx, *impi); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deleted %s\n", *impi)
	return nil
}
