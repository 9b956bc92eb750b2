//go:build linux

package udp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNetns runs f on an OS thread that has entered a network namespace made
// for the test (loopback up), so that the sockets f creates live there:
// a wildcard bind then listens on the namespace's loopback only. The
// namespace is removed when the test ends. It needs root and ip.
func inNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: binds the IPv6 wildcard inside a network namespace it creates (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (Debian: apt-get install iproute2)")
	}
	name := fmt.Sprintf("imsec-udp-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	errc := make(chan error, 1)
	go func() {
		// The thread never leaves the namespace: it ends with the
		// goroutine, which exits locked.
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		f()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestListenWildcardIsDualStack: a Conn on [::] receives from IPv4 and
// IPv6 peers (reporting the IPv4 one as IPv4, not IPv4-mapped) and sends
// back to both in one batch, segmented runs included.
func TestListenWildcardIsDualStack(t *testing.T) {
	var c *Conn
	var p4, p6 *net.UDPConn
	var err error
	inNetns(t, func() {
		if c, err = Listen(netip.MustParseAddrPort("[::]:0")); err != nil {
			return
		}
		if p4, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return
		}
		p6, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer p4.Close()
	defer p6.Close()
	port := c.LocalAddr().Port()
	for _, p := range []*net.UDPConn{p4, p6} {
		to := &net.UDPAddr{IP: p.LocalAddr().(*net.UDPAddr).IP, Port: int(port)}
		if _, err := p.WriteToUDP([]byte("hello"), to); err != nil {
			t.Fatal(err)
		}
	}
	from := map[netip.AddrPort]bool{}
	msgs := make([]Message, 4)
	for i := range msgs {
		msgs[i].Buf = make([]byte, 1500)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(from) < 2 {
		n, err := c.ReadBatch(msgs)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs[:n] {
			if string(m.Buf[:m.N]) != "hello" {
				t.Fatalf("read %q", m.Buf[:m.N])
			}
			from[m.Addr] = true
		}
	}
	a4 := p4.LocalAddr().(*net.UDPAddr).AddrPort()
	a6 := p6.LocalAddr().(*net.UDPAddr).AddrPort()
	if !from[a4] || !from[a6] {
		t.Fatalf("sources %v, want %v (IPv4, unmapped) and %v", from, a4, a6)
	}
	// Back to both: a run of equal-sized datagrams to each, which GSO
	// merges into one send where the kernel has it (the IPv4 one through
	// the IPv6 socket, to a mapped address).
	var out []Message
	for _, a := range []netip.AddrPort{a4, a6} {
		for i := range 6 {
			out = append(out, Message{Buf: []byte(fmt.Sprintf("%v #%d.", a.Addr(), i)), Addr: a})
			out[len(out)-1].N = len(out[len(out)-1].Buf)
		}
	}
	if n, err := c.WriteBatch(out); n != len(out) || err != nil {
		t.Fatalf("WriteBatch: %d of %d: %v", n, len(out), err)
	}
	for _, p := range []*net.UDPConn{p4, p6} {
		a := p.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
		p.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 1500)
		for i := range 6 {
			n, src, err := p.ReadFromUDPAddrPort(b)
			if err != nil {
				t.Fatalf("%v: datagram %d: %v", a, i, err)
			}
			if want := fmt.Sprintf("%v #%d.", a, i); string(b[:n]) != want || src.Port() != port {
				t.Fatalf("%v got %q from %v, want %q from port %d", a, b[:n], src, want, port)
			}
		}
	}
}
