//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imsec/imsec/tun/udp"
)

// tunName is the TUN interface each namespace gets.
const tunName = "tunbench0"

// MeasureTUN measures a tun-mode tunnel. It makes two network namespaces
// joined by a veth pair (OuterA/24 and OuterB/24, MTU PathMTU), has build
// put the tunnel in them, gives the TUN interfaces InnerA and InnerB, and
// then runs one iperf3 TCP stream from A to B for opt.Duration (rounded up
// to whole seconds, as iperf3 takes it) and the small-packet test in each
// direction for half of it. The namespaces, and everything in them, are
// removed before it returns, also on failure and on cancellation.
func MeasureTUN(ctx context.Context, build TUNBuilder, opt MeasureOptions) (r TunnelResult, err error) {
	r = TunnelResult{Mode: ModeTUN}
	if err := opt.defaults(); err != nil {
		return r, err
	}
	if os.Geteuid() != 0 {
		return r, ErrNeedRoot
	}
	for _, tool := range []string{"ip", "iperf3"} {
		if _, err := exec.LookPath(tool); err != nil {
			return r, fmt.Errorf("bench: --mode tun needs %s in PATH (Debian packages iproute2 and iperf3): %w", tool, err)
		}
	}
	opt.Progress(1, numPhases, "setup: namespaces, veth, tunnel")
	env, err := newTUNEnv()
	if err != nil {
		return r, err
	}
	defer func() {
		if cerr := env.close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	plan := TUNPlan{
		Name:   tunName,
		OuterA: netip.AddrPortFrom(OuterA, espPort), OuterB: netip.AddrPortFrom(OuterB, espPort),
		InnerA: InnerA, InnerB: InnerB,
	}
	t, err := build(env.a, env.b, plan)
	if err != nil {
		return r, fmt.Errorf("bench: build the tunnel: %w", err)
	}
	defer t.Close()
	r.MTU = t.MTU()
	if err := opt.checkSizes(r.MTU); err != nil {
		return r, err
	}
	if p, ok := t.(interface{ Padding() (pad, packets uint64) }); ok {
		opt.Padding = p.Padding
	}
	for _, c := range [][]string{
		{"-n", env.a.name, "addr", "add", InnerA.String() + "/32", "peer", InnerB.String() + "/32", "dev", tunName},
		{"-n", env.a.name, "link", "set", tunName, "up"},
		{"-n", env.b.name, "addr", "add", InnerB.String() + "/32", "peer", InnerA.String() + "/32", "dev", tunName},
		{"-n", env.b.name, "link", "set", tunName, "up"},
	} {
		if err := ipCmd(c...); err != nil {
			return r, err
		}
	}

	// The small-packet sockets are connected to each other, as an RTP
	// application's are: the kernel then needs no route lookup per
	// datagram at either end, which is the harness's cost, not the tunnel's.
	var ends [2]dgramEnd
	for i, ns := range []*Netns{env.a, env.b} {
		inner := [2]netip.Addr{InnerA, InnerB}
		if err := ns.Do(func() error {
			c, err := udp.Dial(netip.AddrPortFrom(inner[i], dgramPort), netip.AddrPortFrom(inner[1-i], dgramPort))
			if err == nil {
				ends[i] = c
			}
			return err
		}); err != nil {
			if ends[0] != nil {
				ends[0].Close()
			}
			return r, err
		}
	}
	sinks := startSinks(ends[0], ends[1])
	defer sinks.close()
	if err := sinks.probe(ctx); err != nil {
		return r, err
	}

	if err := iperfStream(ctx, env, t, opt, &r); err != nil {
		return r, err
	}
	if err := sinks.run(ctx, &r, opt); err != nil {
		return r, err
	}
	return r, nil
}

// tunEnv is the two namespaces and the veth between them.
type tunEnv struct {
	a, b *Netns
}

// newTUNEnv makes namespaces imsec-bench-PID-a and -b, a veth pair between
// them with OuterA/24 and OuterB/24, and loopback up in each.
func newTUNEnv() (*tunEnv, error) {
	pid := os.Getpid()
	env := &tunEnv{}
	var err error
	if env.a, err = newNetns(fmt.Sprintf("imsec-bench-%d-a", pid)); err != nil {
		return nil, err
	}
	if env.b, err = newNetns(fmt.Sprintf("imsec-bench-%d-b", pid)); err != nil {
		env.close()
		return nil, err
	}
	for _, c := range [][]string{
		{"link", "add", "va", "netns", env.a.name, "type", "veth", "peer", "name", "vb", "netns", env.b.name},
		{"-n", env.a.name, "addr", "add", OuterA.String() + "/24", "dev", "va"},
		{"-n", env.b.name, "addr", "add", OuterB.String() + "/24", "dev", "vb"},
		{"-n", env.a.name, "link", "set", "va", "mtu", strconv.Itoa(PathMTU), "up"},
		{"-n", env.b.name, "link", "set", "vb", "mtu", strconv.Itoa(PathMTU), "up"},
		{"-n", env.a.name, "link", "set", "lo", "up"},
		{"-n", env.b.name, "link", "set", "lo", "up"},
	} {
		if err := ipCmd(c...); err != nil {
			env.close()
			return nil, err
		}
	}
	return env, nil
}

// close stops the namespaces' threads and deletes the namespaces (the veth
// and any interface left in them go with them).
func (e *tunEnv) close() error {
	var first error
	for _, n := range []*Netns{e.a, e.b} {
		if n == nil {
			continue
		}
		if err := n.remove(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Netns is a named network namespace (as `ip netns add` makes) with one OS
// thread inside it: Do runs a function on that thread, so the sockets and
// TUN interfaces it opens belong to the namespace and stay there whichever
// goroutine uses them afterwards.
type Netns struct {
	name string
	work chan func()
	done chan struct{}
}

// Do runs f on the namespace's thread and returns its error.
func (n *Netns) Do(f func() error) error {
	errc := make(chan error, 1)
	n.work <- func() { errc <- f() }
	return <-errc
}

// newNetns creates the named namespace and a thread inside it.
func newNetns(name string) (*Netns, error) {
	if err := ipCmd("netns", "add", name); err != nil {
		return nil, err
	}
	n := &Netns{name: name, work: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		defer close(n.done)
		// Never unlocked: when this goroutine ends the runtime ends the
		// thread, so no other goroutine ever runs in the namespace.
		runtime.LockOSThread()
		fd, err := unix.Open("/var/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			err = unix.Setns(fd, unix.CLONE_NEWNET)
			unix.Close(fd)
		}
		if err != nil {
			errc <- fmt.Errorf("bench: enter network namespace %s: %w", name, err)
			return
		}
		errc <- nil
		for f := range n.work {
			f()
		}
	}()
	if err := <-errc; err != nil {
		<-n.done
		ipCmd("netns", "del", name)
		return nil, err
	}
	return n, nil
}

func (n *Netns) remove() error {
	close(n.work)
	<-n.done
	return ipCmd("netns", "del", n.name)
}

// ipCmd runs ip(8) with args; it is never cancelled, so that cleanup runs
// to the end.
func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("bench: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// iperfResult is the part of iperf3's --json output we read.
type iperfResult struct {
	End struct {
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperfStream runs one iperf3 TCP stream from A to B and fills r's TCP
// figures. CPU counts this process and both iperf3 processes (`ip netns
// exec` execs iperf3 in place, so each command's rusage is iperf3's).
func iperfStream(ctx context.Context, env *tunEnv, t TUNTunnel, opt MeasureOptions, r *TunnelResult) error {
	secs := int(math.Ceil(opt.Duration.Seconds()))
	port := strconv.Itoa(tcpPort)
	server := exec.CommandContext(ctx, "ip", "netns", "exec", env.b.name, "iperf3", "-s", "-1", "--forceflush", "-B", InnerB.String(), "-p", port)
	sout, err := server.StdoutPipe()
	if err != nil {
		return err
	}
	var serr bytes.Buffer
	server.Stderr = &serr
	if err := server.Start(); err != nil {
		return fmt.Errorf("bench: start iperf3 server: %w", err)
	}
	serverDone := make(chan error, 1)
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(sout)
		said := false
		for sc.Scan() {
			if !said && strings.Contains(sc.Text(), "listening") {
				said = true
				close(listening)
			}
		}
		serverDone <- server.Wait()
	}()
	stopServer := func() {
		server.Process.Kill()
		<-serverDone
	}
	select {
	case <-listening:
	case err := <-serverDone:
		return fmt.Errorf("bench: iperf3 server exited: %v: %s", err, bytes.TrimSpace(serr.Bytes()))
	case <-time.After(5 * time.Second):
		stopServer()
		return errors.New("bench: iperf3 server did not start listening in 5 s")
	}

	cpu0 := processCPU()
	client := exec.CommandContext(ctx, "ip", "netns", "exec", env.a.name, "iperf3", "-c", InnerB.String(), "-p", port, "-t", strconv.Itoa(secs), "-J")
	var cout, cerr bytes.Buffer
	client.Stdout, client.Stderr = &cout, &cerr
	if err := client.Start(); err != nil {
		stopServer()
		return fmt.Errorf("bench: start iperf3 client: %w", err)
	}
	clientDone := make(chan error, 1)
	go func() { clientDone <- client.Wait() }()
	start := time.Now()
	rx0 := t.RxBytes()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var cliErr error
	for waiting := true; waiting; {
		select {
		case cliErr = <-clientDone:
			waiting = false
		case <-tick.C:
			el := time.Since(start)
			opt.Progress(2, numPhases, fmt.Sprintf("tcp %.2f Gbit/s (%ds of %ds)", float64(t.RxBytes()-rx0)*8/1e9/el.Seconds(), int(el.Seconds()+0.5), secs))
		}
	}
	select {
	case <-serverDone:
	case <-time.After(5 * time.Second):
		stopServer()
	}
	cpu := processCPU() - cpu0
	var res iperfResult
	if jerr := json.Unmarshal(cout.Bytes(), &res); jerr != nil || cliErr != nil || res.Error != "" {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("bench: iperf3 client: %v %s %s", cliErr, res.Error, bytes.TrimSpace(cerr.Bytes()))
	}
	extra := time.Duration(0)
	for _, ps := range []*os.ProcessState{client.ProcessState, server.ProcessState} {
		if ps != nil {
			extra += ps.UserTime() + ps.SystemTime()
		}
	}
	sr := res.End.SumReceived
	st := streamStats{bytes: int64(sr.Bytes), elapsed: time.Duration(sr.Seconds * float64(time.Second)), cpu: cpu}
	r.Gbps, r.DurationS, r.CPUPerGbit = st.figures(extra)
	return nil
}
