package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkSubAdd is one `imsec sub add` into a database of b.N
// subscribers: opening and checking the file, one transaction. It is what
// provisioning cost per subscriber before `imsec sub import`, less the
// start of a process.
func BenchmarkSubAdd(b *testing.B) {
	db := filepath.Join(b.TempDir(), "hss.db")
	for i := 0; b.Loop(); i++ {
		var out, errs bytes.Buffer
		impi := fmt.Sprintf("ue%06d@ims.example", i)
		args := []string{"sub", "add", "--db", db, "--impi", impi, "--impu", "sip:" + impi,
			"--k", "465b5ce8b199b49faa5f0a2ee238a6bc", "--op", "cdc202d5123e20f62b6d676ac72cb318"}
		if code := run(context.Background(), args, &out, &errs); code != 0 {
			b.Fatalf("exit %d: %s", code, errs.String())
		}
	}
}
