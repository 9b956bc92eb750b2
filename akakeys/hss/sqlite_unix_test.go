//go:build unix

package hss

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// File modes and the umask are Unix notions: on Windows the database's
// access is the folder's ACL.
func TestSQLiteFileModes(t *testing.T) {
	// Not parallel: umask is process-wide.
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	s, path := openTemp(t)
	h, _ := New(s, Config{})
	ctx := context.Background()
	if err := s.Add(ctx, alice()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Vector(ctx, alice().IMPI); err != nil {
		t.Fatal(err)
	}
	// While open in WAL mode the -wal and -shm files exist; SQLite gives them
	// the database file's mode, whatever the umask.
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s has mode %v under umask 0, want 0600", filepath.Base(p), m)
		}
	}
	s.Close()

	// An existing database (and sidecar) readable by others is tightened.
	for _, p := range []string{path, path + "-shm"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := OpenSQLite(path, SQLiteOptions{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("after reopen %s has mode %v, want 0600", filepath.Base(p), m)
		}
	}
	if got, err := s2.Get(ctx, alice().IMPI); err != nil || got.SQN.Uint64() == 0 {
		t.Fatalf("reopened store lost data: %v %v", got, err)
	}
}
