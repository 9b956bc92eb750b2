//go:build linux

// Package kamailiotest runs a real Kamailio IMS S-CSCF (ims_registrar_scscf,
// ims_auth, ims_usrloc_scscf, cdp) as a child process for interop tests: the
// Cx peer of imsec's HSS (TS 29.228/29.229) and the registrar a UE or
// P-CSCF under test talks SIP to (TS 24.229).
//
// Each instance binds a loopback address of its own (a random 127.x.y.z)
// with the fixed ports 5060 (SIP/UDP) and 3869 (its Diameter acceptor), so
// no port is ever picked, closed and rebound. Its configuration is written
// into t.TempDir(); it runs in the foreground (-DD -E), needs no root, and
// is killed (its process group) in t.Cleanup. Its log is printed when the
// test fails.
package kamailiotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imsec/imsec/internal/loopback"
)

// Ports Kamailio binds on its own loopback address.
const (
	SIPPort      = 5060
	DiameterPort = 3869
)

// modules the S-CSCF config loads: the test skips without any of them.
var modules = []string{"tm", "sl", "pv", "xlog", "rr", "siputils", "ims_dialog", "presence", "cdp", "cdp_avp",
	"ims_usrloc_scscf", "ims_registrar_scscf", "ims_auth"}

// Config describes one S-CSCF. Zero values are the documented defaults.
type Config struct {
	// Addr is the loopback address Kamailio binds; zero means
	// loopback.Random(). Start the HSS on the same address first to keep
	// the pair apart from other tests.
	Addr netip.Addr
	// HSS is the Diameter address of the HSS, cdp's only peer (required).
	// Its Origin-Host is best the literal address: cdp names its peer so.
	HSS netip.AddrPort
	// Realm is the home network domain; default "ims.example".
	Realm string
	// Host is the S-CSCF's host name (cdp Origin-Host, Server-Name
	// sip:Host:5060); default "scscf." + Realm.
	Host string
	// Debug is Kamailio's log level (-1..3); default 2 (INFO).
	Debug int
	// StartTimeout bounds the start until SIP answers; default 15 s.
	StartTimeout time.Duration
}

// Kamailio is a running S-CSCF.
type Kamailio struct {
	// SIP is where it takes SIP over UDP.
	SIP netip.AddrPort
	// ServerName is its SIP URI, the Server-Name it sends in MAR and SAR.
	ServerName string
	// Host and Realm are its Diameter Origin-Host and Origin-Realm.
	Host, Realm string

	cmd  *exec.Cmd
	log  *lineLog
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
}

// Binary returns the kamailio executable and its module directory, or an
// error saying what is missing.
func Binary() (bin, moduleDir string, err error) {
	bin, err = exec.LookPath("kamailio")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/kamailio"); e != nil {
			return "", "", errors.New("kamailio is not installed (apt install kamailio kamailio-ims-modules kamailio-presence-modules)")
		}
		bin = "/usr/sbin/kamailio"
	}
	dirs, _ := filepath.Glob("/usr/lib/*/kamailio/modules")
	dirs = append(dirs, "/usr/lib/kamailio/modules", "/usr/local/lib/kamailio/modules", "/usr/local/lib64/kamailio/modules")
	var missing []string
	for _, d := range dirs {
		missing = missing[:0]
		for _, m := range modules {
			if _, err := os.Stat(filepath.Join(d, m+".so")); err != nil {
				missing = append(missing, m)
			}
		}
		if len(missing) == 0 {
			return bin, d, nil
		}
	}
	return "", "", fmt.Errorf("kamailio modules missing (%s) (apt install kamailio-ims-modules kamailio-presence-modules)", strings.Join(missing, ", "))
}

// Skip skips t unless kamailio and its IMS and presence modules are installed.
func Skip(t testing.TB) {
	t.Helper()
	if _, _, err := Binary(); err != nil {
		t.Skip(err)
	}
}

// Start writes the S-CSCF's configuration into t.TempDir(), starts kamailio
// and returns once it answers SIP. It skips t when kamailio is not
// installed. The process is killed in t.Cleanup.
func Start(t testing.TB, cfg Config) *Kamailio {
	t.Helper()
	bin, modDir, err := Binary()
	if err != nil {
		t.Skip(err)
	}
	if !cfg.HSS.IsValid() {
		t.Fatal("kamailiotest: Config.HSS is required")
	}
	if !cfg.Addr.IsValid() {
		cfg.Addr = loopback.Random()
	}
	if cfg.Realm == "" {
		cfg.Realm = "ims.example"
	}
	if cfg.Host == "" {
		cfg.Host = "scscf." + cfg.Realm
	}
	if cfg.Debug == 0 {
		cfg.Debug = 2
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 15 * time.Second
	}
	dir := t.TempDir()
	d := cfgData{Debug: cfg.Debug, Addr: cfg.Addr, SIPPort: SIPPort, DiamPort: DiameterPort,
		Host: cfg.Host, Realm: cfg.Realm, ModuleDir: modDir, CDPFile: filepath.Join(dir, "cdp.xml"), HSS: cfg.HSS}
	var kcfg, cdp bytes.Buffer
	if err := writeConfigs(&kcfg, &cdp, d); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(cfgFile, kcfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.CDPFile, cdp.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// -DD: no daemon, the main process stays our child (it still forks its
	// workers, which share its process group). -E: log to stderr.
	// -m/-M: 32 MB shared, 4 MB private memory is plenty for one UE.
	// -Y/-P/-w: runtime dir, pid file and working dir inside the temp dir.
	cmd := exec.Command(bin, "-DD", "-E", "-m", "32", "-M", "4",
		"-f", cfgFile, "-P", filepath.Join(dir, "kamailio.pid"), "-Y", dir, "-w", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	lg := newLineLog()
	cmd.Stdout = lg
	cmd.Stderr = lg
	if err := cmd.Start(); err != nil {
		t.Fatalf("kamailiotest: %v", err)
	}
	k := &Kamailio{SIP: netip.AddrPortFrom(cfg.Addr, SIPPort), ServerName: d.URI(),
		Host: cfg.Host, Realm: cfg.Realm, cmd: cmd, log: lg, done: make(chan struct{})}
	go func() {
		k.err = cmd.Wait()
		lg.close()
		close(k.done)
	}()
	t.Cleanup(func() {
		k.Stop()
		if t.Failed() {
			t.Logf("kamailio log (%s):\n%s", cfgFile, lg.String())
		}
	})
	if err := k.probe(cfg.StartTimeout); err != nil {
		t.Fatalf("kamailiotest: kamailio did not come up: %v", err)
	}
	return k
}

// probe sends SIP OPTIONS until kamailio answers or the deadline passes.
func (k *Kamailio) probe(timeout time.Duration) error {
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(k.SIP.Addr(), 0)), net.UDPAddrFromAddrPort(k.SIP))
	if err != nil {
		return err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	msg := "OPTIONS sip:" + k.SIP.String() + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bKprobe" + randHex(6) + "\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:probe@" + local + ">;tag=" + randHex(4) + "\r\n" +
		"To: <sip:" + k.SIP.String() + ">\r\nCall-ID: probe-" + randHex(8) + "\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 4096)
	for time.Now().Before(deadline) {
		select {
		case <-k.done:
			return fmt.Errorf("kamailio exited: %v", k.err)
		default:
		}
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		// Retransmit like a SIP client (T1 = 500 ms, shorter here).
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && bytes.HasPrefix(buf[:n], []byte("SIP/2.0 200")) {
			return nil
		}
	}
	return fmt.Errorf("no answer to OPTIONS within %v", timeout)
}

// WaitLog waits until a log line contains substr, or the timeout passes,
// or kamailio exits. Lines already logged count.
func (k *Kamailio) WaitLog(substr string, timeout time.Duration) (string, error) {
	return k.log.wait(substr, 1, timeout)
}

// WaitLogN is WaitLog for the n-th line containing substr.
func (k *Kamailio) WaitLogN(substr string, n int, timeout time.Duration) (string, error) {
	return k.log.wait(substr, n, timeout)
}

// MAADone is the ims_auth log line that ends the handling of a MAA with
// success. ims_auth sends the 401 before it has finished with the vector:
// a UE that answers faster than that (a test on loopback) is challenged
// again. Wait for the n-th MAADone line before answering the n-th 401.
const MAADone = "[maa_return_code] - [1]"

// Log returns everything kamailio has logged so far.
func (k *Kamailio) Log() string { return k.log.String() }

// Done is closed when the kamailio process has exited.
func (k *Kamailio) Done() <-chan struct{} { return k.done }

// Stop kills kamailio's process group (the main process and its workers)
// and waits for the main process to exit. It is safe to call twice.
func (k *Kamailio) Stop() {
	select {
	case <-k.done:
		return
	default:
	}
	pgid := k.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-k.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-k.done
	}
	// Workers that outlived the main process.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// lineLog collects kamailio's output and wakes waiters on each line.
type lineLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
	lines   []string
	closed  bool
	wake    chan struct{} // closed and replaced on every new line
}

func newLineLog() *lineLog { return &lineLog{wake: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.wake)
		l.wake = make(chan struct{})
	}
	return len(p), nil
}

func (l *lineLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	close(l.wake)
	l.wake = make(chan struct{})
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lineLog) wait(substr string, n int, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	next, seen := 0, 0
	for {
		l.mu.Lock()
		for ; next < len(l.lines); next++ {
			if strings.Contains(l.lines[next], substr) {
				if seen++; seen < n {
					continue
				}
				s := l.lines[next]
				l.mu.Unlock()
				return s, nil
			}
		}
		closed, wake := l.closed, l.wake
		l.mu.Unlock()
		if closed {
			return "", fmt.Errorf("kamailio exited before logging %q", substr)
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return "", fmt.Errorf("kamailio did not log %q (%d times) within %v", substr, n, timeout)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}
