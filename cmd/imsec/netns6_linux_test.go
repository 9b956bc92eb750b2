package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imsec/imsec/internal/tsharktest"
)

// TestNetnsIPv6DualStack runs the real binary in three network namespaces
// on a routed IPv6 path (no NAT66: IPv6 needs none), with the P-CSCF
// serving IPv4 and IPv6 UEs on one dual-stack listener:
//
//	ue6 2001:db8:1::2 (UE A, IPv6 only)
//	  | 2001:db8:1::/64
//	router 2001:db8:1::1 / 2001:db8:2::1 (IPv6 forwarding), tshark on lan0
//	  | 2001:db8:2::/64
//	network: P-CSCF on [::] (2001:db8:2::10 and 198.51.100.10), UE B 198.51.100.30
//
// UE A registers over IPv6 (mod=UDP-enc-tun, ESP in UDP over IPv6) and
// asks for both inner addresses (--inner dual: DHCP and DHCPv6, SIP over
// inner IPv6), UE B over IPv4 at the same P-CSCF, at the same time. The router records UE A's
// traffic; tshark, given the P-CSCF's key log, must decrypt every ESP
// packet with a good ICV and find the protected REGISTER and its 200 OK
// inside, in inner IPv6; with one bit of every integrity key flipped, no ICV may check.
//
// It needs root (namespaces, veths) and ip, bash and tshark; CI runs as
// root and installs them (.ci/run).
func TestNetnsIPv6DualStack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and veth pairs (CI runs as root)")
	}
	for tool, pkg := range map[string]string{"ip": "iproute2", "bash": "bash", "tshark": "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian: apt-get install %s)", tool, pkg)
		}
	}
	dir := t.TempDir()
	bin := buildImsec(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	pid := os.Getpid()
	ue6, router, network := fmt.Sprintf("imsec-ue6-%d", pid), fmt.Sprintf("imsec-rt6-%d", pid), fmt.Sprintf("imsec-net6-%d", pid)
	for _, ns := range []string{ue6, router, network} {
		nsRun(ctx, t, "", "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v %s", ns, err, out)
			}
		})
	}
	// nodad: the addresses are usable at once (no duplicate address
	// detection on links this test made).
	for _, c := range [][]string{
		{router, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", ue6},
		{router, "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", network},
		{ue6, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad"},
		{ue6, "ip", "link", "set", "lo", "up"},
		{ue6, "ip", "link", "set", "eth0", "up"},
		{ue6, "ip", "-6", "route", "add", "default", "via", "2001:db8:1::1"},
		{router, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "lan0", "nodad"},
		{router, "ip", "addr", "add", "2001:db8:2::1/64", "dev", "wan0", "nodad"},
		{router, "ip", "link", "set", "lo", "up"},
		{router, "ip", "link", "set", "lan0", "up"},
		{router, "ip", "link", "set", "wan0", "up"},
		{router, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"}, // this namespace's only
		{network, "ip", "addr", "add", "2001:db8:2::10/64", "dev", "eth0", "nodad"},
		{network, "ip", "addr", "add", "198.51.100.10/24", "dev", "eth0"},
		{network, "ip", "addr", "add", "198.51.100.30/24", "dev", "eth0"},
		{network, "ip", "link", "set", "lo", "up"},
		{network, "ip", "link", "set", "eth0", "up"},
		{network, "ip", "-6", "route", "add", "2001:db8:1::/64", "via", "2001:db8:2::1"},
	} {
		nsRun(ctx, t, c[0], c[1], c[2:]...)
	}
	db := filepath.Join(dir, "a.db")
	for _, a := range [][]string{
		{"sub", "add", "--db", db, "--impi", "alice@a.example", "--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP},
		{"sub", "add", "--db", db, "--impi", "bob@a.example", "--impu", "sip:bob@a.example", "--k", tsK, "--op", tsOP},
	} {
		if out, err := exec.CommandContext(ctx, bin, a...).CombinedOutput(); err != nil {
			t.Fatalf("imsec %v: %v\n%s", a, err, out)
		}
	}

	// The capture on the router's LAN side: only UE A's traffic. tshark
	// runs dumpcap and prints a line per packet written (-P, flushed: -l),
	// so the test knows when a packet it sent last is in the file.
	capFile := filepath.Join(dir, "ue6.pcapng")
	dc := exec.CommandContext(ctx, "ip", "netns", "exec", router, "tshark", "-n", "-l", "-P", "-i", "lan0", "-w", capFile)
	var dcOut, dcErr output
	dc.Stdout, dc.Stderr = &dcOut, &dcErr
	dc.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir)
	dc.WaitDelay = 5 * time.Second
	if err := dc.Start(); err != nil {
		t.Fatal(err)
	}
	dcDone := make(chan struct{})
	go func() { dc.Wait(); close(dcDone) }()
	stopCapture := func() {
		select {
		case <-dcDone:
			return
		default:
		}
		dc.Process.Signal(syscall.SIGTERM) // tshark, which this test started
		select {
		case <-dcDone:
		case <-time.After(10 * time.Second):
			t.Errorf("tshark ignored SIGTERM for 10 s: killing it")
			dc.Process.Kill()
			<-dcDone
		}
	}
	t.Cleanup(stopCapture)
	waitLine(t, "tshark (capture)", &dcErr, nil, dcDone, "Capturing on", 10*time.Second)

	keylog := filepath.Join(dir, "keys")
	procs := &procSet{t: t, dir: dir, bin: bin}
	pcscf := procs.start(ctx, network, "pcscf", "pcscf", "--domain", "a.example", "--db", db, "--sip", "[::]:5060", "--pool6", "2001:db8:64::/64", "--keylog", keylog)
	pcscf.waitOut(t, "ESP-in-UDP [::]:4500", 10*time.Second)
	ueA := procs.start(ctx, ue6, "ue-a (IPv6)", "ue", "--pcscf", "[2001:db8:2::10]:5060", "--impi", "alice@a.example",
		"--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP, "--inner", "dual", "--once")
	ueB := procs.start(ctx, network, "ue-b (IPv4)", "ue", "--pcscf", "198.51.100.10:5060", "--local", "198.51.100.30", "--impi", "bob@a.example",
		"--impu", "sip:bob@a.example", "--k", tsK, "--op", tsOP, "--once")
	for _, u := range []*imsecProc{ueA, ueB} {
		if code := u.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("%s exit %d", u.name, code)
		}
		if !strings.Contains(u.stdout(), "200 OK: de-registered") {
			t.Errorf("%s did not de-register", u.name)
		}
	}
	ladder := pcscf.stdout()
	for _, want := range []string{"from [2001:db8:1::2]:", "from 198.51.100.30:"} {
		if !strings.Contains(ladder, "received REGISTER sip:") || !strings.Contains(ladder, want) {
			t.Errorf("P-CSCF ladder lacks a REGISTER %s", want)
		}
	}
	pcscf.stop(t)
	// A last datagram across the captured link: once tshark has printed
	// it, everything before it is in the file.
	nsRun(ctx, t, ue6, "bash", "-c", "echo end > /dev/udp/2001:db8:1::1/47999")
	waitLine(t, "tshark (capture)", &dcOut, &dcErr, dcDone, "47999", 10*time.Second)
	stopCapture()

	keys, err := os.ReadFile(keylog)
	if err != nil {
		t.Fatal(err)
	}
	var v6, v4 []string
	for _, l := range strings.Split(strings.TrimSpace(string(keys)), "\n") {
		switch {
		case strings.HasPrefix(l, `"IPv6","*","*",`):
			v6 = append(v6, l)
		case strings.HasPrefix(l, `"IPv4","*","*",`):
			v4 = append(v4, l)
		default:
			t.Errorf("key log line %q", l)
		}
	}
	if len(v6) != 6 || len(v4) != 6 { // per UE: four signalling SAs and the media pair
		t.Fatalf("key log: %d IPv6 and %d IPv4 lines, want 6 of each:\n%s", len(v6), len(v4), keys)
	}

	rows := tsharkESP(t, capFile, v6)
	esp, inner6, sips := 0, 0, map[string]bool{}
	for _, f := range rows {
		frame, protos, spi := f[0], f[1], f[2]
		layers := strings.Split(protos, ":")
		espAt := slices.Index(layers, "esp")
		if espAt < 0 {
			if slices.Contains(layers, "sip") {
				sips["unprotected "+f[5]+f[6]] = true
			}
			continue
		}
		esp++
		switch {
		case espAt+1 < len(layers) && layers[espAt+1] == "ipv6":
			inner6++
		case espAt+1 < len(layers) && layers[espAt+1] == "ip":
		default:
			t.Errorf("frame %s (spi %s): nothing decrypted inside ESP: %s", frame, spi, protos)
		}
		if !slices.Contains(layers[:espAt], "ipv6") || slices.Contains(layers[:espAt], "ip") {
			t.Errorf("frame %s (spi %s): outer layers %s, want IPv6 only", frame, spi, protos)
		}
		if f[3] != "1" || f[4] == "1" {
			t.Errorf("frame %s (spi %s): ICV good=%q bad=%q: %s", frame, spi, f[3], f[4], protos)
		}
		if at := slices.Index(layers, "sip"); at > espAt {
			sips[f[5]+f[6]] = true
			if layers[espAt+1] != "ipv6" {
				t.Errorf("frame %s: SIP inside ESP over inner %s, want inner IPv6 (a dual UE signals over IPv6)", frame, layers[espAt+1])
			}
		}
	}
	if esp < 6 {
		t.Fatalf("%d ESP frames on the IPv6 leg, want the registration, DHCP, the pings and the de-registration", esp)
	}
	for _, want := range []string{"REGISTER", "200", "unprotected REGISTER", "unprotected 401"} {
		if !sips[want] {
			t.Errorf("no %s on the IPv6 leg (seen %v)", want, sips)
		}
	}
	if inner6 == 0 {
		t.Errorf("no inner IPv6 packet inside ESP")
	}
	t.Logf("IPv6 leg: %d ESP frames (%d with inner IPv6), every ICV good; SIP seen: %v", esp, inner6, sips)

	// The check can fail: one bit of every integrity key flipped.
	bad := make([]string, len(v6))
	for i, l := range v6 {
		f := strings.Split(l, ",")
		k := []byte(f[7]) // "0x<hex>"
		d := strings.IndexByte("0123456789abcdef", k[3])
		k[3] = "0123456789abcdef"[d^1]
		f[7] = string(k)
		bad[i] = strings.Join(f, ",")
	}
	for _, f := range tsharkESP(t, capFile, bad) {
		if f[3] == "1" {
			t.Fatalf("frame %s: ICV good with a flipped key", f[0])
		}
	}
}

// tsharkESP reads a capture with ESP in UDP on 4500 and 4501 (the
// P-CSCF's signalling and media sockets) and the esp_sa lines given; one
// row per frame: number, protocols, SPI, ICV good, ICV bad, SIP method,
// SIP status.
func tsharkESP(t *testing.T, capFile string, uat []string) [][]string {
	t.Helper()
	decode := []string{"udp.port==4500,udpencap", "udp.port==4501,udpencap"}
	for _, p := range []int{5064, 5065, 5066, 5068, 5062, 5063} { // the inner SIP ports
		decode = append(decode, fmt.Sprintf("udp.port==%d,sip", p))
	}
	return tsharktest.Rows(context.Background(), t, tsharktest.Spec{File: capFile, UAT: uat, DecodeAs: decode,
		Fields: []string{"frame.number", "frame.protocols", "esp.spi", "esp.icv_good", "esp.icv_bad", "sip.Method", "sip.Status-Code"}})
}

// nsRun runs a command inside namespace ns (the caller's own if ns is "");
// failure fails the test.
func nsRun(ctx context.Context, t *testing.T, ns, name string, args ...string) string {
	t.Helper()
	return (*natTopology)(nil).run(ctx, t, ns, name, args...)
}
