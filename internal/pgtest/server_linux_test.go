package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestServer: the server runs as someone other than root, listens on its
// socket only, collates like a production server, and is gone, directory
// and all, after Stop.
func TestServer(t *testing.T) {
	s := Start(t, Options{Settings: map[string]string{"work_mem": "5MB"}})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.DSN("", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var listen, fsync, workMem string
	if err := conn.QueryRow(ctx, "SELECT current_setting('listen_addresses'), current_setting('fsync'), current_setting('work_mem')").
		Scan(&listen, &fsync, &workMem); err != nil {
		t.Fatal(err)
	}
	if listen != "" || fsync != "on" || workMem != "5MB" {
		t.Errorf("listen_addresses %q, fsync %q, work_mem %q; want '', on and 5MB (Options.Settings)", listen, fsync, workMem)
	}
	// ICU en-US, where the server has ICU: a b B, not the C locale's B a b.
	var provider string
	if major(filepath.Dir(s.cmd.Path)) >= 15 {
		if err := conn.QueryRow(ctx, "SELECT datlocprovider::text FROM pg_database WHERE datname = current_database()").Scan(&provider); err != nil {
			t.Fatal(err)
		}
	}
	var order string
	if err := conn.QueryRow(ctx, "SELECT string_agg(x, ' ' ORDER BY x) FROM (VALUES ('b'), ('B'), ('a')) v(x)").Scan(&order); err != nil {
		t.Fatal(err)
	}
	switch {
	case provider == "i" && order != "a b B":
		t.Errorf("the ICU default collation sorts a, b, B as %q", order)
	case provider != "i":
		t.Logf("no ICU: the default collation is C (sorts %q)", order)
	}
	fi, err := os.Stat(filepath.Join(s.Dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
		t.Errorf("the data directory belongs to root")
	}
	pid, err := os.ReadFile(filepath.Join(s.Dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(strings.Fields(string(pid))[0]); n != s.cmd.Process.Pid {
		t.Errorf("postmaster.pid says %d, our child is %d", n, s.cmd.Process.Pid)
	}
	if a, b := s.NewDatabase(t), s.NewDatabase(t); a == b {
		t.Error("NewDatabase returned one database twice")
	}

	conn.Close(ctx)
	s.Stop()
	<-s.Done()
	if err := syscall.Kill(s.cmd.Process.Pid, 0); err == nil {
		t.Errorf("postgres (pid %d) still runs after Stop", s.cmd.Process.Pid)
	}
	s.Stop() // twice is fine
}
