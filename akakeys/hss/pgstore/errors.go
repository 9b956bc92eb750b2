package pgstore

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrBadURL: the database URL is not one Open can use (not a postgres://
// URL, unparsable, a bad parameter, synchronous_commit=off). The message
// says which, without the password.
var ErrBadURL = errors.New("pgstore: bad database URL")

// IsURL reports whether db is a PostgreSQL connection URL (postgres:// or
// postgresql://) rather than a file name.
func IsURL(db string) bool {
	l := strings.ToLower(db)
	return strings.HasPrefix(l, "postgres://") || strings.HasPrefix(l, "postgresql://")
}

// target is what errors say about the database: its URL without password,
// and the secrets to scrub from any text that reaches an error.
type target struct {
	name    string
	secrets []string
}

// describe parses a connection URL for naming it in errors. It fails,
// quoting nothing of dsn, on what is not a URL pgx could take.
func describe(dsn string) (target, error) {
	if !IsURL(dsn) {
		return target{}, fmt.Errorf("%w: the database must be a postgres:// or postgresql:// URL", ErrBadURL)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		// url's error quotes the URL, password and all.
		return target{}, fmt.Errorf("%w: it does not parse (in a password, percent-encode @ : / ? # and %%)", ErrBadURL)
	}
	var tg target
	add := func(s string) {
		if s != "" {
			tg.secrets = append(tg.secrets, s, url.PathEscape(s), url.QueryEscape(s))
		}
	}
	if pw, ok := u.User.Password(); ok {
		add(pw)
		// And as it was written: between the first ':' and the last '@'
		// of the authority.
		rest := dsn[strings.Index(dsn, "://")+3:]
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			if colon := strings.IndexByte(rest[:at], ':'); colon >= 0 {
				add(rest[colon+1 : at])
			}
		}
		u.User = url.User(u.User.Username())
	}
	q := u.Query()
	for _, k := range []string{"password", "sslpassword"} {
		for _, v := range q[k] {
			add(v)
		}
		q.Del(k)
	}
	u.RawQuery = q.Encode()
	u.Fragment, u.RawFragment = "", ""
	tg.name = u.String()
	// For reading: host=/tmp/x rather than host=%2Ftmp%2Fx.
	if s, err := url.QueryUnescape(tg.name); err == nil {
		tg.name = s
	}
	tg.name = tg.scrub(tg.name)
	return tg, nil
}

// scrub replaces every secret in s, and puts it on one line (pgx puts an
// error per host tried on lines of their own).
func (tg target) scrub(s string) string {
	for _, sec := range tg.secrets {
		s = strings.ReplaceAll(s, sec, "xxxxx")
	}
	s = strings.ReplaceAll(s, ":\n\t", ": ")
	s = strings.ReplaceAll(s, "\n\t", "; ")
	return strings.ReplaceAll(s, "\n", " ")
}

// dbError is an error from pgx or the server on the way out of a
// transaction, kept as it is so that the retry loop can read its SQLSTATE.
type dbError struct {
	op  string
	err error
}

func (e *dbError) Error() string { return e.op + ": " + e.err.Error() }
func (e *dbError) Unwrap() error { return e.err }

func dbErr(err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return &dbError{op: fmt.Sprintf(format, a...), err: err}
}

// publicError is what a caller gets for a dbError: a scrubbed message,
// still unwrapping to context and network errors but not to a
// *pgconn.PgError, whose Detail can quote a row with its keys.
type publicError struct {
	msg string
	err error // nil for a server error
}

func (e *publicError) Error() string { return e.msg }
func (e *publicError) Unwrap() error { return e.err }

// public turns what a store operation failed with into what it returns:
// sentinel and callback errors as they are, dbErrors scrubbed and named.
func (tg target) public(err error) error {
	var de *dbError
	if !errors.As(err, &de) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(de.err, &pe) {
		return &publicError{msg: tg.scrub(fmt.Sprintf("pgstore: %s: %s: %s: %s (SQLSTATE %s)", tg.name, de.op, pe.Severity, pe.Message, pe.Code))}
	}
	return &publicError{msg: tg.scrub(fmt.Sprintf("pgstore: %s: %s: %v", tg.name, de.op, de.err)), err: de.err}
}

// SQLSTATEs the store reacts to
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const (
	sqlstateSerializationFailure = "40001"
	sqlstateDeadlockDetected     = "40P01"
)

// retryable reports whether a transaction that failed with err may succeed
// when run again from the start.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == sqlstateSerializationFailure || pe.Code == sqlstateDeadlockDetected
	}
	return errors.Is(err, errConflictGone)
}

// Redact returns how output may name a database: a postgres:// URL without
// its password (or "a PostgreSQL database" if it does not parse), anything
// else (an SQLite path) as it is.
func Redact(db string) string {
	if !IsURL(db) {
		return db
	}
	tg, err := describe(db)
	if err != nil {
		return "a PostgreSQL database"
	}
	return tg.name
}
