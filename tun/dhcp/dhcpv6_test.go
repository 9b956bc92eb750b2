package dhcp

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
)

var pool6 = netip.MustParsePrefix("2001:db8:64::/64")

func newServer6(t testing.TB, pool netip.Prefix, c *clock) *Server6 {
	t.Helper()
	s, err := NewServer6(Server6Config{Pool: pool, Gateway: pool.Addr().Next(), LeaseTime: time.Hour, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// acquire6 runs a client against the server synchronously, as if through
// the SA named binding.
func acquire6(t *testing.T, s *Server6, binding, id string) (*ClientLease6, error) {
	t.Helper()
	c, err := NewClient6([]byte(id))
	if err != nil {
		t.Fatal(err)
	}
	replies := make(chan []byte, 4)
	send := func(p []byte) error {
		if !IsToServer6(p) || IsToServer(p) {
			t.Fatalf("client sent a packet that is not IPv6 for port 547")
		}
		r, _, err := s.Handle(p, binding)
		if err != nil {
			return err
		}
		if r != nil {
			if !IsToClient6(r) {
				t.Fatalf("server reply is not for port 546")
			}
			replies <- r
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.Acquire(ctx, send, replies)
}

func TestAcquire6(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer6(t, pool6, c)
	l, err := acquire6(t, s, "alice", "alice@a.example")
	if err != nil {
		t.Fatal(err)
	}
	if l.Addr != netip.MustParseAddr("2001:db8:64::2") || l.Server != netip.MustParseAddr("2001:db8:64::1") || l.Lease != time.Hour {
		t.Fatalf("lease %+v", l)
	}
	if sl, ok := s.Lookup("alice"); !ok || !sl.Bound || sl.Addr != l.Addr {
		t.Fatalf("server lease %+v %v", sl, ok)
	}
	// The same binding asks again (a fresh start): the same address.
	if l2, err := acquire6(t, s, "alice", "alice@a.example"); err != nil || l2.Addr != l.Addr {
		t.Fatalf("again: %+v %v", l2, err)
	}
	// Another binding with the same client identity (a UE that copied
	// alice's) gets its own address: the binding decides, not the DUID.
	l3, err := acquire6(t, s, "mallory", "alice@a.example")
	if err != nil || l3.Addr == l.Addr {
		t.Fatalf("other binding: %+v %v", l3, err)
	}
	if s.Leases() != 2 {
		t.Fatalf("%d leases", s.Leases())
	}
}

// TestAdvertiseRequestRenewRelease: without Rapid Commit the server
// advertises and binds only on REQUEST; RENEW extends, RELEASE frees, and
// a RENEW for nothing gets NoBinding.
func TestAdvertiseRequestRenewRelease(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer6(t, pool6, c)
	cl, _ := NewClient6([]byte("bob"))
	msg := func(mt dhcpv6.MessageType) []byte {
		m := &dhcpv6.Message{MessageType: mt, TransactionID: dhcpv6.TransactionID{1, 2, 3}}
		m.AddOption(dhcpv6.OptClientID(cl.duid))
		m.AddOption(&dhcpv6.OptIANA{IaId: cl.iaid})
		return appendIPv6UDP(nil, cl.src, AllServers6, ClientPort6, ServerPort6, m.ToBytes())
	}
	parse := func(p []byte) *dhcpv6.Message {
		t.Helper()
		d, ok := parseIPv6UDP(p)
		if !ok || d.dst != cl.src || d.dport != ClientPort6 {
			t.Fatalf("reply not to the client: %+v", d)
		}
		m, err := dhcpv6.MessageFromBytes(d.payload)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	r, l, err := s.Handle(msg(dhcpv6.MessageTypeSolicit), "b")
	if err != nil || l.Bound || parse(r).MessageType != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("solicit: %+v %v", l, err)
	}
	r, l, err = s.Handle(msg(dhcpv6.MessageTypeRequest), "b")
	if err != nil || !l.Bound || parse(r).MessageType != dhcpv6.MessageTypeReply {
		t.Fatalf("request: %+v %v", l, err)
	}
	c.t = c.t.Add(50 * time.Minute)
	_, l2, err := s.Handle(msg(dhcpv6.MessageTypeRenew), "b")
	if err != nil || l2.Addr != l.Addr || !l2.Expires.Equal(c.t.Add(time.Hour)) {
		t.Fatalf("renew: %+v %v", l2, err)
	}
	if _, _, err := s.Handle(msg(dhcpv6.MessageTypeRelease), "b"); err != nil || s.Leases() != 0 {
		t.Fatalf("release: %v, %d leases", err, s.Leases())
	}
	r, l, err = s.Handle(msg(dhcpv6.MessageTypeRenew), "b")
	if err != nil || l.Addr.IsValid() {
		t.Fatalf("renew after release: %+v %v", l, err)
	}
	if st := parse(r).Options.OneIANA().Options.Status(); st == nil || st.StatusCode != 3 {
		t.Fatalf("renew after release: status %v, want NoBinding", st)
	}
	if _, _, err := s.Handle(msg(dhcpv6.MessageTypeInformationRequest), "b"); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("information-request: %v", err)
	}
	// A message naming another server is not ours to answer.
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeRequest}
	m.AddOption(dhcpv6.OptClientID(cl.duid))
	m.AddOption(dhcpv6.OptServerID(&dhcpv6.DUIDLL{HWType: 1, LinkLayerAddr: []byte{1, 2, 3, 4, 5, 6}}))
	if r, _, err := s.Handle(appendIPv6UDP(nil, cl.src, AllServers6, ClientPort6, ServerPort6, m.ToBytes()), "b"); r != nil || err != nil {
		t.Fatalf("other server's request answered: %v", err)
	}
}

func TestExpiryRebindExhaustion6(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	small := netip.MustParsePrefix("2001:db8:64::/120") // 256 addresses: ::0 and the gateway never leased
	s := newServer6(t, small, c)
	seen := map[netip.Addr]bool{}
	for i := range 254 {
		l, err := acquire6(t, s, string(rune('a'+i%26))+string(rune(i)), "ue")
		if err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
		if seen[l.Addr] || !small.Contains(l.Addr) || l.Addr == small.Addr() || l.Addr == l.Server {
			t.Fatalf("lease %d: %v", i, l.Addr)
		}
		seen[l.Addr] = true
	}
	if _, err := acquire6(t, s, "one too many", "ue"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("full pool: %v", err)
	}
	if !s.Rebind("a\x00", "moved") || s.Rebind("nobody", "x") {
		t.Fatal("rebind")
	}
	if _, ok := s.Lookup("moved"); !ok {
		t.Fatal("rebound lease not found")
	}
	s.Release("moved")
	if _, err := acquire6(t, s, "one too many", "ue"); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	c.t = c.t.Add(2 * time.Hour) // every lease expires
	if _, err := acquire6(t, s, "late", "ue"); err != nil || s.Leases() != 1 {
		t.Fatalf("after expiry: %v, %d leases", err, s.Leases())
	}
}

func TestServer6ConfigErrors(t *testing.T) {
	for _, cfg := range []Server6Config{
		{},
		{Pool: netip.MustParsePrefix("100.64.0.0/16"), Gateway: netip.MustParseAddr("100.64.0.1")},
		{Pool: netip.MustParsePrefix("2001:db8::/124"), Gateway: netip.MustParseAddr("2001:db8::1")},
		{Pool: pool6, Gateway: netip.MustParseAddr("2001:db8:65::1")},
		{Pool: pool6, Gateway: netip.MustParseAddr("2001:db8:64::1"), LeaseTime: -1},
	} {
		if _, err := NewServer6(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	if _, err := NewClient6(nil); err == nil {
		t.Error("empty client id accepted")
	}
}

// TestDHCPv6BadInput: every prefix of a valid SOLICIT and of a valid
// REPLY, a flipped checksum, the wrong port and an IPv4 packet are
// errors, never a lease or a panic.
func TestDHCPv6BadInput(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer6(t, pool6, c)
	cl, _ := NewClient6([]byte("id"))
	sol, _ := cl.Solicit()
	rep, _, err := s.Handle(sol, "b")
	if err != nil {
		t.Fatal(err)
	}
	s.Release("b")
	for i := range len(sol) {
		if r, _, err := s.Handle(sol[:i], "b"); err == nil || r != nil {
			t.Fatalf("SOLICIT cut at %d: answered (%v)", i, err)
		}
	}
	for i := range len(rep) {
		if l, err := cl.Handle(rep[:i]); err == nil || l != nil {
			t.Fatalf("REPLY cut at %d: lease %v", i, l)
		}
	}
	bad := append([]byte(nil), sol...)
	bad[len(bad)-1] ^= 1
	if _, _, err := s.Handle(bad, "b"); !errors.Is(err, ErrNotDHCP) {
		t.Fatalf("bad checksum: %v", err)
	}
	if _, _, err := s.Handle(appendIPv4UDP(nil, netip.MustParseAddr("0.0.0.0"), limitedBroadcast, 546, 547, []byte{1}), "b"); !errors.Is(err, ErrNotDHCP) {
		t.Fatalf("IPv4: %v", err)
	}
	if _, _, err := s.Handle(appendIPv6UDP(nil, cl.src, AllServers6, 546, 548, []byte{1}), "b"); !errors.Is(err, ErrNotDHCP) {
		t.Fatalf("port 548: %v", err)
	}
	if _, _, err := s.Handle(appendIPv6UDP(nil, cl.src, AllServers6, 546, 547, []byte{1, 2, 3, 4, 0, 1}), "b"); !errors.Is(err, ErrBadDHCPv6) {
		t.Fatalf("garbage: %v", err)
	}
	if s.Leases() != 0 {
		t.Fatalf("%d leases after bad input", s.Leases())
	}
	if l, err := cl.Handle(rep); err != nil || !l.Addr.IsValid() {
		t.Fatalf("the untouched reply: %v %v", l, err)
	}
}

func FuzzServer6Handle(f *testing.F) {
	cl, _ := NewClient6([]byte("seed"))
	p, _ := cl.Solicit()
	f.Add(p)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c := &clock{t: time.Unix(1e9, 0)}
		s := newServer6(t, pool6, c)
		reply, _, err := s.Handle(pkt, "b")
		if err == nil && reply != nil {
			if _, ok := parseIPv6UDP(reply); !ok {
				t.Fatal("server built an unparsable reply")
			}
		}
	})
}

func FuzzClient6Handle(f *testing.F) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer6(f, pool6, c)
	cl, _ := NewClient6([]byte("seed"))
	p, _ := cl.Solicit()
	rep, _, _ := s.Handle(p, "b")
	f.Add(rep)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if l, err := cl.Handle(pkt); err == nil && (!l.Addr.Is6() || !l.Server.Is6()) {
			t.Fatalf("lease %+v", l)
		}
	})
}
