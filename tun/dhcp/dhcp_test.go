package dhcp

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newServer(t *testing.T, pool string, c *clock) *Server {
	t.Helper()
	p := netip.MustParsePrefix(pool)
	s, err := NewServer(ServerConfig{Pool: p, Gateway: p.Addr().Next(), LeaseTime: time.Hour, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// acquire runs a client against the server synchronously, as if through
// the SA named binding.
func acquire(t *testing.T, s *Server, binding string, id string) (*ClientLease, error) {
	t.Helper()
	c, err := NewClient([]byte(id))
	if err != nil {
		t.Fatal(err)
	}
	replies := make(chan []byte, 4)
	send := func(p []byte) error {
		if !IsToServer(p) {
			t.Fatalf("client sent a packet that is not for port 67")
		}
		r, _, err := s.Handle(p, binding)
		if err != nil {
			return err
		}
		if r != nil {
			if !IsToClient(r) {
				t.Fatalf("server reply is not for port 68")
			}
			replies <- r
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.Acquire(ctx, send, replies)
}

func TestAcquire(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer(t, "100.64.0.0/24", c)
	a, err := acquire(t, s, "ue-a/sa1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if a.Addr != netip.MustParsePrefix("100.64.0.2/24") || a.Router != netip.MustParseAddr("100.64.0.1") || a.LeaseTime != time.Hour {
		t.Fatalf("lease %+v", a)
	}
	// A second UE (possibly with the same private address behind another
	// NAT) gets a different inner address.
	b, err := acquire(t, s, "ue-b/sa1", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if b.Addr.Addr() == a.Addr.Addr() {
		t.Fatalf("two UEs share %v", a.Addr)
	}
	// The same binding asking again keeps its address.
	a2, err := acquire(t, s, "ue-a/sa1", "alice")
	if err != nil || a2.Addr != a.Addr {
		t.Fatalf("re-acquire: %v %+v", err, a2)
	}
	if l, ok := s.Lookup("ue-a/sa1"); !ok || !l.Bound || l.Addr != a.Addr.Addr() {
		t.Fatalf("lookup %+v %v", l, ok)
	}
}

func TestRequestForAnotherBindingsAddressIsRefused(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer(t, "100.64.0.0/24", c)
	a, err := acquire(t, s, "victim", "v")
	if err != nil {
		t.Fatal(err)
	}
	// The attacker has its own SA but asks for the victim's address.
	cl, _ := NewClient([]byte("x"))
	m, _ := dhcpv4.New(dhcpv4.WithTransactionID(cl.xid), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a.Addr.Addr().AsSlice())))
	reply, lease, err := s.Handle(cl.packet(m), "attacker")
	if err != nil || lease.Addr.IsValid() {
		t.Fatalf("err %v lease %+v", err, lease)
	}
	if _, _, err := cl.Handle(reply); !errors.Is(err, ErrNak) {
		t.Fatalf("want NAK, got %v", err)
	}
	if l, _ := s.Lookup("victim"); l.Addr != a.Addr.Addr() {
		t.Fatal("victim lost its lease")
	}
}

func TestReleaseExpiryRebindExhaustion(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer(t, "100.64.0.0/29", c) // hosts .1-.6, .1 is the gateway: 5 leases
	var got []netip.Addr
	for i := range 5 {
		l, err := acquire(t, s, string(rune('a'+i)), "x")
		if err != nil {
			t.Fatal(err)
		}
		if l.Addr.Addr() == s.cfg.Gateway {
			t.Fatal("gateway address leased")
		}
		got = append(got, l.Addr.Addr())
	}
	if _, err := acquire(t, s, "f", "x"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("6th lease: %v", err)
	}
	s.Release("a")
	if l, err := acquire(t, s, "f", "x"); err != nil || l.Addr.Addr() != got[0] {
		t.Fatalf("after release: %v %+v", err, l)
	}
	if !s.Rebind("b", "b2") || s.Rebind("nope", "x") || s.Rebind("c", "d") {
		t.Fatal("rebind results wrong")
	}
	if l, ok := s.Lookup("b2"); !ok || l.Addr != got[1] {
		t.Fatalf("rebind lost the address: %+v", l)
	}
	c.t = c.t.Add(2 * time.Hour)
	if _, err := acquire(t, s, "g", "x"); err != nil {
		t.Fatal(err)
	}
	if s.Leases() != 1 {
		t.Fatalf("expired leases kept: %d", s.Leases())
	}
}

func TestServerConfigErrors(t *testing.T) {
	for _, cfg := range []ServerConfig{
		{},
		{Pool: netip.MustParsePrefix("2001:db8::/64"), Gateway: netip.MustParseAddr("2001:db8::1")},
		{Pool: netip.MustParsePrefix("100.64.0.0/31"), Gateway: netip.MustParseAddr("100.64.0.0")},
		{Pool: netip.MustParsePrefix("100.64.0.0/24"), Gateway: netip.MustParseAddr("100.65.0.1")},
		{Pool: netip.MustParsePrefix("100.64.0.0/24"), Gateway: netip.MustParseAddr("100.64.0.1"), LeaseTime: -1},
	} {
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

func TestPacketChecksums(t *testing.T) {
	p := appendIPv4UDP(nil, netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2"), 67, 68, []byte("hello, world"))
	d, ok := parseIPv4UDP(p)
	if !ok || string(d.payload) != "hello, world" || d.sport != 67 || d.dport != 68 {
		t.Fatalf("%+v %v", d, ok)
	}
	// Flip each bit of the header and require rejection (checksums or
	// structure catch it), except bits the checksums do not cover.
	for i := 0; i < ipv4HeaderLen+udpHeaderLen; i++ {
		for bit := range 8 {
			q := bytes.Clone(p)
			q[i] ^= 1 << bit
			if _, ok := parseIPv4UDP(q); ok {
				t.Errorf("flipped byte %d bit %d accepted", i, bit)
			}
		}
	}
	for i := range len(p) {
		if _, ok := parseIPv4UDP(p[:i]); ok {
			t.Errorf("prefix %d accepted", i)
		}
	}
}

func TestHandleTruncation(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer(t, "100.64.0.0/24", c)
	cl, _ := NewClient([]byte("id"))
	p, _ := cl.Discover()
	for i := range len(p) {
		s.Handle(p[:i], "b")
		cl.Handle(p[:i])
	}
}

func FuzzServerHandle(f *testing.F) {
	cl, _ := NewClient([]byte("seed"))
	p, _ := cl.Discover()
	f.Add(p)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c := &clock{t: time.Unix(1e9, 0)}
		s, _ := NewServer(ServerConfig{Pool: netip.MustParsePrefix("100.64.0.0/24"), Gateway: netip.MustParseAddr("100.64.0.1"), Now: c.now})
		reply, _, err := s.Handle(pkt, "b")
		if err == nil && reply != nil {
			if _, ok := parseIPv4UDP(reply); !ok {
				t.Fatal("server built an unparsable reply")
			}
		}
	})
}

func FuzzClientHandle(f *testing.F) {
	c := &clock{t: time.Unix(1e9, 0)}
	s, _ := NewServer(ServerConfig{Pool: netip.MustParsePrefix("100.64.0.0/24"), Gateway: netip.MustParseAddr("100.64.0.1"), Now: c.now})
	cl, _ := NewClient([]byte("seed"))
	p, _ := cl.Discover()
	offer, _, _ := s.Handle(p, "b")
	f.Add(offer)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		cl, _ := NewClient([]byte("seed"))
		cl.Handle(pkt)
	})
}
