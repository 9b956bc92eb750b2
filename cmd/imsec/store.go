package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/akakeys/hss/pgstore"
)

// subscriberStore is a subscriber database as the commands use it.
type subscriberStore interface {
	hss.Store
	Close() error
}

// dbFlagHelp is the --db flag's text for the commands that serve.
const dbFlagHelp = "subscriber database made with 'imsec sub': an SQLite `FILE`, or a postgres:// URL"

// openStore opens the subscriber database that --db names: a PostgreSQL
// database for a postgres:// or postgresql:// URL (shared by any number of
// imsec processes), else an SQLite file. Unless create, it must exist
// already (the file, or imsec's schema in the PostgreSQL database): only
// 'imsec sub add' makes one. Errors never show a URL's password; a URL
// that cannot be used is a usage error.
func openStore(ctx context.Context, db string, create bool) (subscriberStore, error) {
	if !pgstore.IsURL(db) {
		s, err := hss.OpenSQLite(db, hss.SQLiteOptions{MustExist: !create})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	s, err := pgstore.Open(ctx, db, pgstore.Options{MustExist: !create})
	if errors.Is(err, pgstore.ErrBadURL) {
		return nil, usageErrorf("--db: %s", strings.TrimPrefix(err.Error(), "pgstore: "))
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// openServedStore opens the database of 'imsec hss' and 'imsec pcscf
// --db', which must exist.
func openServedStore(ctx context.Context, db string) (subscriberStore, error) {
	if !pgstore.IsURL(db) {
		if _, err := os.Stat(db); err != nil {
			return nil, fmt.Errorf("--db %s: %v (create it with 'imsec sub add --db %s ...')", db, err, db)
		}
	}
	return openStore(ctx, db, false)
}
