package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/internal/loopback"
	"github.com/imsec/imsec/tun/ipesp"
)

// tunnelOutput is a bytes.Buffer a running command writes while the test reads.
type tunnelOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *tunnelOutput) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *tunnelOutput) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// loopbackUDP returns a loopback UDP port that was free a moment ago.
func loopbackUDP(t *testing.T) string {
	t.Helper()
	// Both ends need each other's address before either binds (each
	// socket is connected to --peer), so each gets a loopback address of
	// its own with a fixed port, which nothing else holds there: no port is
	// picked, closed and bound again.
	return loopback.Random().String() + ":4500"
}

// ipOf is the address part of "IP:PORT".
func ipOf(hostport string) string {
	h, _, _ := strings.Cut(hostport, ":")
	return h
}

func tunnelRandHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// tunnelSA is one direction of a tunnel: its --out/--in value and the keys
// in it (which must never appear in any output).
type tunnelSA struct {
	spec string
	keys []string
}

func newTunnelSA(spi uint32, ealg string, ekeyLen int, alg string, akeyLen int) tunnelSA {
	s := tunnelSA{spec: fmt.Sprintf("spi=%#x,ealg=%s", spi, ealg)}
	if ekeyLen > 0 {
		k := tunnelRandHex(ekeyLen)
		s.spec += ",ekey=" + k
		s.keys = append(s.keys, k)
	}
	if alg != "" {
		s.spec += ",alg=" + alg
	}
	if akeyLen > 0 {
		k := tunnelRandHex(akeyLen)
		s.spec += ",akey=" + k
		s.keys = append(s.keys, k)
	}
	return s
}

// tunnelEnd is a running `imsec tunnel` without --ping.
type tunnelEnd struct {
	out, err tunnelOutput
	cancel   context.CancelFunc
	done     chan int
}

// startTunnel runs `imsec tunnel args...` until stop and waits until it is up.
func startTunnel(t *testing.T, args ...string) *tunnelEnd {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := &tunnelEnd{cancel: cancel, done: make(chan int, 1)}
	go func() { e.done <- run(ctx, append([]string{"tunnel"}, args...), &e.out, &e.err) }()
	for end := time.Now().Add(10 * time.Second); !strings.Contains(e.out.String(), "tunnel up:"); time.Sleep(5 * time.Millisecond) {
		select {
		case code := <-e.done:
			t.Fatalf("tunnel exited with %d before it was up: %s%s", code, e.out.String(), e.err.String())
		default:
		}
		if time.Now().After(end) {
			cancel()
			t.Fatalf("tunnel not up after 10s: %s%s", e.out.String(), e.err.String())
		}
	}
	t.Cleanup(func() { e.stop(t) })
	return e
}

// stop interrupts the tunnel (Ctrl-C) and returns its exit code; it prints
// its counters on the way out.
func (e *tunnelEnd) stop(t *testing.T) int {
	e.cancel()
	select {
	case code := <-e.done:
		e.done <- code // for a second stop
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("tunnel did not stop after Ctrl-C")
		return -1
	}
}

// tunnelPair is two mirrored tunnel configurations on loopback.
type tunnelPair struct {
	aAddr, bAddr string
	ab, ba       tunnelSA // A's --out (B's --in), B's --out (A's --in)
}

func newTunnelPair(t *testing.T, ealg string, ekeyLen int, alg string, akeyLen int) *tunnelPair {
	return &tunnelPair{
		aAddr: loopbackUDP(t), bAddr: loopbackUDP(t),
		ab: newTunnelSA(0x1001, ealg, ekeyLen, alg, akeyLen),
		ba: newTunnelSA(0x2001, ealg, ekeyLen, alg, akeyLen),
	}
}

func (p *tunnelPair) argsA(extra ...string) []string {
	return append([]string{"--listen", p.aAddr, "--peer", p.bAddr, "--inner", "100.64.7.1/24",
		"--out", p.ab.spec, "--in", p.ba.spec}, extra...)
}

func (p *tunnelPair) argsB(extra ...string) []string {
	return append([]string{"--listen", p.bAddr, "--peer", p.aAddr, "--inner", "100.64.7.2/24",
		"--out", p.ba.spec, "--in", p.ab.spec}, extra...)
}

func (p *tunnelPair) keys() []string {
	return append(append([]string(nil), p.ab.keys...), p.ba.keys...)
}

func noTunnelKeys(t *testing.T, what, s string, keys []string) {
	t.Helper()
	for _, k := range keys {
		if strings.Contains(strings.ToLower(s), k) {
			t.Errorf("%s shows key material %s…", what, k[:6])
		}
	}
}

// TestTunnelPing: two `imsec tunnel` runs with mirrored SAs on loopback
// ports; B pings A's inner address through the tunnel and exits 0; A,
// interrupted, prints counters that saw exactly those packets.
func TestTunnelPing(t *testing.T) {
	for _, c := range []struct {
		name    string
		ealg    string
		ekeyLen int
		alg     string
		akeyLen int
	}{
		{"aes-cbc/hmac-sha-1-96", "aes-cbc", 16, "hmac-sha-1-96", 20},
		{"aes-gcm", "aes-gcm", 20, "", 0},
		{"aes-256-gcm/alg=null", "aes-gcm", 36, "null", 0},
		{"null/hmac-sha-256-128", "null", 0, "hmac-sha-256-128", 32},
		{"des-ede3-cbc/hmac-md5-96", "des-ede3-cbc", 24, "hmac-md5-96", 16},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newTunnelPair(t, c.ealg, c.ekeyLen, c.alg, c.akeyLen)
			keylog := filepath.Join(t.TempDir(), "esp_sa")
			a := startTunnel(t, p.argsA("--keylog", keylog)...)
			code, out, errs := runCLI(t, append([]string{"tunnel"}, p.argsB("--ping", "100.64.7.1", "--count", "3", "--interval", "20ms")...)...)
			if code != 0 {
				t.Fatalf("ping: exit %d\n%s%s", code, out, errs)
			}
			for seq := 1; seq <= 3; seq++ {
				if !strings.Contains(out, fmt.Sprintf("64 bytes from 100.64.7.1: icmp_seq=%d time=", seq)) {
					t.Errorf("no round trip for icmp_seq=%d:\n%s", seq, out)
				}
			}
			if !strings.Contains(out, "3 packets transmitted, 3 received, 0% packet loss") || !strings.Contains(out, "rtt min/avg/max = ") {
				t.Errorf("no summary:\n%s", out)
			}
			if code := a.stop(t); code != 0 {
				t.Fatalf("A exit %d: %s", code, a.err.String())
			}
			aOut := a.out.String()
			// A saw the three requests (84 inner bytes each) and answered them.
			for _, want := range []string{"esp in:      3 packets, 252 inner bytes", "esp out:     3 packets, 252 inner bytes", "esp drops:   none"} {
				if !strings.Contains(aOut, want) {
					t.Errorf("A's counters lack %q:\n%s", want, aOut)
				}
			}
			for _, s := range []string{out, errs, aOut, a.err.String()} {
				noTunnelKeys(t, "output", s, p.keys())
			}
			// The key log has both SAs of A, mode 0600.
			fi, err := os.Stat(keylog)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("key log mode %v, want 0600", fi.Mode().Perm())
			}
			kl, _ := os.ReadFile(keylog)
			lines := strings.Split(strings.TrimSpace(string(kl)), "\n")
			if len(lines) != 2 || !strings.Contains(lines[0], `"0x00001001"`) || !strings.Contains(lines[1], `"0x00002001"`) ||
				!strings.HasPrefix(lines[0], fmt.Sprintf(`"IPv4","%s","%s"`, ipOf(p.aAddr), ipOf(p.bAddr))) {
				t.Errorf("key log:\n%s", kl)
			}
			for _, k := range p.keys() {
				if !strings.Contains(string(kl), k) {
					t.Errorf("key log lacks a key")
				}
			}
		})
	}
}

// TestTunnelMismatchedKeys: B's --in integrity key is not A's --out one.
// B's pings go unanswered (A drops them as failing authentication), B
// exits non-zero saying so, and A's counters show the auth drops.
func TestTunnelMismatchedKeys(t *testing.T) {
	p := newTunnelPair(t, "aes-cbc", 16, "hmac-sha-1-96", 20)
	wrong := newTunnelSA(0x2001, "aes-cbc", 16, "hmac-sha-1-96", 20) // A opens B's packets with other keys
	a := startTunnel(t, "--listen", p.aAddr, "--peer", p.bAddr, "--inner", "100.64.7.1/24", "--out", p.ab.spec, "--in", wrong.spec)
	code, out, errs := runCLI(t, append([]string{"tunnel"}, p.argsB("--ping", "100.64.7.1", "--count", "2", "--interval", "10ms", "--wait", "300ms")...)...)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "2 packets transmitted, 0 received, 100% packet loss") || !strings.Contains(out, "no reply from 100.64.7.1: icmp_seq=2") {
		t.Errorf("stdout:\n%s", out)
	}
	if !strings.HasPrefix(errs, "imsec tunnel: 2 of 2 echo requests to 100.64.7.1 went unanswered") || !strings.Contains(errs, "auth means the keys differ") || strings.Count(errs, "\n") != 1 {
		t.Errorf("stderr: %q", errs)
	}
	a.stop(t)
	if aOut := a.out.String(); !strings.Contains(aOut, "esp drops:   auth 2 (integrity check failed") || !strings.Contains(aOut, "esp in:      0 packets") {
		t.Errorf("A's counters do not show the auth drops:\n%s", aOut)
	}
	noTunnelKeys(t, "output", out+errs+a.out.String()+a.err.String(), append(p.keys(), wrong.keys...))
}

// TestTunnelUnknownSPI: B sends under an SPI A has no inbound SA for.
func TestTunnelUnknownSPI(t *testing.T) {
	p := newTunnelPair(t, "aes-gcm", 20, "", 0)
	other := newTunnelSA(0x3001, "aes-gcm", 20, "", 0)
	a := startTunnel(t, "--listen", p.aAddr, "--peer", p.bAddr, "--inner", "100.64.7.1/24", "--out", p.ab.spec, "--in", other.spec)
	code, _, _ := runCLI(t, append([]string{"tunnel"}, p.argsB("--ping", "100.64.7.1", "--count", "1", "--wait", "200ms")...)...)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	a.stop(t)
	if aOut := a.out.String(); !strings.Contains(aOut, "unknown_spi 1 (no --in SA has that SPI)") {
		t.Errorf("A's counters:\n%s", aOut)
	}
}

func TestTunnelHelp(t *testing.T) {
	code, _, errs := runCLI(t, "tunnel", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"Usage: imsec tunnel", "two terminals", "--ping 100.64.7.1", "-keylog", "-tun", "ealg=aes-cbc", "unknown_spi"} {
		if !strings.Contains(errs, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if code, out, _ := runCLI(t, "help"); code != 0 || !strings.Contains(out, "tunnel") {
		t.Error("imsec help does not list tunnel")
	}
}

// TestTunnelBadFlags: every malformed flag is one line on stderr naming
// the problem, exit 2, and no key material in it.
func TestTunnelBadFlags(t *testing.T) {
	const (
		ek   = "00112233445566778899aabbccddeeff"
		ak   = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3"
		good = "spi=0x1001,ealg=aes-cbc,ekey=" + ek + ",alg=hmac-sha-1-96,akey=" + ak
	)
	base := func(out string, extra ...string) []string {
		return append([]string{"tunnel", "--listen", "127.0.0.1:4501", "--peer", "127.0.0.1:4502",
			"--inner", "100.64.7.1/24", "--out", out, "--in", good}, extra...)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"tunnel"}, "--peer ADDR:PORT is required"},
		{base(good, "--mode", "transport"), `--mode "transport": want one of udp-enc-tun, udp-enc-trans, tun, trans`},
		{base(good, "--mode", "trans", "--tun", "imsect9"), "--mode trans: trans hands segments on as from the peer's outer address: use the netstack"},
		{[]string{"tunnel", "--peer", "nowhere"}, `--peer "nowhere": want ADDR:PORT`},
		{[]string{"tunnel", "--peer", "0.0.0.0:4500"}, "want the peer's own address"},
		{[]string{"tunnel", "--peer", "127.0.0.1:0"}, "want the peer's own address"},
		{[]string{"tunnel", "--listen", "localhost", "--peer", "127.0.0.1:1"}, `--listen "localhost"`},
		{[]string{"tunnel", "--listen", "[::1]:4500", "--peer", "127.0.0.1:1"}, "both must be IPv4 or both IPv6"},
		{[]string{"tunnel", "--peer", "127.0.0.1:1"}, "--out is required"},
		{[]string{"tunnel", "--peer", "127.0.0.1:1", "--out", good}, "--in is required"},
		{[]string{"tunnel", "--peer", "127.0.0.1:1", "--out", good, "--in", good}, "--inner ADDR/BITS is required"},
		{base("ealg=aes-cbc,ekey=" + ek + ",alg=hmac-sha-1-96,akey=" + ak), "--out: spi is missing"},
		{base("spi=banana," + good[11:]), `--out: spi "banana": want a 32-bit number`},
		{base("spi=0x100000000," + good[11:]), "--out: spi (value not shown): want a 32-bit number"},
		{base("spi=" + ek + "," + good[11:]), "--out: spi (value not shown): want a 32-bit number"},
		{base("spi=0x1001,ealg=" + ak + ",ekey=" + ek + ",alg=hmac-sha-1-96,akey=" + ak), "--out: unknown ealg (value not shown)"},
		{base("spi=0x1001,ealg=aes-cbc,ekey=" + ek + ",alg=" + ak + ",akey=" + ak), "--out: unknown alg (value not shown)"},
		{base("spi=255," + good[11:]), "--out: spi 255 is reserved"},
		{base("spi=0," + good[11:]), "--out: spi 0 is reserved"},
		{base("spi=0x1001,ekey=" + ek + ",alg=hmac-sha-1-96,akey=" + ak), "--out: ealg is missing"},
		{base("spi=0x1001,ealg=aes-ctr,ekey=" + ek + ",alg=hmac-sha-1-96,akey=" + ak), `--out: unknown ealg "aes-ctr"`},
		{base("spi=0x1001,ealg=aes-cbc,ekey=" + ek + ",akey=" + ak), "--out: alg is missing"},
		{base("spi=0x1001,ealg=aes-cbc,ekey=" + ek + ",alg=hmac-sha-512,akey=" + ak), `--out: unknown alg "hmac-sha-512"`},
		{base("spi=0x1001,ealg=aes-cbc,alg=hmac-sha-1-96,akey=" + ak), "--out: ekey is missing: aes-cbc takes 16, 24 or 32 bytes (32, 48 or 64 hex digits)"},
		{base("spi=0x1001,ealg=aes-cbc,ekey=" + ek + ",alg=hmac-sha-1-96"), "--out: akey is missing: hmac-sha-1-96 takes 20 bytes (40 hex digits)"},
		{base("spi=0x1001,ealg=aes-cbc,ekey=" + ek[:30] + ",alg=hmac-sha-1-96,akey=" + ak), "--out: ekey is 15 bytes: aes-cbc takes 16, 24 or 32 bytes"},
		{base("spi=0x1001,ealg=aes-cbc,ekey=" + ek + ",alg=hmac-sha-1-96,akey=" + ak + "00"), "--out: akey is 21 bytes: hmac-sha-1-96 takes 20 bytes"},
		{base("spi=0x1001,ealg=aes-gcm,ekey=" + ek), "--out: ekey is 16 bytes: aes-gcm takes 20, 28 or 36 bytes"},
		{base("spi=0x1001,ealg=des-ede3-cbc,ekey=" + ek + ",alg=hmac-md5-96,akey=" + ek), "des-ede3-cbc takes 24 bytes"},
		{base("spi=0x1001,ealg=aes-cbc,ekey=" + ek[:31] + "g,alg=hmac-sha-1-96,akey=" + ak), "--out: ekey is not hex: invalid character at position 32 (value not shown)"},
		{base("spi=0x1001,ealg=aes-cbc,ekey=" + ek[:31] + ",alg=hmac-sha-1-96,akey=" + ak), "--out: ekey is not hex: odd number of digits (31)"},
		{base("spi=0x1001,ealg=aes-gcm,ekey=" + ek + "01020304,alg=hmac-sha-1-96,akey=" + ak), "aes-gcm authenticates by itself"},
		{base("spi=0x1001,ealg=aes-cbc,ekey=" + ek + ",alg=null"), "alg null is only for aes-gcm"},
		{base("spi=0x1001,ealg=null,alg=null"), "alg null is only for aes-gcm"},
		{base("spi=0x1001,ealg=null,ekey=" + ek + ",alg=hmac-sha-1-96,akey=" + ak), "--out: null takes no ekey (value not shown)"},
		{base(good + ",spi=0x1002"), "--out: spi given twice"},
		{base(good + ",mode=tunnel"), `--out: unknown field "mode"`},
		{base(good + "," + ek + "=1"), "--out: field 6 has an unknown name"},
		{base("spi=0x1001,ealg=aes-cbc,ekey:" + ek + ",alg=hmac-sha-1-96,akey=" + ak), "--out: field 3 is not key=value"},
		{[]string{"tunnel", "--peer", "127.0.0.1:1", "--out", good, "--in", "spi=0x2001,ealg=aes-cbc"}, "--in: alg is missing"},
		{base(good, "--inner", "100.64.7.1/33"), `--inner "100.64.7.1/33"`},
		{base(good, "--inner", "0.0.0.0/0"), "want a unicast IPv4 or IPv6 address"},
		{base(good, "--ping", "100.64.7.x"), `--ping "100.64.7.x": want an inner IP address`},
		{base(good, "--ping", "100.64.7.2", "--count", "0"), "--count 0: want at least 1"},
		{base(good, "--count", "3"), "--count needs --ping"},
		{base(good, "--wait", "1s"), "--wait needs --ping"},
		{base(good, "--ping", "100.64.7.2", "--interval", "0s"), "--interval and --wait must be positive"},
		{base(good, "--mtu", "100"), "--mtu 100: want 1280..65535"},
		{base(good, "--keepalive", "-1s"), "--keepalive must not be negative"},
		{base(good, "--batch-pad", "300"), "--batch-pad must be -1 (off), 0 (default) or 1..255 bytes, got 300"},
		{base(good, "--route", "198.51.100.0/24"), "--route needs --tun"},
		{base(good, "--tun", "imsec%d", "--route", "198.51.100.0"), `--route "198.51.100.0": want PREFIX`},
		{base(good, "--tun", "imsec%d", "--ping", "2001:db8::1"), "with --tun only IPv4 can be pinged"},
		{base(good, "--count=x"), `invalid value "x" for flag -count`},
		{base(good, "extra"), `unexpected argument "extra"`},
	}
	for _, c := range cases {
		code, out, errs := runCLI(t, c.args...)
		if code != 2 || !strings.HasPrefix(errs, "imsec tunnel: ") || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, c.want) || out != "" {
			t.Errorf("%q:\ncode %d stderr %q, want exit 2 and one line with %q", c.args, code, errs, c.want)
		}
		noTunnelKeys(t, fmt.Sprintf("error for %q", c.args), errs, []string{ek, ek[:30], ek[:31], ak})
	}
}

// The kernel TUN tests run the test binary again in a network namespace of
// its own (unshare -n), so the TUN interfaces and addresses never touch
// the host. tunnelNetnsEnv tells the child it is there.
const tunnelNetnsEnv = "IMSEC_TUNNEL_TEST_IN_NETNS"

// inFreshNetns re-runs test name in a new network namespace, with wrap
// (e.g. setpriv) between unshare and the binary, and requires it to pass.
// It reports whether the caller is the child, which then does the work.
func inFreshNetns(t *testing.T, name string, wrap ...string) bool {
	t.Helper()
	if os.Getenv(tunnelNetnsEnv) == name {
		return true
	}
	if runtime.GOOS != "linux" {
		t.Skip("kernel TUN test is Linux-only")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and a TUN in it; CI runs as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver: %v", err)
	}
	for _, tool := range append([]string{"unshare", "ip"}, wrap[:min(1, len(wrap))]...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (util-linux, iproute2); CI installs them", tool)
		}
	}
	args := append(append([]string{"-n"}, wrap...), os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1")
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), tunnelNetnsEnv+"="+name)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+name) {
		t.Fatalf("in a fresh network namespace: %v\n%s", err, out)
	}
	t.Logf("in a fresh network namespace:\n%s", out)
	return false
}

// TestTunnelKernelTUN: `imsec tunnel --tun` on a kernel TUN in a fresh
// network namespace, its peer on the netstack. The peer pings the TUN's
// address (the kernel answers, through the pump), and the TUN end pings
// the peer's (the pump's own echo helper).
func TestTunnelKernelTUN(t *testing.T) {
	if !inFreshNetns(t, "TestTunnelKernelTUN") {
		return
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v %s", err, out)
	}
	p := newTunnelPair(t, "aes-cbc", 16, "hmac-sha-256-128", 32)
	a := startTunnel(t, p.argsA("--tun", "imsect%d", "--route", "203.0.113.0/24")...)
	if !strings.Contains(a.out.String(), "tunnel up: TUN imsect0 100.64.7.1/24 (MTU 1422)") {
		t.Fatalf("A: %s", a.out.String())
	}
	route, err := exec.Command("ip", "-4", "route", "get", "203.0.113.9").CombinedOutput()
	if err != nil || !strings.Contains(string(route), "dev imsect0") {
		t.Errorf("--route not installed: %v %s", err, route)
	}
	code, out, errs := runCLI(t, append([]string{"tunnel"}, p.argsB("--ping", "100.64.7.1", "--count", "3", "--interval", "20ms")...)...)
	if code != 0 || !strings.Contains(out, "3 packets transmitted, 3 received") {
		t.Fatalf("netstack pings the kernel: exit %d\n%s%s", code, out, errs)
	}
	if code := a.stop(t); code != 0 || !strings.Contains(a.out.String(), "esp drops:   none") {
		t.Fatalf("A: exit %d\n%s%s", code, a.out.String(), a.err.String())
	}
	if l, err := net.InterfaceByName("imsect0"); err == nil {
		t.Errorf("%s still exists after the tunnel stopped", l.Name)
	}

	// The other way round: the TUN end pings.
	p = newTunnelPair(t, "aes-gcm", 20, "", 0)
	b := startTunnel(t, p.argsB()...)
	code, out, errs = runCLI(t, append([]string{"tunnel"}, p.argsA("--tun", "imsect%d", "--ping", "100.64.7.2", "--count", "3", "--interval", "20ms")...)...)
	if code != 0 || !strings.Contains(out, "3 packets transmitted, 3 received") || !strings.Contains(out, "bytes from 100.64.7.2: icmp_seq=3") {
		t.Fatalf("TUN end pings the netstack: exit %d\n%s%s", code, out, errs)
	}
	b.stop(t)
}

// TestTunnelTUNNeedsPrivilege: without CAP_NET_ADMIN, --tun fails with an
// error that says what is missing and that the netstack needs nothing.
func TestTunnelTUNNeedsPrivilege(t *testing.T) {
	if os.Getenv(tunnelNetnsEnv) == "" && os.Geteuid() == 0 {
		// As root: drop CAP_NET_ADMIN (inheritable and bounding sets, so
		// the exec'd binary has it in no set) in a namespace of its own.
		if !inFreshNetns(t, "TestTunnelTUNNeedsPrivilege", "setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--") {
			return
		}
	} else if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver: %v", err)
	}
	p := newTunnelPair(t, "aes-cbc", 16, "hmac-sha-1-96", 20)
	code, out, errs := runCLI(t, append([]string{"tunnel"}, p.argsA("--tun", "imsect%d")...)...)
	if code != 1 || out != "" || !strings.Contains(errs, "--tun imsect%d: creating a kernel TUN needs CAP_NET_ADMIN") ||
		!strings.Contains(errs, "without --tun the tunnel runs on a userspace netstack") || strings.Count(errs, "\n") != 1 {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errs)
	}
}

// TestTunnelKeepalives: two idle tunnels with --keepalive 1s send each
// other RFC 3948 NAT-keepalives, which the counters show on exit.
func TestTunnelKeepalives(t *testing.T) {
	p := newTunnelPair(t, "aes-gcm", 20, "", 0)
	a := startTunnel(t, p.argsA("--keepalive", "1s")...)
	b := startTunnel(t, p.argsB("--keepalive", "1s")...)
	time.Sleep(2200 * time.Millisecond) // the pump checks once a second
	a.stop(t)
	b.stop(t)
	re := regexp.MustCompile(`keepalives:  (\d+) sent, (\d+) received`)
	for name, e := range map[string]*tunnelEnd{"A": a, "B": b} {
		m := re.FindStringSubmatch(e.out.String())
		if m == nil || m[1] == "0" || m[2] == "0" {
			t.Errorf("%s sent or received no keepalive:\n%s", name, e.out.String())
		}
	}
}

// TestTunnelModes: two `imsec tunnel` runs in each --mode other than the
// default. In the transport modes each end's inner side holds its own
// outer address and B pings A's outer address through the SAs; in
// tunnel mode over plain ESP B pings A's inner address. The plain-ESP
// modes need CAP_NET_RAW.
func TestTunnelModes(t *testing.T) {
	for _, mode := range []string{"udp-enc-trans", "tun", "trans"} {
		t.Run(mode, func(t *testing.T) {
			plain := mode == "tun" || mode == "trans"
			if plain {
				c, err := ipesp.Listen(netip.MustParseAddr("127.0.0.1"))
				if err != nil {
					t.Skipf("plain ESP needs CAP_NET_RAW: %v", err)
				}
				c.Close()
			}
			p := newTunnelPair(t, "aes-cbc", 16, "hmac-sha-1-96", 20)
			innerA, innerB, target := "100.64.7.1/24", "100.64.7.2/24", "100.64.7.1"
			if mode != "tun" {
				innerA, innerB, target = ipOf(p.aAddr)+"/32", ipOf(p.bAddr)+"/32", ipOf(p.aAddr)
			}
			peerA, peerB := p.bAddr, p.aAddr
			if plain {
				peerA, peerB = ipOf(p.bAddr), ipOf(p.aAddr) // no ports
			}
			keylog := filepath.Join(t.TempDir(), "esp_sa")
			a := startTunnel(t, "--mode", mode, "--listen", p.aAddr, "--peer", peerA, "--inner", innerA,
				"--out", p.ab.spec, "--in", p.ba.spec, "--keylog", keylog)
			code, out, errs := runCLI(t, "tunnel", "--mode", mode, "--listen", p.bAddr, "--peer", peerB, "--inner", innerB,
				"--out", p.ba.spec, "--in", p.ab.spec, "--ping", target, "--count", "3", "--interval", "20ms")
			if code != 0 || !strings.Contains(out, "3 packets transmitted, 3 received, 0% packet loss") {
				t.Fatalf("ping: exit %d\n%s%s\nA: %s%s", code, out, errs, a.out.String(), a.err.String())
			}
			want := map[string]string{"udp-enc-trans": "ESP-in-UDP transport mode", "tun": "plain ESP tunnel mode", "trans": "plain ESP transport mode"}[mode]
			if !strings.Contains(out, want) {
				t.Errorf("the banner does not say %q:\n%s", want, out)
			}
			if code := a.stop(t); code != 0 {
				t.Fatalf("A exit %d: %s", code, a.err.String())
			}
			if !strings.Contains(a.out.String(), "esp in:      3 packets") || !strings.Contains(a.out.String(), "esp drops:   none") {
				t.Errorf("A's counters:\n%s", a.out.String())
			}
		})
	}
}

// TestTunnelPlainWithoutCapNetRaw: --mode trans in a child without
// CAP_NET_RAW fails at once, naming the capability and the way out.
func TestTunnelPlainWithoutCapNetRaw(t *testing.T) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	c, err := ipesp.Listen(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Skipf("we must hold CAP_NET_RAW to drop it: %v", err)
	}
	c.Close()
	p := newTunnelPair(t, "aes-cbc", 16, "hmac-sha-1-96", 20)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, setpriv, "--inh-caps=-net_raw", "--ambient-caps=-net_raw", "--bounding-set=-net_raw", "--",
		os.Args[0], "-test.run=^TestTunnelPlainChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "IMSEC_TUNNEL_CHILD="+strings.Join([]string{"--mode", "trans", "--listen", p.aAddr, "--peer", ipOf(p.bAddr),
		"--inner", ipOf(p.aAddr) + "/32", "--out", p.ab.spec, "--in", p.ba.spec}, " "))
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestTunnelPlainChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	noTunnelKeys(t, "child output", string(out), p.keys())
}

func TestTunnelPlainChild(t *testing.T) {
	args := os.Getenv("IMSEC_TUNNEL_CHILD")
	if args == "" {
		t.Skip("runs as TestTunnelPlainWithoutCapNetRaw's child")
	}
	code, out, errs := runCLI(t, append([]string{"tunnel"}, strings.Fields(args)...)...)
	if code != 1 || !strings.Contains(errs, "CAP_NET_RAW") || !strings.Contains(errs, "--mode udp-enc-tun") || strings.Count(errs, "\n") != 1 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
}
