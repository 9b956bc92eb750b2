// Package tsharktest runs tshark over a capture with imsec's key log (the
// esp_sa lines of esp.KeyLog), for the tests that check imsec's ESP with
// Wireshark's own dissectors: decryption and ICV checks on, sequence
// analysis off, no user profile (only what the Spec says), one row of the
// asked fields per frame.
package tsharktest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Spec is one tshark run.
type Spec struct {
	Tshark   string   // the command; "tshark" if empty
	File     string   // the capture
	UAT      []string // esp_sa lines
	DecodeAs []string // -d arguments, e.g. "udp.port==4500,udpencap"
	Args     []string // more options, e.g. "-Y", "esp"
	Fields   []string // the -e fields of each row
}

// Rows runs s and returns one row of len(s.Fields) fields per frame shown.
// A failure of tshark, or a line with another number of fields, fails t.
func Rows(ctx context.Context, t testing.TB, s Spec) [][]string {
	t.Helper()
	args := []string{"-r", s.File, "-n",
		"-o", "esp.enable_encryption_decode:TRUE",
		"-o", "esp.enable_authentication_check:TRUE",
		"-o", "esp.do_esp_sequence_analysis:FALSE",
	}
	for _, d := range s.DecodeAs {
		args = append(args, "-d", d)
	}
	for _, l := range s.UAT {
		args = append(args, "-o", "uat:esp_sa:"+l)
	}
	args = append(args, s.Args...)
	args = append(args, "-T", "fields", "-E", "separator=|")
	for _, f := range s.Fields {
		args = append(args, "-e", f)
	}
	tshark := s.Tshark
	if tshark == "" {
		tshark = "tshark"
	}
	cmd := exec.CommandContext(ctx, tshark, args...)
	home := t.TempDir() // no user profile: only what is passed here
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, stderr.String())
	}
	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.SplitN(line, "|", len(s.Fields))
		if len(f) != len(s.Fields) {
			t.Fatalf("tshark line %q: want %d fields", line, len(s.Fields))
		}
		rows = append(rows, f)
	}
	return rows
}
