//go:build linux

package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMeasureTUNCleansUp: the namespaces exist while the builder runs, the
// builder's code runs inside them (it sees the veth), and they are gone
// after a builder failure.
func TestMeasureTUNCleansUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces; CI runs as root")
	}
	for _, tool := range []string{"ip", "iperf3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	prefix := fmt.Sprintf("imsec-bench-%d-", os.Getpid())
	boom := errors.New("builder failed on purpose")
	var sawVeth [2]bool
	var listed string
	build := func(a, b *Netns, plan TUNPlan) (TUNTunnel, error) {
		for i, ns := range []*Netns{a, b} {
			ns.Do(func() error {
				ifs, _ := net.Interfaces()
				for _, f := range ifs {
					sawVeth[i] = sawVeth[i] || f.Name == []string{"va", "vb"}[i]
				}
				return nil
			})
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		listed = string(out)
		return nil, boom
	}
	_, err := MeasureTUN(context.Background(), build, MeasureOptions{Duration: time.Second})
	if !errors.Is(err, boom) {
		t.Fatalf("MeasureTUN = %v, want the builder's error", err)
	}
	if !sawVeth[0] || !sawVeth[1] {
		t.Errorf("Do did not run inside the namespaces: saw va %v, vb %v", sawVeth[0], sawVeth[1])
	}
	if strings.Count(listed, prefix) != 2 {
		t.Errorf("during the build, ip netns list = %q, want two %s* namespaces", listed, prefix)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), prefix) {
		t.Errorf("namespaces left behind: %q", out)
	}
}
