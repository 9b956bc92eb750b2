package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/akakeys/hss/pgstore"
)

// Bulk provisioning: imsec sub import (a CSV in one transaction) and imsec
// sub gen (a CSV of a numbered test range).

const csvFormatHelp = `The CSV (RFC 4180, comma-separated) starts with a header row naming its
columns, in any order: impi, impu (several separated by spaces, the default
first), k, op or opc (one of the two), and optionally amf (default 8000) and
sqn (the last SQN used with the USIM, default 000000000000); keys in hex.
For example:
  impi,impu,k,op,amf,sqn
  alice@ims.example,sip:alice@ims.example tel:+15550100,465b5ce8b199b49faa5f0a2ee238a6bc,cdc202d5123e20f62b6d676ac72cb318,8000,000000000000
`

func subImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := subFlagSet("import", "sub import --db FILE [--quiet] CSV",
		`Provision every subscriber of a CSV file in one transaction: all of them or,
at the first bad row, none, with the error naming its line. An IMPI or IMPU
that appears twice in the file, or is in the database already, is an error
at its line. CSV "-" reads standard input. 100,000 subscribers take a few
seconds, during which other processes' writes to the database (vectors
drawn by a running HSS) wait for it. Progress goes to standard error.

`+csvFormatHelp+`
Example:
  imsec sub gen --count 100000 --domain ims.example --out ues.csv
  imsec sub import --db hss.db ues.csv
`, stdout)
	db := fs.String("db", "", "subscriber database `FILE` (created with mode 0600 if it does not exist)")
	quiet := fs.Bool("quiet", false, "no progress on standard error")
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	if err := requireDB(*db); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErrorf("want one CSV file (or - for standard input), got %d arguments", fs.NArg())
	}
	name := fs.Arg(0)
	start := time.Now()
	rows, err := readCSVFile(name)
	if err != nil {
		return err
	}
	subs := make([]hss.Subscriber, len(rows))
	impus := 0
	for i, r := range rows {
		subs[i] = r.Sub
		impus += len(r.Sub.IMPUs)
	}
	progress := func(done int) {
		fmt.Fprintf(stderr, "imsec sub import: %d/%d subscribers\n", done, len(subs))
	}
	if *quiet || len(subs) < 10000 {
		progress = nil
	}

	store, err := openSubDB(ctx, *db, false)
	if err != nil {
		return err
	}
	defer store.Close()
	bulk, ok := store.(bulkStore)
	if !ok {
		return fmt.Errorf("--db %s: this store cannot import in one transaction; nothing imported", pgstore.Redact(*db))
	}
	if err := bulk.AddAll(ctx, subs, progress); err != nil {
		var be *hss.BatchError
		if errors.As(err, &be) {
			return fmt.Errorf("%s line %d: %w; nothing imported", name, rows[be.Index].Line, be.Err)
		}
		return fmt.Errorf("%s: %w; nothing imported", name, err)
	}
	fmt.Fprintf(stdout, "imported %d subscribers (%d IMPUs) from %s into %s in %.1f s\n",
		len(subs), impus, name, pgstore.Redact(*db), time.Since(start).Seconds())
	return nil
}

// bulkStore is a store that adds a batch in one transaction (SQLite,
// PostgreSQL).
type bulkStore interface {
	AddAll(ctx context.Context, subs []hss.Subscriber, progress func(done int)) error
}

// readCSVFile reads a provisioning CSV from name ("-": standard input).
// Problems with its content are usage errors (exit 2), with the line.
func readCSVFile(name string) ([]hss.CSVRow, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("%w; nothing imported", err)
		}
		defer f.Close()
		r = f
	}
	rows, err := hss.ReadCSV(r)
	var ce *hss.CSVError
	switch {
	case errors.As(err, &ce) && ce.Line > 0:
		return nil, usageErrorf("%s line %d: %v; nothing imported", name, ce.Line, ce.Err)
	case errors.As(err, &ce):
		return nil, usageErrorf("%s: %v; nothing imported", name, ce.Err)
	case err != nil:
		return nil, fmt.Errorf("%s: %w; nothing imported", name, err)
	case len(rows) == 0:
		return nil, usageErrorf("%s has a header but no subscribers; nothing imported", name)
	}
	return rows, nil
}

func subGen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := subFlagSet("gen", "sub gen --count N --domain D [--prefix P] [--start N] [--k HEX] [--op HEX | --opc HEX] [--amf HEX] [--seed S] [--out FILE]",
		`Write a CSV for 'imsec sub import' with a numbered test range: subscriber i
(--start, --start+1, ...) has IMPI P + i in at least 6 digits + "@" + D
(ue000001@ims.example), the IMPU sip: + IMPI, AMF 8000 and SQN 0. The
output is the same for the same flags, so a load generator can compute any
subscriber's keys again instead of reading the file.

Keys not given are derived from --seed (HMAC-SHA256, first 16 bytes):
  K  = HMAC-SHA256(key = seed, "imsec sub gen K " + IMPI), per subscriber
  OP = HMAC-SHA256(key = seed, "imsec sub gen OP"), for all (unless --op/--opc)
for instance, with the default seed:
  printf %s "imsec sub gen K ue000001@ims.example" | openssl dgst -sha256 -hmac imsec-test | awk '{print substr($NF, 1, 32)}'
These are test keys: anyone who knows the seed has every K. (Go code can
use hss.TestRange or hss.DeriveTestK.)

`+csvFormatHelp+`
Example:
  imsec sub gen --count 100000 --domain ims.example --out ues.csv
  imsec sub gen --count 10 --domain lab.example --prefix cpe --start 100 \
    --k 465b5ce8b199b49faa5f0a2ee238a6bc --op cdc202d5123e20f62b6d676ac72cb318
`, stdout)
	count := fs.Int("count", 0, "number of subscribers, 1 to 10000000 (required)")
	domain := fs.String("domain", "", "domain of the IMPIs and IMPUs, e.g. ims.example (required)")
	prefix := fs.String("prefix", "ue", "IMPI user part before the number")
	start := fs.Int("start", 1, "number of the first subscriber")
	seed := fs.String("seed", hss.DefaultTestSeed, "secret the keys not given are derived from")
	k := fs.String("k", "", "K for every subscriber, 16 bytes hex (default: derived per IMPI from --seed)")
	op := fs.String("op", "", "OP for every subscriber, 16 bytes hex (default: derived from --seed)")
	opc := fs.String("opc", "", "OPc for every subscriber, 16 bytes hex, instead of --op")
	amf := fs.String("amf", "8000", "AMF, 2 bytes hex")
	out := fs.String("out", "", "write to `FILE` (created with mode 0600; must not exist) instead of standard output")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *count == 0 || *domain == "" {
		return usageErrorf("--count and --domain are required")
	}
	r := hss.TestRange{Prefix: *prefix, Domain: *domain, Start: *start, Count: *count, Seed: *seed, AMF: new(akakeys.AMF)}
	if err := hexFields(hexField{"amf", *amf, r.AMF[:]}); err != nil {
		return err
	}
	if *k != "" {
		r.K = new(akakeys.K)
		if err := hexFields(hexField{"k", *k, r.K[:]}); err != nil {
			return err
		}
	}
	switch {
	case *op != "" && *opc != "":
		return usageErrorf("give --op or --opc, not both")
	case *op != "":
		r.OP = new(akakeys.OP)
		if err := hexFields(hexField{"op", *op, r.OP[:]}); err != nil {
			return err
		}
	case *opc != "":
		r.OPc = new(akakeys.OPc)
		if err := hexFields(hexField{"opc", *opc, r.OPc[:]}); err != nil {
			return err
		}
	}
	if err := r.Check(); err != nil {
		return usageErrorf("%v", err)
	}
	if r.K == nil || (r.OP == nil && r.OPc == nil) {
		fmt.Fprintf(stderr, "imsec sub gen: keys not given are derived from the seed: test keys only, anyone with the seed has them\n")
	}
	if *out == "" {
		return r.WriteCSV(stdout)
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := r.WriteCSV(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", *out, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", *out, err)
	}
	fmt.Fprintf(stdout, "wrote %d subscribers (%s to %s) to %s\n", r.Count, r.IMPI(r.Start), r.IMPI(r.Start+r.Count-1), *out)
	return nil
}
