package sip

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUEKernelTUN registers a UE whose inner side is a kernel TUN (SIP on
// host sockets bound to the inner address) instead of the netstack. It
// needs root; it re-runs itself in a fresh network namespace (unshare
// --net) so the TUN and everything else live and die there.
func TestUEKernelTUN(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kernel TUN needs root (CAP_NET_ADMIN); CI runs this as root")
	}
	if os.Getenv("IMSEC_TEST_NETNS") != "1" {
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("unshare (util-linux) not found")
		}
		cmd := exec.Command("unshare", "--net", "--", os.Args[0], "-test.run", "^TestUEKernelTUN$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "IMSEC_TEST_NETNS=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("in a new network namespace: %v\n%s", err, out)
		}
		t.Logf("%s", out)
		return
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	r := newRig(t, nil)
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(c *UEConfig) { c.TUN = "imsecue0" })
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Ping(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS to a kernel-TUN UE: %v %v", res, err)
	}
	if err := u.Reregister(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestUEKernelTUNDualStack is TestUEKernelTUN with both inner pools and a
// dual-stack UE: the kernel TUN holds the IPv4 lease and the IPv6 one (a
// /128, with a route to the P-CSCF's inner IPv6 address), and SIP runs on
// host sockets bound to the IPv6 one.
func TestUEKernelTUNDualStack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kernel TUN needs root (CAP_NET_ADMIN); CI runs this as root")
	}
	if os.Getenv("IMSEC_TEST_NETNS") != "1" {
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("unshare (util-linux) not found")
		}
		cmd := exec.Command("unshare", "--net", "--", os.Args[0], "-test.run", "^TestUEKernelTUNDualStack$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "IMSEC_TEST_NETNS=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("in a new network namespace: %v\n%s", err, out)
		}
		t.Logf("%s", out)
		return
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	r := newRig(t, func(c *ServerConfig) { c.Pool, c.Pool6 = DefaultPool, testPool6 })
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(c *UEConfig) { c.TUN, c.Inner = "imsecue0", InnerDual })
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if in := u.Info(); len(in.InnerAddrs) != 2 || !in.InnerAddr.Is6() {
		t.Fatalf("UE info %+v", in)
	}
	out, err := exec.Command("ip", "addr", "show", "dev", "imsecue0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "inet 100.64.0.2/") || !strings.Contains(string(out), "inet6 2001:db8:64::2/128") {
		t.Fatalf("imsecue0 lacks an inner address: %v\n%s", err, out)
	}
	if _, err := u.Ping(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS to a kernel-TUN UE over inner IPv6: %v %v", res, err)
	}
	if err := u.Reregister(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}
