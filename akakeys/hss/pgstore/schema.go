package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/imsec/imsec/akakeys/hss"
)

// application is the meta table's mark of an imsec subscriber schema.
const application = "imsec-hss"

// schemaLock is the key of the advisory lock Open holds while it checks,
// creates or upgrades the schema ("IMSEHSS" and 1).
const schemaLock int64 = 0x494d534548535301

// migrations[i] upgrades the schema from version i to i+1; %[1]s is the
// quoted schema name. Append only; never edit a migration that has shipped:
// check compares a database with wantTables, the structure they make.
var migrations = [][]string{
	// 1: subscribers and their IMPUs. Identities are COLLATE "C": matched
	// and ordered byte for byte, as the other stores do.
	{
		`CREATE TABLE %[1]s.subscriber (
			impi        text COLLATE "C" NOT NULL,
			k           bytea       NOT NULL,
			opc         bytea       NOT NULL,
			op          bytea,
			amf         bytea       NOT NULL,
			sqn         bigint      NOT NULL,
			resyncs     bigint      NOT NULL DEFAULT 0,
			last_resync timestamptz, -- NULL if never
			CONSTRAINT subscriber_pkey PRIMARY KEY (impi),
			CONSTRAINT subscriber_k_check CHECK (octet_length(k) = 16),
			CONSTRAINT subscriber_opc_check CHECK (octet_length(opc) = 16),
			CONSTRAINT subscriber_op_check CHECK (op IS NULL OR octet_length(op) = 16),
			CONSTRAINT subscriber_amf_check CHECK (octet_length(amf) = 2),
			CONSTRAINT subscriber_sqn_check CHECK (sqn BETWEEN 0 AND 281474976710655),
			CONSTRAINT subscriber_resyncs_check CHECK (resyncs >= 0)
		)`,
		`CREATE TABLE %[1]s.impu (
			impu text COLLATE "C" NOT NULL,
			impi text COLLATE "C" NOT NULL,
			pos  integer NOT NULL, -- order given at provisioning; 0 is the default IMPU
			CONSTRAINT impu_pkey PRIMARY KEY (impu),
			CONSTRAINT impu_impi_fkey FOREIGN KEY (impi) REFERENCES %[1]s.subscriber (impi) ON DELETE CASCADE,
			CONSTRAINT impu_impi_pos_key UNIQUE (impi, pos)
		)`,
	},
}

// metaTable is created with the schema and outlives migrations.
const metaTable = `CREATE TABLE %[1]s.meta (
	application text    NOT NULL,
	version     integer NOT NULL
)`

// column and constraint describe a table as check reads it from pg_catalog.
type column struct {
	name, typ, collation string
	notNull              bool
}

type constraint struct {
	name    string
	typ     string   // pg_constraint.contype: p, u, f, c
	columns []string // key columns (p, u, f)
}

type table struct {
	columns     []column
	constraints []constraint
}

// wantTables is what the migrations make, for the current version.
var wantTables = map[string]table{
	"meta": {columns: []column{
		{"application", "text", "default", true},
		{"version", "integer", "", true},
	}},
	"subscriber": {
		columns: []column{
			{"impi", "text", "C", true},
			{"k", "bytea", "", true},
			{"opc", "bytea", "", true},
			{"op", "bytea", "", false},
			{"amf", "bytea", "", true},
			{"sqn", "bigint", "", true},
			{"resyncs", "bigint", "", true},
			{"last_resync", "timestamp with time zone", "", false},
		},
		constraints: []constraint{
			{"subscriber_amf_check", "c", nil},
			{"subscriber_k_check", "c", nil},
			{"subscriber_op_check", "c", nil},
			{"subscriber_opc_check", "c", nil},
			{"subscriber_pkey", "p", []string{"impi"}},
			{"subscriber_resyncs_check", "c", nil},
			{"subscriber_sqn_check", "c", nil},
		},
	},
	"impu": {
		columns: []column{
			{"impu", "text", "C", true},
			{"impi", "text", "C", true},
			{"pos", "integer", "", true},
		},
		constraints: []constraint{
			{"impu_impi_fkey", "f", []string{"impi"}},
			{"impu_impi_pos_key", "u", []string{"impi", "pos"}},
			{"impu_pkey", "p", []string{"impu"}},
		},
	},
}

// queries are the statements of one Store, for its schema.
type queries struct {
	insertSubscriber, insertIMPUs, getSubscriber, listSubscribers,
	deleteSubscriber, lookupIMPU, lockSubscriber, updateSQN string
}

const subscriberColumns = "s.impi, s.k, s.opc, s.op, s.amf, s.sqn, s.resyncs, s.last_resync"

func newQueries(schema string) queries {
	sch := pgx.Identifier{schema}.Sanitize()
	sub, impu := sch+".subscriber", sch+".impu"
	withIMPUs := "SELECT " + subscriberColumns +
		", ARRAY(SELECT u.impu FROM " + impu + " u WHERE u.impi = s.impi ORDER BY u.pos) FROM " + sub + " s"
	return queries{
		insertSubscriber: "INSERT INTO " + sub + " (impi, k, opc, op, amf, sqn, resyncs, last_resync)" +
			" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (impi) DO NOTHING",
		insertIMPUs: "INSERT INTO " + impu + " (impu, impi, pos)" +
			" SELECT t.u, $1, (t.p - 1)::integer FROM unnest($2::text[]) WITH ORDINALITY AS t(u, p)" +
			" ON CONFLICT (impu) DO NOTHING RETURNING impu",
		getSubscriber:    withIMPUs + " WHERE s.impi = $1",
		listSubscribers:  withIMPUs + ` ORDER BY s.impi COLLATE "C"`,
		deleteSubscriber: "DELETE FROM " + sub + " WHERE impi = $1",
		lookupIMPU:       "SELECT impi FROM " + impu + " WHERE impu = $1",
		lockSubscriber:   "SELECT " + subscriberColumns + " FROM " + sub + " s WHERE s.impi = $1 FOR UPDATE",
		updateSQN: "UPDATE " + sub + " SET sqn = $2, resyncs = resyncs + $3, last_resync = coalesce($4::timestamptz, last_resync)" +
			" WHERE impi = $1",
	}
}

// prepare checks the schema, creating it (unless mustExist) or upgrading
// it, in one transaction under the advisory lock.
func (s *Store) prepare(ctx context.Context, mustExist bool) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLock); err != nil {
			return dbErr(err, "opening")
		}
		version, err := s.check(ctx, tx)
		if err != nil {
			return err
		}
		if version == len(migrations) {
			return nil
		}
		if version == 0 && mustExist {
			return fmt.Errorf("pgstore: %s has no imsec subscribers (no schema %q with imsec's tables); create them with 'imsec sub add --db URL ...'",
				s.tg.name, s.schema)
		}
		return s.migrate(ctx, tx, version)
	})
}

// check reads the schema: version 0 if it is missing or empty, else the
// version of an imsec schema whose tables are as that version's migrations
// made them. Anything else is refused with ErrBadDatabase.
func (s *Store) check(ctx context.Context, tx pgx.Tx) (int, error) {
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", s.schema).Scan(&exists); err != nil {
		return 0, dbErr(err, "opening")
	}
	if !exists {
		return 0, nil
	}
	rows, err := tx.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname`, s.schema)
	if err != nil {
		return 0, dbErr(err, "opening")
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, dbErr(err, "opening")
	}
	if len(names) == 0 {
		return 0, nil // made for us by a DBA, say
	}
	if !slices.Contains(names, "meta") {
		return 0, fmt.Errorf("%w: schema %q of %s holds tables that are not imsec's (%s); check the URL, or name another schema",
			hss.ErrBadDatabase, s.schema, s.tg.name, strings.Join(names, ", "))
	}
	tables, err := s.readTables(ctx, tx)
	if err != nil {
		return 0, err
	}
	if d := diffTable(tables["meta"], wantTables["meta"]); d != "" {
		return 0, fmt.Errorf("%w: schema %q of %s has a table meta that is not imsec's (%s); check the URL, or name another schema",
			hss.ErrBadDatabase, s.schema, s.tg.name, d)
	}
	mrows, err := tx.Query(ctx, "SELECT application, version FROM "+pgx.Identifier{s.schema, "meta"}.Sanitize())
	if err != nil {
		return 0, dbErr(err, "reading the schema version")
	}
	type meta struct {
		App     string
		Version int
	}
	metas, err := pgx.CollectRows(mrows, pgx.RowToStructByPos[meta])
	if err != nil {
		return 0, dbErr(err, "reading the schema version")
	}
	switch {
	case len(metas) != 1:
		return 0, fmt.Errorf("%w: schema %q of %s: table meta has %d rows, want 1: damaged or edited by hand; restore it from a backup",
			hss.ErrBadDatabase, s.schema, s.tg.name, len(metas))
	case metas[0].App != application:
		return 0, fmt.Errorf("%w: schema %q of %s belongs to another application (%q); check the URL, or name another schema",
			hss.ErrBadDatabase, s.schema, s.tg.name, metas[0].App)
	case metas[0].Version > len(migrations):
		return 0, fmt.Errorf("%w: schema %q of %s has schema version %d, this imsec knows up to %d (upgrade imsec)",
			hss.ErrBadDatabase, s.schema, s.tg.name, metas[0].Version, len(migrations))
	case metas[0].Version < 1:
		return 0, fmt.Errorf("%w: schema %q of %s has schema version %d: damaged or edited by hand; restore it from a backup",
			hss.ErrBadDatabase, s.schema, s.tg.name, metas[0].Version)
	}
	version := metas[0].Version
	if version == len(migrations) {
		// An older version is checked by its migration, which fails on
		// tables that are not as it expects.
		for _, name := range []string{"subscriber", "impu"} {
			if d := diffTable(tables[name], wantTables[name]); d != "" {
				return 0, fmt.Errorf("%w: schema %q of %s: table %s is not as imsec made it (%s): changed by hand? restore it from a backup",
					hss.ErrBadDatabase, s.schema, s.tg.name, name, d)
			}
		}
	}
	return version, nil
}

// readTables reads the columns and constraints of the schema's tables.
func (s *Store) readTables(ctx context.Context, tx pgx.Tx) (map[string]table, error) {
	out := map[string]table{}
	rows, err := tx.Query(ctx, `SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
			coalesce(co.collname, ''), a.attnotnull
		FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_collation co ON co.oid = a.attcollation
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY c.relname, a.attnum`, s.schema)
	if err != nil {
		return nil, dbErr(err, "reading the schema")
	}
	defer rows.Close()
	for rows.Next() {
		var rel string
		var c column
		if err := rows.Scan(&rel, &c.name, &c.typ, &c.collation, &c.notNull); err != nil {
			return nil, dbErr(err, "reading the schema")
		}
		t := out[rel]
		t.columns = append(t.columns, c)
		out[rel] = t
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr(err, "reading the schema")
	}
	crows, err := tx.Query(ctx, `SELECT c.relname, k.conname, k.contype::text,
			coalesce(ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS x(n, i)
				JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.n ORDER BY x.i), '{}')
		FROM pg_constraint k
		JOIN pg_class c ON c.oid = k.conrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND k.contype IN ('p', 'u', 'f', 'c')
		ORDER BY c.relname, k.conname`, s.schema)
	if err != nil {
		return nil, dbErr(err, "reading the schema")
	}
	defer crows.Close()
	for crows.Next() {
		var rel string
		var k constraint
		if err := crows.Scan(&rel, &k.name, &k.typ, &k.columns); err != nil {
			return nil, dbErr(err, "reading the schema")
		}
		if k.typ == "c" {
			k.columns = nil
		}
		t := out[rel]
		t.constraints = append(t.constraints, k)
		out[rel] = t
	}
	if err := crows.Err(); err != nil {
		return nil, dbErr(err, "reading the schema")
	}
	return out, nil
}

// diffTable names the first difference between a table as read and as
// wanted, or returns "".
func diffTable(have, want table) string {
	if len(have.columns) == 0 {
		return "missing"
	}
	for i, w := range want.columns {
		if i >= len(have.columns) {
			return fmt.Sprintf("no column %s", w.name)
		}
		if h := have.columns[i]; h != w {
			return fmt.Sprintf("column %d is %s %s (collation %q, not null %v), want %s %s (collation %q, not null %v)",
				i+1, h.name, h.typ, h.collation, h.notNull, w.name, w.typ, w.collation, w.notNull)
		}
	}
	if len(have.columns) > len(want.columns) {
		return fmt.Sprintf("extra column %s", have.columns[len(want.columns)].name)
	}
	for _, w := range want.constraints {
		i := slices.IndexFunc(have.constraints, func(h constraint) bool { return h.name == w.name })
		if i < 0 {
			return fmt.Sprintf("no constraint %s", w.name)
		}
		if h := have.constraints[i]; h.typ != w.typ || !slices.Equal(h.columns, w.columns) {
			return fmt.Sprintf("constraint %s is of type %s on (%s), want %s on (%s)",
				w.name, h.typ, strings.Join(h.columns, ", "), w.typ, strings.Join(w.columns, ", "))
		}
	}
	return ""
}

// migrate creates the schema and its meta table if version is 0, runs the
// migrations from version on and records the version.
func (s *Store) migrate(ctx context.Context, tx pgx.Tx, version int) error {
	sch := pgx.Identifier{s.schema}.Sanitize()
	if version == 0 {
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", s.schema).Scan(&exists); err != nil {
			return dbErr(err, "opening")
		}
		if !exists {
			if _, err := tx.Exec(ctx, "CREATE SCHEMA "+sch); err != nil {
				return dbErr(err, "creating schema %q", s.schema)
			}
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(metaTable, sch)); err != nil {
			return dbErr(err, "creating the tables in schema %q", s.schema)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+sch+".meta (application, version) VALUES ($1, 0)", application); err != nil {
			return dbErr(err, "creating the tables in schema %q", s.schema)
		}
	}
	for v := version; v < len(migrations); v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.Exec(ctx, fmt.Sprintf(stmt, sch)); err != nil {
				return dbErr(err, "migrating schema %q to version %d", s.schema, v+1)
			}
		}
	}
	tag, err := tx.Exec(ctx, "UPDATE "+sch+".meta SET version = $1", len(migrations))
	if err != nil {
		return dbErr(err, "setting the schema version")
	}
	if tag.RowsAffected() != 1 {
		return dbErr(errors.New("no meta row"), "setting the schema version")
	}
	return nil
}
