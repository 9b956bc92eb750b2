package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestNetnsCallThroughNAT runs the real binary in three network namespaces
// joined by veth pairs, with a real NAT in between:
//
//	home 203.0.113.2 (UE A, kernel TUN)
//	  | 203.0.113.0/24
//	router 203.0.113.1 / 198.51.100.1 (nft masquerade random on the WAN side)
//	  | 198.51.100.0/24
//	network: P-CSCF A 198.51.100.10, P-CSCF B 198.51.100.20, UE B 198.51.100.30
//
// The network has no route to the home LAN, so UE A is reachable only
// through the NAT mappings its own traffic makes. UE A calls UE B; in the
// middle of the call the router's conntrack table is flushed, so every
// mapping dies and the next packets get new random source ports: the call
// must go on (P-CSCF A follows the UE's ESP to its new endpoint). Then the
// other way: UE A answers behind the NAT and UE B calls it, with a second
// flush in the middle of that call.
//
// It needs root (namespaces, veths, nft, a TUN device) and ip, nft and
// conntrack; CI runs as root and installs them (.ci/run).
func TestNetnsCallThroughNAT(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, veth pairs, an nft NAT and a kernel TUN device (CI runs as root)")
	}
	for tool, pkg := range map[string]string{"ip": "iproute2", "nft": "nftables", "conntrack": "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian: apt-get install %s)", tool, pkg)
		}
	}
	if testing.Short() {
		t.Skip("-short: a 30 s namespace test")
	}
	dir := t.TempDir()
	bin := buildImsec(t, dir)
	// The scenario takes about 20 s; 60 s bounds it, whatever hangs.
	// Cancelled after the cleanups that stop the processes with SIGTERM
	// (cancelling kills them): t.Cleanup runs last registered first.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	n := newNATTopology(ctx, t)

	dbA, dbB := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	for _, a := range [][]string{
		{"sub", "add", "--db", dbA, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP},
		{"sub", "add", "--db", dbB, "--impi", "bob@b.example", "--impu", "sip:bob@b.example", "--k", tsK, "--op", tsOP},
	} {
		if out, err := exec.CommandContext(ctx, bin, a...).CombinedOutput(); err != nil {
			t.Fatalf("imsec %v: %v\n%s", a, err, out)
		}
	}

	const (
		sipA, sipB = "198.51.100.10:5060", "198.51.100.20:5060"
		addrB      = "198.51.100.30"
	)
	procs := &procSet{t: t, dir: dir, bin: bin}
	pcscfA := procs.start(ctx, n.network, "pcscf-a", "pcscf", "--domain", "a.example", "--db", dbA, "--sip", sipA, "--peer", "b.example="+sipB, "-v")
	pcscfB := procs.start(ctx, n.network, "pcscf-b", "pcscf", "--domain", "b.example", "--db", dbB, "--sip", sipB, "--peer", "a.example="+sipA)
	pcscfA.waitOut(t, "ESP-in-UDP 198.51.100.10:4500", 10*time.Second)
	pcscfB.waitOut(t, "ESP-in-UDP 198.51.100.20:4500", 10*time.Second)
	alice := []string{"--pcscf", sipA, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP,
		"--tun", "imsec0", "--keepalive", "2s"}
	bob := []string{"--pcscf", sipB, "--local", addrB, "--impi", "bob@b.example", "--impu", "sip:bob@b.example", "--k", tsK, "--op", tsOP}

	// 1. UE A (behind the NAT) calls UE B (answering); flush mid-call.
	t0 := time.Now()
	ueB := procs.start(ctx, n.network, "ue-b", append([]string{"ue"}, bob...)...)
	ueB.waitOut(t, "200 OK: registered", 10*time.Second)
	const callAB = 12 * time.Second
	caller := procs.start(ctx, n.home, "ue-a-call", append([]string{"ue", "call", "sip:bob@b.example", "--duration", callAB.String()}, alice...)...)
	caller.waitOut(t, "call up", 10*time.Second)
	up := time.Now()
	// UE A really is in kernel TUN mode: the device holds its inner address.
	if out := n.run(ctx, t, n.home, "ip", "-4", "addr", "show", "dev", "imsec0"); !strings.Contains(out, "inet 100.64.") {
		t.Fatalf("imsec0 in the home namespace has no inner address:\n%s", out)
	}
	sleepUntil(ctx, up.Add(5*time.Second))
	movesBefore := strings.Count(pcscfA.stderr(), `msg="peer endpoint moved" peer=alice@a.example`)
	mappings := n.flushNAT(ctx, t)
	if !strings.Contains(mappings, "dport=4500") || !strings.Contains(mappings, "dport=4501") {
		t.Errorf("the router had no NAT mapping for the signalling (4500) and media (4501) tunnels before the flush:\n%s", mappings)
	}
	if code := caller.wait(t, callAB+15*time.Second); code != 0 {
		t.Fatalf("imsec ue call (alice -> bob) exit %d", code)
	}
	abDone := time.Now()
	checkReport(t, "alice (caller)", caller.stdout(), "sip:bob@b.example (caller)", callAB)
	ueB.waitOut(t, "call with sip:alice@a.example (callee)", 5*time.Second)
	ueB.waitOut(t, "frames", 2*time.Second) // the report's last lines
	checkReport(t, "bob (callee)", ueB.stdout(), "sip:alice@a.example (callee)", callAB)
	if !strings.Contains(pcscfA.stdout(), "NAT detected: Via 203.0.113.2:") {
		t.Errorf("P-CSCF A did not detect the NAT (no \"NAT detected: Via 203.0.113.2:...\" in its ladder)")
	}
	moves := strings.Count(pcscfA.stderr(), `msg="peer endpoint moved" peer=alice@a.example`)
	if movesBefore < 2 || moves <= movesBefore {
		t.Errorf("P-CSCF A's \"peer endpoint moved\" lines for alice: %d before the flush (want >= 2: signalling and media learnt), %d after the call (want more: the media tunnel's new mapping)", movesBefore, moves)
	}
	if !strings.Contains(caller.stdout(), "200 OK: de-registered") {
		t.Errorf("alice did not de-register after the call")
	}
	ueB.stop(t)
	if !strings.Contains(ueB.stdout(), "200 OK: de-registered") {
		t.Errorf("bob did not de-register on SIGTERM")
	}
	t.Logf("alice -> bob: registered and called in %v, call done %v after set-up (flush at 5 s)", up.Sub(t0).Round(time.Millisecond), abDone.Sub(up).Round(time.Millisecond))

	// 2. UE A answers behind the NAT, UE B calls it; flush mid-call.
	callee := procs.start(ctx, n.home, "ue-a", append([]string{"ue"}, alice...)...)
	callee.waitOut(t, "200 OK: registered", 10*time.Second)
	const callBA = 8 * time.Second
	t1 := time.Now()
	callerB := procs.start(ctx, n.network, "ue-b-call", append([]string{"ue", "call", "sip:alice@a.example", "--duration", callBA.String()}, bob...)...)
	callerB.waitOut(t, "call up", 10*time.Second)
	sleepUntil(ctx, time.Now().Add(3*time.Second))
	n.flushNAT(ctx, t)
	if code := callerB.wait(t, callBA+15*time.Second); code != 0 {
		t.Fatalf("imsec ue call (bob -> alice) exit %d", code)
	}
	checkReport(t, "bob (caller)", callerB.stdout(), "sip:alice@a.example (caller)", callBA)
	// The BYE reaches alice only if P-CSCF A knows her signalling tunnel's
	// endpoint after the flush.
	callee.waitOut(t, "call with sip:bob@b.example (callee)", 10*time.Second)
	callee.waitOut(t, "frames", 2*time.Second)
	checkReport(t, "alice (callee)", callee.stdout(), "sip:bob@b.example (callee)", callBA)
	callee.stop(t)
	if !strings.Contains(callee.stdout(), "200 OK: de-registered") {
		t.Errorf("alice did not de-register on SIGTERM through the NAT")
	}
	t.Logf("bob -> alice: call done in %v (flush at 3 s); whole test %v", time.Since(t1).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
}

// buildImsec builds the command under test into dir (bounded apart from
// the scenario: a cold build cache takes a while).
func buildImsec(t *testing.T, dir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
		if _, err := os.Stat(goTool); err != nil {
			t.Skip("needs the go command to build imsec")
		}
	}
	bin := filepath.Join(dir, "imsec")
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// natTopology is three network namespaces made for one run and always
// removed: home (UE A), router (NAT), network (both P-CSCFs and UE B).
type natTopology struct {
	home, router, network string
}

func newNATTopology(ctx context.Context, t *testing.T) *natTopology {
	t.Helper()
	pid := os.Getpid()
	n := &natTopology{
		home:    fmt.Sprintf("imsec-home-%d", pid),
		router:  fmt.Sprintf("imsec-router-%d", pid),
		network: fmt.Sprintf("imsec-net-%d", pid),
	}
	for _, ns := range []string{n.home, n.router, n.network} {
		n.run(ctx, t, "", "ip", "netns", "add", ns)
		t.Cleanup(func() {
			// Deleting the namespace deletes its veth ends and TUN devices.
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v %s", ns, err, out)
			}
		})
	}
	// Every link is made from inside a namespace and its peer moved
	// straight into another: the host's own namespace is never touched.
	for _, c := range [][]string{
		{n.router, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", n.home},
		{n.router, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", n.network},
		{n.home, "ip", "addr", "add", "203.0.113.2/24", "dev", "eth0"},
		{n.home, "ip", "link", "set", "lo", "up"},
		{n.home, "ip", "link", "set", "eth0", "up"},
		{n.home, "ip", "route", "add", "default", "via", "203.0.113.1"},
		{n.router, "ip", "addr", "add", "203.0.113.1/24", "dev", "lan0"},
		{n.router, "ip", "addr", "add", "198.51.100.1/24", "dev", "wan0"},
		{n.router, "ip", "link", "set", "lo", "up"},
		{n.router, "ip", "link", "set", "lan0", "up"},
		{n.router, "ip", "link", "set", "wan0", "up"},
		{n.router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"}, // this namespace's only
		{n.network, "ip", "addr", "add", "198.51.100.10/24", "dev", "eth0"},
		{n.network, "ip", "addr", "add", "198.51.100.20/24", "dev", "eth0"},
		{n.network, "ip", "addr", "add", "198.51.100.30/24", "dev", "eth0"},
		{n.network, "ip", "link", "set", "lo", "up"},
		{n.network, "ip", "link", "set", "eth0", "up"},
	} {
		n.run(ctx, t, c[0], c[1], c[2:]...)
	}
	// Masquerade with a random source port, so that a flushed mapping comes
	// back on a new port (a NAT reboot or an expired binding).
	nat := filepath.Join(t.TempDir(), "nat.nft")
	rules := `table ip imsec_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade random
	}
}
`
	if err := os.WriteFile(nat, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	n.run(ctx, t, n.router, "nft", "-f", nat)
	return n
}

// run runs a command inside namespace ns (the caller's own if ns is "")
// and returns its output; failure fails the test.
func (n *natTopology) run(ctx context.Context, t *testing.T, ns, name string, args ...string) string {
	t.Helper()
	if ns != "" {
		args = append([]string{"netns", "exec", ns, name}, args...)
		name = "ip"
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// flushNAT empties the router's conntrack table (every NAT mapping dies)
// and returns the UDP mappings it held.
func (n *natTopology) flushNAT(ctx context.Context, t *testing.T) string {
	t.Helper()
	list := n.run(ctx, t, n.router, "conntrack", "-L", "-p", "udp")
	n.run(ctx, t, n.router, "conntrack", "-F")
	t.Logf("flushed the router's conntrack table; it held:\n%s", list)
	return list
}

// procSet starts imsec processes in namespaces, with their output kept and
// printed if the test fails, and stops every one it started.
type procSet struct {
	t    *testing.T
	dir  string
	bin  string
	once sync.Once
	all  []*imsecProc
}

type imsecProc struct {
	name     string
	cmd      *exec.Cmd
	out, err output
	done     chan struct{} // closed once the process exited and its output is read
	exitErr  error
}

func (s *procSet) start(ctx context.Context, ns, name string, args ...string) *imsecProc {
	t := s.t
	t.Helper()
	s.once.Do(func() {
		t.Cleanup(func() {
			if !t.Failed() {
				return
			}
			for _, p := range s.all {
				t.Logf("--- %s (%s) stdout:\n%s\n--- %s stderr:\n%s", p.name, strings.Join(p.cmd.Args[5:], " "), p.stdout(), p.name, tail(p.stderr(), 200))
			}
		})
	})
	p := &imsecProc{name: name, done: make(chan struct{})}
	// 'ip netns exec' execs the command in place, so a signal to this
	// process reaches imsec itself.
	p.cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, s.bin}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.exitErr = p.cmd.Wait(); close(p.done) }()
	s.all = append(s.all, p)
	t.Cleanup(func() { p.stop(t) }) // runs before the namespaces go (LIFO)
	return p
}

func (p *imsecProc) stdout() string { return p.out.String() }
func (p *imsecProc) stderr() string { return p.err.String() }

func (p *imsecProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitOut waits for a line holding s in the process's stdout; the process
// exiting first, or the timeout, fails the test (the set's cleanup then
// shows every process's output).
func (p *imsecProc) waitOut(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	waitLine(t, p.name, &p.out, nil, p.done, s, timeout)
}

// wait waits for the process to exit by itself and returns its exit code
// (-1 if it did not exit in time, after killing it).
func (p *imsecProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Errorf("%s still running after %v: killing it", p.name, timeout)
		p.cmd.Process.Kill()
		<-p.done
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM (a UE de-registers on it), waits up to 10 s, then
// kills. Only this process, which this test started, is signalled.
func (p *imsecProc) stop(t *testing.T) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s ignored SIGTERM for 10 s: killing it", p.name)
		p.cmd.Process.Kill()
		<-p.done
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exit %d after SIGTERM", p.name, code)
	}
}

func sleepUntil(ctx context.Context, at time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(at)):
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("[... %d lines]", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

// checkReport finds the "call with HEAD" report in out and checks that
// audio and video both arrived for about the call's length, with little
// loss. Loss alone is not enough: media that stopped at the flush would
// show 0 % loss over the packets before it.
func checkReport(t *testing.T, who, out, head string, d time.Duration) {
	t.Helper()
	i := strings.Index(out, "call with "+head)
	if i < 0 {
		t.Errorf("%s: no report \"call with %s\"", who, head)
		return
	}
	lines := strings.Split(out[i:], "\n")
	col := map[string]int{}
	got := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "ssrc" {
			for j, name := range f {
				col[name] = j
			}
			continue
		}
		// The header's "delay mean/p50/p95/max" is two words, a row's one:
		// the columns up to loss% line up.
		if len(col) == 0 || len(f) <= col["loss%"] || (f[col["kind"]] != "audio" && f[col["kind"]] != "video") {
			continue
		}
		kind := f[col["kind"]]
		pkts, err1 := strconv.Atoi(f[col["pkts"]])
		loss, err2 := strconv.ParseFloat(f[col["loss%"]], 64)
		if err1 != nil || err2 != nil {
			t.Errorf("%s: unreadable %s line %q", who, kind, l)
			continue
		}
		got[kind] = true
		// 20 ms audio packets; video at 25 fps, at least one packet a frame.
		want := int(d/(20*time.Millisecond)) * 9 / 10
		if loss >= 10 || pkts < want {
			t.Errorf("%s: %s received %d packets (want >= %d) with %.2f%% loss (want < 10%%)", who, kind, pkts, want, loss)
		}
	}
	for _, kind := range []string{"audio", "video"} {
		if !got[kind] {
			t.Errorf("%s: the report has no %s stream received:\n%s", who, kind, out[i:])
		}
	}
}
