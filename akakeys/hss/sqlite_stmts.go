package hss

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// The statements of the SQLite store, prepared once per store on open
// rather than parsed on every call: parsing and planning was most of the
// cost of a lookup (BenchmarkLookupIMPUSQLite). database/sql prepares each
// on a pooled connection the first time that connection runs it and keeps it
// there; Tx.StmtContext reuses the connection's copy inside a transaction.

const subscriberColumns = "impi, k, opc, op, amf, sqn, resyncs, last_resync"

// sqliteStmts are the prepared statements of one SQLiteStore. They are
// safe for concurrent use (database/sql); Close closes them.
type sqliteStmts struct {
	subscriber  *sql.Stmt // impi -> subscriberColumns
	exists      *sql.Stmt // impi -> 1 if the subscriber exists
	impusOf     *sql.Stmt // impi -> impu rows in provisioning order
	impuOwner   *sql.Stmt // impu -> impi
	insertSub   *sql.Stmt // subscriberColumns
	insertIMPU  *sql.Stmt // impu, impi, pos
	deleteIMPUs *sql.Stmt // impi
	deleteSub   *sql.Stmt // impi
	updateSQN   *sql.Stmt // sqn, resync increment, last_resync or NULL, impi
	generation  *sql.Stmt // -> identity_generation.n
}

func prepareStmts(ctx context.Context, db *sql.DB) (*sqliteStmts, error) {
	st := &sqliteStmts{}
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&st.subscriber, "SELECT " + subscriberColumns + " FROM subscriber WHERE impi = ?"},
		{&st.exists, "SELECT 1 FROM subscriber WHERE impi = ?"},
		{&st.impusOf, "SELECT impu FROM impu WHERE impi = ? ORDER BY pos"},
		{&st.impuOwner, "SELECT impi FROM impu WHERE impu = ?"},
		{&st.insertSub, "INSERT INTO subscriber (" + subscriberColumns + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"},
		{&st.insertIMPU, "INSERT INTO impu (impu, impi, pos) VALUES (?, ?, ?)"},
		// Explicit, in case a hand-made connection ran without foreign_keys.
		{&st.deleteIMPUs, "DELETE FROM impu WHERE impi = ?"},
		{&st.deleteSub, "DELETE FROM subscriber WHERE impi = ?"},
		{&st.updateSQN, "UPDATE subscriber SET sqn = ?, resyncs = resyncs + ?, last_resync = coalesce(?, last_resync) WHERE impi = ?"},
		{&st.generation, "SELECT n FROM identity_generation WHERE id = 1"},
	} {
		s, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("preparing %q: %w", p.sql, err)
		}
		*p.dst = s
	}
	return st, nil
}

// Close closes every statement that was prepared.
func (st *sqliteStmts) Close() error {
	var errs []error
	for _, s := range []*sql.Stmt{st.subscriber, st.exists, st.impusOf, st.impuOwner, st.insertSub,
		st.insertIMPU, st.deleteIMPUs, st.deleteSub, st.updateSQN, st.generation} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}
