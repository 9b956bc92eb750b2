package dhcp

import (
	"bytes"
	"context"
	"errors"
	"net"
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

// TestRapidCommit: the client's DISCOVER carries Rapid Commit (RFC 4039)
// and the server answers it with the ACK at once, the lease bound: one
// packet each way instead of two.
func TestRapidCommit(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer(t, "100.64.0.0/24", c)
	cl, err := NewClient([]byte("alice"))
	if err != nil {
		t.Fatal(err)
	}
	disc, err := cl.Discover()
	if err != nil {
		t.Fatal(err)
	}
	if m := parseDHCP(t, disc); m.MessageType() != dhcpv4.MessageTypeDiscover || !m.Options.Has(dhcpv4.OptionRapidCommit) {
		t.Fatalf("DISCOVER %v without Rapid Commit", m.MessageType())
	}
	reply, lease, err := s.Handle(disc, "ue-a/sa1")
	if err != nil {
		t.Fatal(err)
	}
	if m := parseDHCP(t, reply); m.MessageType() != dhcpv4.MessageTypeAck || !m.Options.Has(dhcpv4.OptionRapidCommit) {
		t.Fatalf("answer to a rapid DISCOVER: %v (rapid commit %v), want ACK with Rapid Commit", m.MessageType(), m.Options.Has(dhcpv4.OptionRapidCommit))
	}
	if !lease.Bound || lease.Expires != c.t.Add(time.Hour) {
		t.Fatalf("lease after the rapid ACK: %+v", lease)
	}
	next, cl4, err := cl.Handle(reply)
	if err != nil || next != nil || cl4 == nil || cl4.Addr.Addr() != lease.Addr {
		t.Fatalf("client on the rapid ACK: next %v, lease %+v, err %v", next != nil, cl4, err)
	}

	// A whole Acquire: one packet sent.
	sends := 0
	replies := make(chan []byte, 4)
	cl2, _ := NewClient([]byte("bob"))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	l, err := cl2.Acquire(ctx, func(p []byte) error {
		sends++
		r, _, err := s.Handle(p, "ue-b/sa1")
		if r != nil {
			replies <- r
		}
		return err
	}, replies)
	if err != nil || sends != 1 {
		t.Fatalf("Acquire: lease %+v, err %v, %d packets sent (want 1)", l, err, sends)
	}
}

// TestWithoutRapidCommit: a DISCOVER without the option (another client)
// gets an OFFER and binds nothing; our client, offered, requests as
// before; an ACK without Rapid Commit to a client that has no offer is
// not its reply.
func TestWithoutRapidCommit(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s := newServer(t, "100.64.0.0/24", c)
	cl, _ := NewClient([]byte("carol"))
	m, _ := dhcpv4.New(dhcpv4.WithTransactionID(cl.xid), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, cl.id)))
	offer, lease, err := s.Handle(cl.packet(m), "ue-c/sa1")
	if err != nil || lease.Bound {
		t.Fatalf("plain DISCOVER: lease %+v, err %v", lease, err)
	}
	if o := parseDHCP(t, offer); o.MessageType() != dhcpv4.MessageTypeOffer || o.Options.Has(dhcpv4.OptionRapidCommit) {
		t.Fatalf("answer to a plain DISCOVER: %v", o.MessageType())
	}
	// An ACK without Rapid Commit before any offer: not ours.
	ack, _ := dhcpv4.New(dhcpv4.WithTransactionID(cl.xid), dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithReply(m), dhcpv4.WithYourIP(lease.Addr.AsSlice()))
	ack.OpCode = dhcpv4.OpcodeBootReply
	if _, got, err := cl.Handle(appendIPv4UDP(nil, s.cfg.Gateway, limitedBroadcast, ServerPort, ClientPort, ack.ToBytes())); !errors.Is(err, ErrNotReply) || got != nil {
		t.Fatalf("unsolicited plain ACK: lease %+v, err %v", got, err)
	}
	req, _, err := cl.Handle(offer)
	if err != nil || req == nil {
		t.Fatalf("client on the OFFER: %v", err)
	}
	final, lease, err := s.Handle(req, "ue-c/sa1")
	if err != nil || !lease.Bound {
		t.Fatalf("REQUEST: lease %+v, err %v", lease, err)
	}
	if _, got, err := cl.Handle(final); err != nil || got == nil || got.Addr.Addr() != lease.Addr {
		t.Fatalf("client on the ACK: lease %+v, err %v", got, err)
	}
}

func parseDHCP(t *testing.T, pkt []byte) *dhcpv4.DHCPv4 {
	t.Helper()
	d, ok := parseIPv4UDP(pkt)
	if !ok {
		t.Fatalf("not an IPv4 UDP packet: %x", pkt)
	}
	m, err := dhcpv4.FromBytes(d.payload)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestNewReplyMatchesLibrary: newReply, which skips the library's random
// transaction ID, builds the reply dhcpv4.NewReplyFromRequest builds, byte
// for byte, relay agent information and client identifier copied.
func TestNewReplyMatchesLibrary(t *testing.T) {
	req, err := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0, 0, 0, 0, 7},
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte("ue-7"))),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionRelayAgentInformation, []byte{1, 2, 'a', 'b'})),
		dhcpv4.WithGatewayIP(net.IPv4(198, 51, 100, 9)),
		dhcpv4.WithBroadcast(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer),
		dhcpv4.WithYourIP(net.IPv4(100, 64, 0, 2)),
		dhcpv4.WithLeaseTime(3600),
	}
	want, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		t.Fatal(err)
	}
	got := newReply(req, mods...)
	if !bytes.Equal(got.ToBytes(), want.ToBytes()) {
		t.Fatalf("newReply differs from NewReplyFromRequest:\n got %s\nwant %s", got.Summary(), want.Summary())
	}
	if got.TransactionID != req.TransactionID || got.OpCode != dhcpv4.OpcodeBootReply {
		t.Fatalf("xid %v op %v, want the request's xid and BootReply", got.TransactionID, got.OpCode)
	}
}
