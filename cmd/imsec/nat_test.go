package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestNATFlags(t *testing.T) {
	bad := [][]string{
		{"nat"},
		{"nat", "--forward", "127.0.0.1:1"},
		{"nat", "--forward", "x=127.0.0.1:1"},
		{"nat", "--forward", "127.0.0.1:0=nowhere"},
		{"nat", "--forward", "127.0.0.1:0=127.0.0.1:9", "--mapping", "odd"},
		{"nat", "--forward", "127.0.0.1:0=127.0.0.1:9", "--filtering", "odd"},
		{"nat", "--forward", "127.0.0.1:0=127.0.0.1:9", "--timeout", "0s"},
		{"nat", "--forward", "127.0.0.1:0=127.0.0.1:9", "--outside", "bogus"},
		{"nat", "--forward", "127.0.0.1:0=127.0.0.1:9", "extra"},
	}
	for _, args := range bad {
		code, _, errs := runCLI(t, args...)
		if code != 2 || !strings.HasPrefix(errs, "imsec nat: ") || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: code %d stderr %q", args, code, errs)
		}
	}
}

func TestNATRunsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, []string{"nat", "--forward", "127.0.0.1:0=127.0.0.1:9"}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "-> 127.0.0.1:9") || !strings.Contains(out.String(), "mappings active 0") {
		t.Fatalf("code %d out %q err %q", code, out.String(), errb.String())
	}
}
