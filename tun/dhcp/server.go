// Package dhcp assigns a UE its inner address over the ESP tunnel, in the
// style of RFC 3456 (DHCPv4 configuration of IPsec tunnel mode): the UE sends
// DHCPDISCOVER from 0.0.0.0:68 to 255.255.255.255:67 through its new SA,
// with htype 31 ("IPsec tunnel") and a client identifier; the server answers
// through the same SA.
//
// The server is not a socket: the gateway's data plane hands it each inner
// packet for UDP port 67 together with the identity of the SA it arrived on
// (the binding), and sends the reply back on that SA. So a lease is bound to
// the SA it was asked through, and a UE cannot ask for, or take over, another
// UE's address: two UEs with the same private address behind two NATs get two
// different inner addresses. Messages are built and parsed with
// github.com/insomniacslk/dhcp.
//
// Server6 and Client6 (dhcpv6.go) do the same for an inner IPv6 address
// with DHCPv6 (RFC 8415): one IA_NA address, bound to the SA alike, and the
// server's own inner address in OPTION_SIP_SERVER_A (RFC 3319).
package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// DefaultLeaseTime is the lease offered when Config.LeaseTime is zero. The
// registrar releases a lease on de-registration and expires it with the
// registration; the DHCP lease time only bounds a UE that vanishes.
const DefaultLeaseTime = time.Hour

// ServerConfig configures a Server. Zero values are the documented defaults.
type ServerConfig struct {
	// Pool is the inner prefix UEs get addresses from, e.g. 100.64.0.0/16.
	// The network and broadcast addresses and Gateway are never leased.
	Pool netip.Prefix
	// Gateway is the server's own inner address, inside Pool: the DHCP
	// server identifier, the router option and where the UE sends SIP.
	Gateway   netip.Addr
	LeaseTime time.Duration    // default DefaultLeaseTime
	Now       func() time.Time // default time.Now
}

// Lease is one address bound to one binding.
type Lease struct {
	Addr    netip.Addr
	Binding string
	Bound   bool // false while only offered
	Expires time.Time
}

// Server is the in-tunnel DHCP server. It is safe for concurrent use.
type Server struct {
	cfg ServerConfig
	leases
	next  netip.Addr // where the next free-address search starts; guarded by mu
	first netip.Addr
	last  netip.Addr
}

// Errors of Server.Handle: the packet is dropped and counted by the caller.
var (
	ErrNotDHCP       = errors.New("dhcp: not a DHCP request to port 67")
	ErrPoolExhausted = errors.New("dhcp: address pool exhausted")
	ErrUnsupported   = errors.New("dhcp: unsupported message type")
)

// offerHold is how long an offered address stays reserved without REQUEST.
const offerHold = 30 * time.Second

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if !cfg.Pool.IsValid() || !cfg.Pool.Addr().Is4() {
		return nil, fmt.Errorf("dhcp: pool %v is not an IPv4 prefix", cfg.Pool)
	}
	cfg.Pool = cfg.Pool.Masked()
	if cfg.Pool.Bits() > 30 {
		return nil, fmt.Errorf("dhcp: pool %v is too small (at most /30)", cfg.Pool)
	}
	if !cfg.Pool.Contains(cfg.Gateway) {
		return nil, fmt.Errorf("dhcp: gateway %v is not inside pool %v", cfg.Gateway, cfg.Pool)
	}
	if cfg.LeaseTime == 0 {
		cfg.LeaseTime = DefaultLeaseTime
	}
	if cfg.LeaseTime < 0 {
		return nil, errors.New("dhcp: negative lease time")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	first := cfg.Pool.Addr().Next()
	last := broadcastOf(cfg.Pool).Prev()
	return &Server{cfg: cfg, leases: newLeases(), next: first, first: first, last: last}, nil
}

func broadcastOf(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Handle answers one inner packet that arrived for UDP port 67 on the SA
// named binding. It returns the reply IPv4 packet to send back on that SA
// (nil when there is nothing to send) and the lease as it now stands.
func (s *Server) Handle(pkt []byte, binding string) (reply []byte, lease Lease, err error) {
	d, ok := parseIPv4UDP(pkt)
	if !ok || d.dport != ServerPort {
		return nil, Lease{}, ErrNotDHCP
	}
	req, err := dhcpv4.FromBytes(d.payload)
	if err != nil {
		return nil, Lease{}, fmt.Errorf("dhcp: bad message: %w", err)
	}
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, Lease{}, ErrNotDHCP
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	s.expireLocked(now)
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		l, err := s.leaseForLocked(binding)
		if err != nil {
			return nil, Lease{}, err
		}
		if req.Options.Has(dhcpv4.OptionRapidCommit) {
			// RFC 4039: the ACK at once, the lease bound. The tunnel
			// holds one server, so no other offer can be lost by it.
			l.Bound = true
			s.setExpiry(l, now.Add(s.cfg.LeaseTime))
			return s.reply(req, dhcpv4.MessageTypeAck, l.Addr, dhcpv4.OptGeneric(dhcpv4.OptionRapidCommit, nil)), *l, nil
		}
		if !l.Bound {
			s.setExpiry(l, now.Add(offerHold))
		}
		return s.reply(req, dhcpv4.MessageTypeOffer, l.Addr), *l, nil
	case dhcpv4.MessageTypeRequest:
		want := netip.Addr{}
		if ip := req.RequestedIPAddress(); ip != nil {
			want, _ = netip.AddrFromSlice(ip.To4())
		} else if ip, ok := netip.AddrFromSlice(req.ClientIPAddr.To4()); ok && !ip.IsUnspecified() {
			want = ip
		}
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(s.cfg.Gateway.AsSlice())) {
			return nil, Lease{}, nil // meant for another server: stay silent (RFC 2131 §4.3.2)
		}
		l := s.byBinding[binding]
		if l == nil || (want.IsValid() && want != l.Addr) {
			return s.reply(req, dhcpv4.MessageTypeNak, netip.IPv4Unspecified()), Lease{}, nil
		}
		l.Bound = true
		s.setExpiry(l, now.Add(s.cfg.LeaseTime))
		return s.reply(req, dhcpv4.MessageTypeAck, l.Addr), *l, nil
	case dhcpv4.MessageTypeRelease:
		s.releaseLocked(binding)
		return nil, Lease{}, nil
	case dhcpv4.MessageTypeInform:
		l := s.byBinding[binding]
		if l == nil || !l.Bound {
			return nil, Lease{}, nil
		}
		return s.reply(req, dhcpv4.MessageTypeAck, netip.IPv4Unspecified()), *l, nil
	}
	return nil, Lease{}, ErrUnsupported
}

// leaseForLocked returns the binding's lease, allocating a free address.
func (s *Server) leaseForLocked(binding string) (*Lease, error) {
	if l := s.byBinding[binding]; l != nil {
		return l, nil
	}
	a := s.next
	for range s.size() {
		if a != s.cfg.Gateway && s.byAddr[a] == nil {
			l := &Lease{Addr: a, Binding: binding}
			s.byBinding[binding] = l
			s.byAddr[a] = l
			s.next = s.advance(a)
			return l, nil
		}
		a = s.advance(a)
	}
	return nil, ErrPoolExhausted
}

func (s *Server) size() int { return 1<<(32-s.cfg.Pool.Bits()) - 2 }

func (s *Server) advance(a netip.Addr) netip.Addr {
	if a == s.last {
		return s.first
	}
	return a.Next()
}

func (s *Server) reply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType, yiaddr netip.Addr, extra ...dhcpv4.Option) []byte {
	gw := net.IP(s.cfg.Gateway.AsSlice())
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithServerIP(gw),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(gw)),
	}
	if mt != dhcpv4.MessageTypeNak {
		mods = append(mods,
			dhcpv4.WithYourIP(net.IP(yiaddr.AsSlice())),
			dhcpv4.WithNetmask(net.CIDRMask(s.cfg.Pool.Bits(), 32)),
			dhcpv4.WithRouter(gw),
			dhcpv4.WithLeaseTime(uint32(s.cfg.LeaseTime/time.Second)),
		)
	}
	resp := newReply(req, mods...)
	if id := req.Options.Get(dhcpv4.OptionClientIdentifier); id != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, id))
	}
	for _, o := range extra {
		resp.UpdateOption(o)
	}
	// The UE has no address yet: reply to the limited broadcast, which its
	// tunnel delivers to it alone (RFC 3456 §3; RFC 2131 §4.1).
	return appendIPv4UDP(nil, s.cfg.Gateway, limitedBroadcast, ServerPort, ClientPort, resp.ToBytes())
}

// newReply is dhcpv4.NewReplyFromRequest without its random transaction ID
// (New draws one from crypto/rand, which WithReply then overwrites
// with the request's): the same defaults as dhcpv4.New, then the same
// modifiers.
func newReply(req *dhcpv4.DHCPv4, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		ClientHWAddr:  make(net.HardwareAddr, 6),
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       make(dhcpv4.Options),
	}
	all := append([]dhcpv4.Modifier{
		dhcpv4.WithReply(req),
		dhcpv4.WithGatewayIP(req.GatewayIPAddr),
		dhcpv4.WithOptionCopied(req, dhcpv4.OptionRelayAgentInformation),
		dhcpv4.WithOptionCopied(req, dhcpv4.OptionClientIdentifier), // RFC 6842
	}, mods...)
	for _, m := range all {
		m(d)
	}
	return d
}
