// Package pgtest runs a throwaway PostgreSQL server for tests: initdb and
// postgres from the system's installation (Debian's postgresql package:
// /usr/lib/postgresql/*/bin), in a temporary directory, listening on a unix
// socket in that directory only. Tests that need one skip, saying what to
// install, when the binaries are missing.
//
// The package is Linux only (see server_linux.go); on other systems it is
// empty.
package pgtest
