package hss_test

import (
	"path/filepath"
	"testing"

	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/akakeys/hss/storetest"
)

// The Store contract (package storetest) on the stores of this package.

func TestMemStoreConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) hss.Store { return hss.NewMemStore() })
	storetest.RunShared(t, func(_ *testing.T, n int) []hss.Store {
		s := hss.NewMemStore()
		out := make([]hss.Store, n)
		for i := range out {
			out[i] = s
		}
		return out
	})
}

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) hss.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "hss.db"))
	})
	// Several handles on one file: as several processes would open it.
	storetest.RunShared(t, func(t *testing.T, n int) []hss.Store {
		path := filepath.Join(t.TempDir(), "hss.db")
		out := make([]hss.Store, n)
		for i := range out {
			out[i] = openSQLite(t, path)
		}
		return out
	})
}

func openSQLite(t *testing.T, path string) *hss.SQLiteStore {
	t.Helper()
	s, err := hss.OpenSQLite(path, hss.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
