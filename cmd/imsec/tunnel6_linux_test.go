package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTunnelIPv6 runs two 'imsec tunnel' ends on IPv6, outside and inside,
// in each mode: ESP in UDP (tunnel and transport mode) and plain ESP in
// IPv6 (IP protocol 50, tunnel and transport mode). Both ends need each
// other's address before either binds, and IPv6 has one loopback address,
// so they run in a network namespace of their own with fixed ports on its
// ::1 (nothing else can hold them there). The pinging end must get every
// echo back, and the other count them.
//
// Root only (a namespace; plain ESP needs a raw socket).
func TestTunnelIPv6(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs the tunnels in a network namespace of its own (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (Debian: apt-get install iproute2)")
	}
	dir := t.TempDir()
	bin := buildImsec(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := fmt.Sprintf("imsec-t6-%d", os.Getpid())
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", ns, err, out)
		}
	})
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	for _, mode := range []string{"udp-enc-tun", "udp-enc-trans", "tun", "trans"} {
		t.Run(mode, func(t *testing.T) {
			p := newTunnelPair(t, "aes-cbc", 16, "hmac-sha-1-96", 20)
			aAddr, bAddr := "[::1]:4501", "[::1]:4502"
			peerA, peerB := bAddr, aAddr
			if mode == "tun" || mode == "trans" {
				peerA, peerB = "::1", "::1" // plain ESP has no ports: one end per SPI pair on ::1
			}
			innerA, innerB, target := "2001:db8:7::1/64", "2001:db8:7::2/64", "2001:db8:7::1"
			if strings.HasSuffix(mode, "trans") {
				innerA, innerB, target = "::1/128", "::1/128", "::1" // transport mode: our own outer address
			}
			a := exec.CommandContext(ctx, "ip", "netns", "exec", ns, bin, "tunnel", "--mode", mode, "--listen", aAddr, "--peer", peerA,
				"--inner", innerA, "--out", p.ab.spec, "--in", p.ba.spec)
			var aOut, aErr output
			a.Stdout, a.Stderr = &aOut, &aErr
			if err := a.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { a.Wait(); close(done) }()
			defer func() {
				a.Process.Signal(os.Interrupt)
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					a.Process.Kill()
					<-done
				}
			}()
			waitLine(t, "tunnel A", &aOut, nil, done, "tunnel up", 10*time.Second)
			b := exec.CommandContext(ctx, "ip", "netns", "exec", ns, bin, "tunnel", "--mode", mode, "--listen", bAddr, "--peer", peerB,
				"--inner", innerB, "--out", p.ba.spec, "--in", p.ab.spec, "--ping", target, "--count", "3", "--interval", "20ms")
			out, err := b.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "3 packets transmitted, 3 received, 0% packet loss") {
				t.Fatalf("ping over IPv6 (%s): %v\n%s\nA: %s%s", mode, err, out, aOut.String(), aErr.String())
			}
		})
	}
}
