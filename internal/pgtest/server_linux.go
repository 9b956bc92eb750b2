//go:build linux

package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the role initdb makes the server's superuser; connections
// over the socket are trusted (no password).
const Superuser = "postgres"

// port names the socket file (.s.PGSQL.5432); no TCP port is opened.
const port = 5432

// readyLine is what postgres logs once it accepts connections.
const readyLine = "database system is ready to accept connections"

// Options configures Start. The zero value is the default.
type Options struct {
	// StartTimeout bounds initdb plus the start of postgres until it
	// accepts connections; zero means 60 s (initdb alone takes about 2 s
	// on an idle machine, much longer on a loaded one).
	StartTimeout time.Duration
	// Settings are extra server settings, passed as postgres -c NAME=VALUE.
	Settings map[string]string
	// HBA are pg_hba.conf lines put before initdb's, which trust every
	// connection over the socket: "local all alice scram-sha-256" makes the
	// role alice give its password.
	HBA []string
}

// Server is a running PostgreSQL server of a test.
type Server struct {
	// Dir is the server's directory: the data directory Dir/data, and the
	// unix socket.
	Dir string

	cmd  *exec.Cmd
	log  *logBuf
	done chan struct{} // closed when postgres has exited
	err  error         // Wait's result, valid after done
	dbs  atomic.Int64
}

// Binaries returns the directory holding initdb and postgres, the newest
// of /usr/lib/postgresql/*/bin, else the one on PATH, or an error that says
// what to install.
func Binaries() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first: 9.6 < 10 < 15.
	version := func(d string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64)
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int {
		switch va, vb := version(a), version(b); {
		case va > vb:
			return -1
		case va < vb:
			return 1
		}
		return 0
	})
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on PATH (apt install postgresql)")
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Skip skips t unless the PostgreSQL server binaries are installed.
func Skip(t testing.TB) {
	t.Helper()
	if _, err := Binaries(); err != nil {
		t.Skip(err)
	}
}

// errNotInstalled marks New's error when the binaries are missing.
type errNotInstalled struct{ error }

// Start makes a new database cluster in a temporary directory and runs
// postgres on it (see New), and returns once it accepts connections. It
// skips t when PostgreSQL is not installed. t.Cleanup closes the server and
// prints its log if t failed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if _, ok := err.(errNotInstalled); ok {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("postgres log (%s):\n%s", s.Dir, s.Log())
		}
	})
	return s
}

// New makes a new database cluster in a temporary directory and runs
// postgres on it, and returns once it accepts connections. Close stops it
// and removes the directory.
//
// postgres refuses to run as root, so a process running as root runs
// initdb and postgres as the user nobody (the directory is made theirs);
// anyone else runs them as themselves. The server listens on a unix socket
// in Dir only (listen_addresses is empty): no TCP port is chosen or bound.
// Every connection over that socket is trusted as any role (but for
// Options.HBA). The cluster's default collation is ICU's en-US where the
// server supports it (PostgreSQL 15 on), as on a typical production server,
// so code that needs byte order must ask for COLLATE "C". The server runs
// with fsync on, as in production.
func New(opts Options) (_ *Server, err error) {
	bin, err := Binaries()
	if err != nil {
		return nil, errNotInstalled{err}
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.StartTimeout)
	defer cancel()

	// Not t.TempDir(): its parent is mode 0700 and root's, which nobody
	// cannot enter.
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		uid, gid := nobody()
		if err := os.Chown(dir, int(uid), int(gid)); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
		attr.Credential = &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
	}
	env := []string{"LC_ALL=C", "TZ=UTC", "PATH=/usr/bin:/bin"}
	data := filepath.Join(dir, "data")

	initArgs := []string{"-D", data, "-U", Superuser, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"}
	icu := major(bin) >= 15
	if icu {
		initArgs = append(initArgs, "--locale-provider=icu", "--icu-locale=en-US")
	}
	out, err := runAs(ctx, attr, env, dir, filepath.Join(bin, "initdb"), initArgs...)
	if err != nil && icu && ctx.Err() == nil {
		// A server built without ICU: the C collation, then.
		os.RemoveAll(data)
		out, err = runAs(ctx, attr, env, dir, filepath.Join(bin, "initdb"), initArgs[:len(initArgs)-2]...)
	}
	if err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	if len(opts.HBA) > 0 {
		hba := filepath.Join(data, "pg_hba.conf")
		old, err := os.ReadFile(hba)
		if err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
		// WriteFile keeps the file's owner (nobody's, if we are root).
		if err := os.WriteFile(hba, append([]byte(strings.Join(opts.HBA, "\n")+"\n"), old...), 0o600); err != nil {
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}

	args := []string{"-D", data, "-k", dir, "-p", strconv.Itoa(port), "-c", "listen_addresses="}
	names := make([]string, 0, len(opts.Settings))
	for k := range opts.Settings {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		args = append(args, "-c", k+"="+opts.Settings[k])
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.SysProcAttr, cmd.Env, cmd.Dir = attr, env, dir
	lg := newLogBuf(readyLine)
	cmd.Stdout, cmd.Stderr = lg, lg
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{Dir: dir, cmd: cmd, log: lg, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	select {
	case <-lg.ready:
		return s, nil
	case <-s.done:
		err = fmt.Errorf("pgtest: postgres exited before accepting connections (%v):\n%s", s.err, lg.String())
	case <-ctx.Done():
		err = fmt.Errorf("pgtest: postgres did not accept connections within %v:\n%s", opts.StartTimeout, lg.String())
	}
	s.Stop()
	return nil, err
}

// shared is the server of Main and Shared.
var shared struct {
	mu   sync.Mutex
	main bool
	opts Options
	srv  *Server
	err  error
}

// Main runs a package's tests (m.Run) with a server that those calling
// Shared share, started on the first call, and closes it after them. Call
// it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Options{})) }
func Main(m *testing.M, opts Options) int {
	shared.mu.Lock()
	shared.main, shared.opts = true, opts
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.srv != nil {
		shared.srv.Close()
	}
	return code
}

// Shared returns the server shared by the package's tests (see Main),
// starting it on the first call. It skips t when PostgreSQL is not
// installed. If t fails, what the server logged while t ran is printed.
// Tests keep apart in databases of their own (NewDatabase).
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.main {
		t.Fatal("pgtest: Shared needs pgtest.Main in the package's TestMain")
	}
	if shared.srv == nil && shared.err == nil {
		shared.srv, shared.err = New(shared.opts)
	}
	if _, ok := shared.err.(errNotInstalled); ok {
		t.Skip(shared.err)
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	s := shared.srv
	from := s.log.len()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postgres log while %s ran (%s):\n%s", t.Name(), s.Dir, s.log.from(from))
		}
	})
	return s
}

// nobody returns the uid and gid of the user nobody (65534 if unknown).
func nobody() (uid, gid uint32) {
	uid, gid = 65534, 65534
	if u, err := user.Lookup("nobody"); err == nil {
		if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			uid = uint32(n)
		}
		if n, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
			gid = uint32(n)
		}
	}
	return uid, gid
}

var majorRE = regexp.MustCompile(`/postgresql/(\d+)/bin$`)

// major is the PostgreSQL major version of a Debian bin directory, or of
// `postgres --version` elsewhere; 0 if unknown.
func major(bin string) int {
	if m := majorRE.FindStringSubmatch(bin); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	out, err := exec.Command(filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return 0
	}
	// "postgres (PostgreSQL) 15.18 (Debian ...)"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return 0
	}
	n, _ := strconv.Atoi(strings.SplitN(f[2], ".", 2)[0])
	return n
}

func runAs(ctx context.Context, attr *syscall.SysProcAttr, env []string, dir, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	a := *attr
	a.Setpgid = false // killed by CommandContext, no children of its own to outlive it
	cmd.SysProcAttr, cmd.Env, cmd.Dir = &a, env, dir
	return cmd.CombinedOutput()
}

// Stop shuts the server down at once: SIGQUIT (immediate shutdown, no
// checkpoint: the cluster is thrown away) to its PID, then after 10 s
// SIGKILL to its process group. It waits for postgres to exit and is safe
// to call twice.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	pid := s.cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-s.done
	}
}

// Close stops the server and removes its directory.
func (s *Server) Close() {
	s.Stop()
	os.RemoveAll(s.Dir)
}

// Done is closed when postgres has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// Log returns what postgres has logged so far.
func (s *Server) Log() string { return s.log.String() }

// DSN returns the connection URL for database db as role user (Superuser
// if empty) over the server's socket.
func (s *Server) DSN(user, db string) string {
	if user == "" {
		user = Superuser
	}
	q := url.Values{"host": {s.Dir}, "port": {strconv.Itoa(port)}}
	u := url.URL{Scheme: "postgres", User: url.User(user), Host: "", Path: "/" + db, RawQuery: q.Encode()}
	return u.String()
}

// NewDatabase creates an empty database with a name of its own and returns
// its connection URL (as Superuser).
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test%d", s.dbs.Add(1))
	s.Exec(t, "postgres", "CREATE DATABASE "+name)
	return s.DSN("", name)
}

// Exec runs statements as Superuser in database db, failing t on error.
func (s *Server) Exec(t testing.TB, db string, stmts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("", db))
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", db, err)
	}
	defer conn.Close(ctx)
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("pgtest: %s: %v", q, err)
		}
	}
}

// logBuf collects the server's output and closes ready when it first holds
// the ready line.
type logBuf struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  []byte
	ready chan struct{}
	seen  bool
}

func newLogBuf(want string) *logBuf { return &logBuf{want: []byte(want), ready: make(chan struct{})} }

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.seen && bytes.Contains(l.buf.Bytes(), l.want) {
		l.seen = true
		close(l.ready)
	}
	return len(p), nil
}

func (l *logBuf) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

func (l *logBuf) from(i int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf.Bytes()[i:])
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
