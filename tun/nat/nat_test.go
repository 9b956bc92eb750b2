package nat

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fakeClock is an injectable clock for mapping expiry.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c *net.UDPConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// recv reads one datagram or fails after a second; ok=false on timeout.
func recv(c *net.UDPConn, wait time.Duration) (string, netip.AddrPort, bool) {
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", netip.AddrPort{}, false
	}
	return string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), true
}

type rig struct {
	nat      *NAT
	ue       *net.UDPConn
	srv1     *net.UDPConn
	srv2     *net.UDPConn
	in1, in2 netip.AddrPort
	clock    *fakeClock
}

func newRig(t *testing.T, mapping, filtering Behaviour, timeout ...time.Duration) *rig {
	t.Helper()
	r := &rig{ue: listen(t), srv1: listen(t), srv2: listen(t), clock: &fakeClock{t: time.Unix(1000, 0)}}
	lo := netip.MustParseAddr("127.0.0.1")
	to := time.Hour
	if len(timeout) > 0 {
		to = timeout[0]
	}
	n, err := New(Config{
		Outside: lo,
		Forwards: []Forward{
			{Inside: netip.AddrPortFrom(lo, 0), Destination: addrOf(r.srv1)},
			{Inside: netip.AddrPortFrom(lo, 0), Destination: addrOf(r.srv2)},
		},
		Mapping: mapping, Filtering: filtering, Timeout: to, Now: r.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	r.nat = n
	ins := n.InsideAddrs()
	r.in1, r.in2 = ins[0], ins[1]
	return r
}

// send from the UE through forward `in`, and return the outside source the
// server saw.
func (r *rig) out(t *testing.T, in netip.AddrPort, srv *net.UDPConn, msg string) netip.AddrPort {
	t.Helper()
	if _, err := r.ue.WriteToUDPAddrPort([]byte(msg), in); err != nil {
		t.Fatal(err)
	}
	got, from, ok := recv(srv, time.Second)
	if !ok || got != msg {
		t.Fatalf("server did not get %q (got %q ok=%v)", msg, got, ok)
	}
	return from
}

func TestMappingBehaviour(t *testing.T) {
	t.Run("endpoint-independent", func(t *testing.T) {
		r := newRig(t, EndpointIndependent, EndpointIndependent)
		a := r.out(t, r.in1, r.srv1, "x")
		b := r.out(t, r.in2, r.srv2, "y")
		if a != b {
			t.Fatalf("EIM used two outside ports: %v %v", a, b)
		}
		if a.Port() == addrOf(r.ue).Port() {
			t.Fatalf("outside port equals the inside one: nothing was translated")
		}
	})
	t.Run("address-and-port-dependent", func(t *testing.T) {
		r := newRig(t, AddressPortDependent, AddressPortDependent)
		a := r.out(t, r.in1, r.srv1, "x")
		b := r.out(t, r.in2, r.srv2, "y")
		if a == b {
			t.Fatalf("APDM reused one outside port for two destinations: %v", a)
		}
	})
}

func TestReplyReachesInside(t *testing.T) {
	r := newRig(t, EndpointIndependent, AddressPortDependent)
	pub := r.out(t, r.in1, r.srv1, "hello")
	if _, err := r.srv1.WriteToUDPAddrPort([]byte("reply"), pub); err != nil {
		t.Fatal(err)
	}
	got, from, ok := recv(r.ue, time.Second)
	if !ok || got != "reply" || from != r.in1 {
		t.Fatalf("UE got %q from %v ok=%v, want reply from %v", got, from, ok, r.in1)
	}
}

func TestFiltering(t *testing.T) {
	for _, tc := range []struct {
		f      Behaviour
		admits bool
	}{{EndpointIndependent, true}, {AddressPortDependent, false}} {
		t.Run(tc.f.String(), func(t *testing.T) {
			r := newRig(t, EndpointIndependent, tc.f)
			pub := r.out(t, r.in1, r.srv1, "hello") // UE only ever talked to srv1
			r.srv2.WriteToUDPAddrPort([]byte("unsolicited"), pub)
			got, from, ok := recv(r.ue, 300*time.Millisecond)
			if ok != tc.admits {
				t.Fatalf("unsolicited from srv2: delivered=%v (%q from %v), want %v", ok, got, from, tc.admits)
			}
			if ok && from != r.in2 {
				t.Fatalf("delivered from %v, want forward %v", from, r.in2)
			}
			if !tc.admits && r.nat.Counters().Filtered != 1 {
				t.Fatalf("filtered counter %d", r.nat.Counters().Filtered)
			}
		})
	}
}

// TestExpiryAndKeepalive shows why RFC 3948 keepalives matter: an idle
// mapping dies and inbound traffic stops; a kept-alive one never does; the
// next outbound packet after expiry gets a new outside port (rebinding).
func TestExpiryAndKeepalive(t *testing.T) {
	r := newRig(t, EndpointIndependent, AddressPortDependent, 30*time.Second)
	pub := r.out(t, r.in1, r.srv1, "register")

	// Kept alive: an outbound packet every 20 s for 5 minutes.
	for range 15 {
		r.clock.Add(20 * time.Second)
		r.out(t, r.in1, r.srv1, "\xff")
		r.nat.Sweep()
	}
	r.srv1.WriteToUDPAddrPort([]byte("still there"), pub)
	if got, _, ok := recv(r.ue, time.Second); !ok || got != "still there" {
		t.Fatalf("kept-alive mapping lost inbound: %q %v", got, ok)
	}

	// Idle past the timeout: the mapping goes, inbound stops.
	r.clock.Add(31 * time.Second)
	r.nat.Sweep()
	if c := r.nat.Counters(); c.MappingsActive != 0 || c.MappingsExpired != 1 {
		t.Fatalf("after idle timeout: %+v", c)
	}
	r.srv1.WriteToUDPAddrPort([]byte("lost"), pub)
	if got, _, ok := recv(r.ue, 300*time.Millisecond); ok {
		t.Fatalf("inbound after expiry delivered: %q", got)
	}

	// Next outbound: a new mapping on a different port.
	pub2 := r.out(t, r.in1, r.srv1, "again")
	if pub2 == pub {
		t.Fatalf("expired port %v re-allocated at once", pub)
	}
}

func TestFlushRebinds(t *testing.T) {
	r := newRig(t, EndpointIndependent, EndpointIndependent)
	a := r.out(t, r.in1, r.srv1, "a")
	r.nat.Flush()
	b := r.out(t, r.in1, r.srv1, "b")
	if a == b {
		t.Fatal("flush did not change the outside port")
	}
	if c := r.nat.Counters(); c.MappingsCreated != 2 || c.MappingsActive != 1 {
		t.Fatalf("%+v", c)
	}
}

func TestConfigErrors(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	d := netip.MustParseAddrPort("127.0.0.1:9")
	bad := []Config{
		{},
		{Outside: lo},
		{Outside: lo, Forwards: []Forward{{Inside: netip.AddrPortFrom(lo, 0), Destination: d}}, Timeout: -1},
		{Outside: lo, Forwards: []Forward{{Inside: netip.AddrPortFrom(lo, 0), Destination: d}, {Inside: netip.AddrPortFrom(lo, 0), Destination: d}}},
	}
	for i, c := range bad {
		if n, err := New(c); err == nil {
			n.Close()
			t.Errorf("config %d accepted", i)
		}
	}
	for _, s := range []string{"eim", "apdf", "endpoint-independent", "address-and-port-dependent"} {
		if _, err := ParseBehaviour(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseBehaviour("symmetric-ish"); err == nil {
		t.Error("bad behaviour accepted")
	}
}

// TestMain checks that every NAT the tests closed stopped all its goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
