package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imsec/imsec/internal/tsharktest"
	"github.com/imsec/imsec/sip"
)

// TestNetnsTransportMode runs the real binary in two network namespaces
// joined by a veth pair, with no NAT between them:
//
//	ue 198.51.100.2 -- veth -- pcscf 198.51.100.10
//
// Both ends prefer mod=trans, so the P-CSCF picks transport mode over
// plain ESP (IP protocol 50, raw sockets). The UE registers, pings the
// P-CSCF through the SAs and de-registers (--once). dumpcap captures the
// P-CSCF's link; tshark, given the P-CSCF's key log, must find ESP (not
// ESP in UDP) in both directions with every ICV good, and inside it the
// protected REGISTER and its 200 OK.
//
// The same runs on IPv6 (TestNetnsTransportModeIPv6): 2001:db8:100::2 and
// ::10, the P-CSCF with an inner IPv6 pool (a transport mode UE's SIP
// arrives from its own address, and the P-CSCF's inner side needs one of
// that family to take it).
//
// Root only (namespaces, raw sockets, dumpcap); needs ip, dumpcap and
// tshark.
func TestNetnsTransportMode(t *testing.T) {
	testNetnsTransportMode(t, transFamily{ue: "198.51.100.2", pcscf: "198.51.100.10", prefix: 24})
}

func TestNetnsTransportModeIPv6(t *testing.T) {
	testNetnsTransportMode(t, transFamily{ue: "2001:db8:100::2", pcscf: "2001:db8:100::10", prefix: 64,
		pcscfFlags: []string{"--pool6", "2001:db8:64::/120"}})
}

// transFamily is what differs between the IPv4 and the IPv6 run.
type transFamily struct {
	ue, pcscf  string
	prefix     int
	pcscfFlags []string
}

func (f transFamily) v6() bool { return strings.Contains(f.pcscf, ":") }

// hostPort is addr:port, bracketed for IPv6.
func (f transFamily) hostPort(addr string, port int) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}

func testNetnsTransportMode(t *testing.T, fam transFamily) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, a veth pair, raw ESP sockets and a capture (CI runs as root)")
	}
	for tool, pkg := range map[string]string{"ip": "iproute2", "dumpcap": "wireshark-common", "tshark": "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian: apt-get install %s)", tool, pkg)
		}
	}
	if testing.Short() {
		t.Skip("-short: a namespace test")
	}
	dir := t.TempDir()
	bin := buildImsec(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	pid := os.Getpid()
	nsUE, nsP := fmt.Sprintf("imsec-tue-%d", pid), fmt.Sprintf("imsec-tp-%d", pid)
	topo := &natTopology{}
	for _, ns := range []string{nsUE, nsP} {
		topo.run(ctx, t, "", "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v %s", ns, err, out)
			}
		})
	}
	// nodad: an IPv6 address is usable at once (no duplicate address
	// detection on a veth of our own).
	addr := func(a string) []string {
		c := []string{"ip", "addr", "add", fmt.Sprintf("%s/%d", a, fam.prefix), "dev", "eth0"}
		if fam.v6() {
			c = append(c, "nodad")
		}
		return c
	}
	for _, c := range [][]string{
		{nsP, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", nsUE},
		append([]string{nsP}, addr(fam.pcscf)...),
		{nsP, "ip", "link", "set", "lo", "up"},
		{nsP, "ip", "link", "set", "eth0", "up"},
		append([]string{nsUE}, addr(fam.ue)...),
		{nsUE, "ip", "link", "set", "lo", "up"},
		{nsUE, "ip", "link", "set", "eth0", "up"},
	} {
		topo.run(ctx, t, c[0], c[1], c[2:]...)
	}
	db := filepath.Join(dir, "a.db")
	if out, err := exec.CommandContext(ctx, bin, "sub", "add", "--db", db, "--impi", "alice@a.example", "--impu", "sip:alice@a.example",
		"--k", tsK, "--op", tsOP).CombinedOutput(); err != nil {
		t.Fatalf("imsec sub add: %v\n%s", err, out)
	}

	// The capture, on the P-CSCF's side of the link, before any traffic.
	capFile := filepath.Join(dir, "trans.pcapng")
	dc := exec.CommandContext(ctx, "ip", "netns", "exec", nsP, "dumpcap", "-q", "-i", "eth0", "-w", capFile)
	var dcErr output
	dc.Stderr = &dcErr
	dc.WaitDelay = 5 * time.Second
	if err := dc.Start(); err != nil {
		t.Fatal(err)
	}
	dcDone := make(chan struct{})
	go func() { dc.Wait(); close(dcDone) }()
	t.Cleanup(func() {
		dc.Process.Signal(syscall.SIGTERM)
		<-dcDone
	})
	waitLine(t, "dumpcap", &dcErr, nil, dcDone, "Capturing on", 10*time.Second)

	keylog := filepath.Join(dir, "esp_sa")
	procs := &procSet{t: t, dir: dir, bin: bin}
	sipP := fam.hostPort(fam.pcscf, 5060)
	pcscf := procs.start(ctx, nsP, "pcscf", append([]string{"pcscf", "--domain", "a.example", "--db", db, "--sip", sipP,
		"--modes", "trans,UDP-enc-tun", "--keylog", keylog, "-v"}, fam.pcscfFlags...)...)
	pcscf.waitOut(t, "ESP-in-UDP "+fam.hostPort(fam.pcscf, 4500), 10*time.Second)
	ue := procs.start(ctx, nsUE, "ue", "ue", "--pcscf", sipP, "--local", fam.ue, "--impi", "alice@a.example",
		"--impu", "sip:alice@a.example", "--k", tsK, "--op", tsOP, "--modes", "trans", "--once")
	if code := ue.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("imsec ue --once exit %d\n%s\n%s", code, ue.stdout(), ue.stderr())
	}
	for _, want := range []string{"mod=trans", "200 OK: registered", "200 OK: de-registered"} {
		if !strings.Contains(ue.stdout(), want) {
			t.Errorf("the UE's ladder lacks %q:\n%s", want, ue.stdout())
		}
	}
	if strings.Contains(ue.stderr(), "unavailable") || strings.Contains(pcscf.stderr(), "unavailable") {
		t.Errorf("an end fell back from plain ESP:\n%s\n%s", ue.stderr(), pcscf.stderr())
	}
	pcscf.stop(t)
	dc.Process.Signal(syscall.SIGTERM)
	<-dcDone

	kl, err := os.ReadFile(keylog)
	if err != nil {
		t.Fatal(err)
	}
	var decode []string
	for _, p := range []uint16{sip.DefaultPortS, sip.DefaultPortS + 1, sip.DefaultPortS + 2, sip.DefaultUEPortS, sip.DefaultUEPortS - 6, sip.DefaultUEPortS - 5} {
		decode = append(decode, fmt.Sprintf("udp.port==%d,sip", p), fmt.Sprintf("tcp.port==%d,sip", p))
	}
	rows := tsharktest.Rows(ctx, t, tsharktest.Spec{File: capFile, UAT: strings.Split(strings.TrimSpace(string(kl)), "\n"), DecodeAs: decode,
		Args: []string{"-Y", "esp"}, Fields: []string{"frame.protocols", "esp.spi", "esp.icv_good", "esp.icv_bad", "sip.Method", "sip.Status-Code", "sip.CSeq.method"}})
	var out strings.Builder // for the logs: the rows as tshark wrote them
	for _, f := range rows {
		out.WriteString(strings.Join(f, "|") + "\n")
	}
	var esp, good, udpEncap int
	var register, ok200 bool
	for _, f := range rows {
		esp++
		if strings.Contains(f[0], "udpencap") || strings.Contains(f[0], ":udp:esp") {
			udpEncap++
		}
		if outer := map[bool]string{true: ":ipv6:esp", false: ":ip:esp"}[fam.v6()]; !strings.Contains(f[0], outer) {
			t.Errorf("ESP frame not directly in the outer %s header: %s", outer[1:len(outer)-4], f[0])
		}
		if f[2] == "1" && f[3] != "1" {
			good++
		}
		if f[4] == "REGISTER" {
			register = true
		}
		if f[5] == "200" && f[6] == "REGISTER" {
			ok200 = true
		}
	}
	t.Logf("%d ESP frames, %d with a good ICV, %d in UDP:\n%s", esp, good, udpEncap, out.String())
	if esp < 4 || good != esp {
		t.Errorf("tshark: %d ESP frames, %d of them with a good ICV (want all, at least 4):\n%s", esp, good, out.String())
	}
	if udpEncap != 0 {
		t.Errorf("%d ESP frames were in UDP: want plain ESP only:\n%s", udpEncap, out.String())
	}
	if !register || !ok200 {
		t.Errorf("tshark did not find the protected REGISTER (%v) and its 200 OK (%v) inside the ESP:\n%s", register, ok200, out.String())
	}
}
