// Package pgstore keeps the subscribers of an imsec HSS in PostgreSQL, so
// that several HSS or P-CSCF processes, on one host or many, share them and
// draw SQNs (TS 33.102 §6.3.2, Annex C) from one counter per subscriber. It
// implements [hss.Store] with github.com/jackc/pgx/v5 (pure Go).
//
// # Atomic and durable SQN
//
// [Store.UpdateSQN] is one transaction: SELECT ... FOR UPDATE takes the
// subscriber's row lock, the callback decides the new SQN, UPDATE stores it
// and COMMIT returns once PostgreSQL has flushed the commit to its WAL.
// Every connection runs with synchronous_commit on (a URL that asks for
// off is refused), whatever the server, database or role default is, so a
// nil error means the SQN survives a crash of the server. (A server run
// with fsync=off does not keep that promise; nothing a client does can.)
// Callers in any number of processes serialise on the row lock, so no two
// vectors for one IMPI carry the same SQN. Under READ COMMITTED (the
// default) a waiting caller reads the row as its holder committed it; under
// REPEATABLE READ or SERIALIZABLE (a server whose default isolation is
// stricter, or a PostgreSQL-compatible database that always is) it gets a
// serialization failure instead, and the transaction is run again,
// callback and all, as the Store contract allows; so are deadlocks.
//
// Behind PgBouncer in transaction mode, add default_query_exec_mode=exec to
// the URL: pgx otherwise prepares named statements per connection.
//
// # Schema
//
// The tables live in a PostgreSQL schema of their own, "imsec" unless
// [Options.Schema] says otherwise: subscriber, impu, and meta, whose one row
// names the application and the schema version. [Open] creates the schema
// in an empty database (or fills an empty schema a DBA made for it) and
// upgrades an older version, under an advisory lock so that processes
// opening one database at once do not race. It refuses, changing nothing,
// with an error wrapping [hss.ErrBadDatabase], a schema that holds tables
// but is not ours, one of a newer version than this imsec knows, and one
// whose tables or constraints were changed. IMPIs and IMPUs are text
// COLLATE "C": matched and sorted byte for byte, whatever the database's
// collation. The primary key of impu is the IMPU, so an IMPU belongs to one
// subscriber whichever process adds it.
//
// # Secrets
//
// Errors name the database by its URL without the password, and carry no
// PostgreSQL error detail (a detail can quote a row, keys and all). Keys
// are never logged. K, OP and OPc are stored as they are: anyone who can
// read the tables, the WAL or a backup has them, and a deleted subscriber's
// keys stay in dead rows until VACUUM and in the WAL until it is recycled.
// Protect the database like the SQLite file (its role, pg_hba.conf, TLS to
// the server), and give the password in PGPASSWORD or ~/.pgpass rather than
// in a URL on a command line.
package pgstore
