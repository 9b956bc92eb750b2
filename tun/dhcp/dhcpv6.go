package dhcp

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/imsec/imsec/internal/inet"
)

// DHCPv6 inside the tunnel (RFC 8415), the IPv6 twin of the DHCPv4 server
// and client in this package: the UE sends a SOLICIT with Rapid Commit
// from a link-local address to All_DHCP_Relay_Agents_and_Servers through
// its new SA; the server answers with a REPLY holding one IA_NA address
// from its IPv6 pool and, in OPTION_SIP_SERVER_A (RFC 3319, the P-CSCF
// discovery option of TS 24.229 §9.2.1), its own inner IPv6 address, where
// the UE then sends SIP. As with DHCPv4, the server is not a socket: the
// lease is bound to the SA (binding) the request arrived on.

// Ports of RFC 8415 §7.2.
const (
	ServerPort6 = 547
	ClientPort6 = 546
)

// AllServers6 is All_DHCP_Relay_Agents_and_Servers (RFC 8415 §7.1).
var AllServers6 = netip.MustParseAddr("ff02::1:2")

// optSIPServerA is OPTION_SIP_SERVER_A (RFC 3319 §3.2): a list of SIP
// outbound proxy (P-CSCF) IPv6 addresses.
const optSIPServerA dhcpv6.OptionCode = 22

const (
	ipv6HeaderLen = 40
)

// Server6Config configures a Server6. Zero values are the documented
// defaults.
type Server6Config struct {
	// Pool is the inner IPv6 prefix UEs get addresses from, e.g.
	// 2001:db8:64::/64 (at most /120). Its first address is never leased
	// (the subnet-router anycast address), nor is Gateway.
	Pool netip.Prefix
	// Gateway is the server's own inner address, inside Pool: sent in
	// OPTION_SIP_SERVER_A, where the UE sends SIP.
	Gateway   netip.Addr
	LeaseTime time.Duration    // default DefaultLeaseTime
	Now       func() time.Time // default time.Now
}

// Server6 is the in-tunnel DHCPv6 server. It is safe for concurrent use.
type Server6 struct {
	cfg  Server6Config
	duid dhcpv6.DUID
	leases
	next netip.Addr // where the next free-address search starts; guarded by mu
}

// Errors of Server6.Handle besides ErrNotDHCP, ErrPoolExhausted and
// ErrUnsupported: the packet is dropped and counted by the caller.
var ErrBadDHCPv6 = errors.New("dhcp: malformed DHCPv6 message")

// NewServer6 checks cfg and returns a Server6.
func NewServer6(cfg Server6Config) (*Server6, error) {
	if !cfg.Pool.IsValid() || !cfg.Pool.Addr().Is6() || cfg.Pool.Addr().Is4In6() {
		return nil, fmt.Errorf("dhcp: pool %v is not an IPv6 prefix", cfg.Pool)
	}
	cfg.Pool = cfg.Pool.Masked()
	if cfg.Pool.Bits() > 120 {
		return nil, fmt.Errorf("dhcp: IPv6 pool %v is too small (at most /120)", cfg.Pool)
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
	gw := cfg.Gateway.As16()
	duid := &dhcpv6.DUIDLL{HWType: 31, LinkLayerAddr: net.HardwareAddr(gw[:])} // 31: IPsec tunnel (RFC 3456)
	return &Server6{cfg: cfg, duid: duid, leases: newLeases(),
		next: cfg.Pool.Addr().Next()}, nil
}

// Handle answers one inner packet that arrived for UDP port 547 on the SA
// named binding. It returns the reply IPv6 packet to send back on that SA
// (nil when there is nothing to send) and the lease as it now stands.
// Malformed input is an error, never a panic.
func (s *Server6) Handle(pkt []byte, binding string) (reply []byte, lease Lease, err error) {
	d, ok := parseIPv6UDP(pkt)
	if !ok || d.dport != ServerPort6 {
		return nil, Lease{}, ErrNotDHCP
	}
	req, err := dhcpv6.MessageFromBytes(d.payload)
	if err != nil {
		return nil, Lease{}, ErrBadDHCPv6
	}
	if req.Options.ClientID() == nil {
		return nil, Lease{}, ErrBadDHCPv6 // RFC 8415 §16: every client message but one carries it
	}
	if sid := req.Options.ServerID(); sid != nil && !sid.Equal(s.duid) {
		return nil, Lease{}, nil // meant for another server
	}
	iaid := [4]byte{}
	if ia := req.Options.OneIANA(); ia != nil {
		iaid = ia.IaId
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	s.expireLocked(now)
	switch req.MessageType {
	case dhcpv6.MessageTypeSolicit:
		l, err := s.leaseForLocked(binding)
		if err != nil {
			return nil, Lease{}, err
		}
		if req.GetOneOption(dhcpv6.OptionRapidCommit) == nil {
			if !l.Bound {
				s.setExpiry(l, now.Add(offerHold))
			}
			return s.reply(d.src, req, dhcpv6.MessageTypeAdvertise, iaid, l.Addr), *l, nil
		}
		s.bindLocked(l, now)
		return s.reply(d.src, req, dhcpv6.MessageTypeReply, iaid, l.Addr), *l, nil
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		l := s.byBinding[binding]
		if l == nil {
			if req.MessageType != dhcpv6.MessageTypeRequest {
				return s.reply(d.src, req, dhcpv6.MessageTypeReply, iaid, netip.Addr{}), Lease{}, nil
			}
			if l, err = s.leaseForLocked(binding); err != nil {
				return nil, Lease{}, err
			}
		}
		s.bindLocked(l, now)
		return s.reply(d.src, req, dhcpv6.MessageTypeReply, iaid, l.Addr), *l, nil
	case dhcpv6.MessageTypeRelease:
		s.releaseLocked(binding)
		return s.reply(d.src, req, dhcpv6.MessageTypeReply, iaid, netip.Addr{}), Lease{}, nil
	}
	return nil, Lease{}, ErrUnsupported
}

func (s *Server6) bindLocked(l *Lease, now time.Time) {
	l.Bound = true
	s.setExpiry(l, now.Add(s.cfg.LeaseTime))
}

// leaseForLocked returns the binding's lease, allocating a free address:
// the search starts after the last one given out, and as the pool holds
// more addresses than there are leases, it ends within len(leases)+2
// steps, or the pool is full.
func (s *Server6) leaseForLocked(binding string) (*Lease, error) {
	if l := s.byBinding[binding]; l != nil {
		return l, nil
	}
	a := s.next
	for range len(s.byAddr) + 3 {
		if !s.cfg.Pool.Contains(a) {
			a = s.cfg.Pool.Addr().Next() // wrap, past the subnet-router anycast address
		}
		if a != s.cfg.Gateway && s.byAddr[a] == nil {
			l := &Lease{Addr: a, Binding: binding}
			s.byBinding[binding] = l
			s.byAddr[a] = l
			s.next = a.Next()
			return l, nil
		}
		a = a.Next()
	}
	return nil, ErrPoolExhausted
}

// reply builds the answer to req for the client at dst. An invalid addr
// means no address (a REPLY to a RELEASE, or NoBinding to a RENEW).
func (s *Server6) reply(dst netip.Addr, req *dhcpv6.Message, mt dhcpv6.MessageType, iaid [4]byte, addr netip.Addr) []byte {
	m := &dhcpv6.Message{MessageType: mt, TransactionID: req.TransactionID}
	m.AddOption(req.GetOneOption(dhcpv6.OptionClientID))
	m.AddOption(dhcpv6.OptServerID(s.duid))
	if mt == dhcpv6.MessageTypeReply && req.MessageType == dhcpv6.MessageTypeSolicit {
		m.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
	}
	lt := s.cfg.LeaseTime
	switch {
	case addr.IsValid():
		m.AddOption(&dhcpv6.OptIANA{IaId: iaid, T1: lt / 2, T2: lt * 4 / 5, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{
			&dhcpv6.OptIAAddress{IPv6Addr: addr.AsSlice(), PreferredLifetime: lt, ValidLifetime: lt}}}})
		gw := s.cfg.Gateway.As16()
		m.AddOption(&dhcpv6.OptionGeneric{OptionCode: optSIPServerA, OptionData: gw[:]})
	case req.MessageType == dhcpv6.MessageTypeRelease:
		m.AddOption(&dhcpv6.OptStatusCode{StatusCode: 0, StatusMessage: "released"})
	default:
		m.AddOption(&dhcpv6.OptIANA{IaId: iaid, Options: dhcpv6.IdentityOptions{Options: dhcpv6.Options{
			&dhcpv6.OptStatusCode{StatusCode: 3, StatusMessage: "no binding"}}}}) // NoBinding
	}
	return appendIPv6UDP(nil, serverLinkLocal, dst, ServerPort6, ClientPort6, m.ToBytes())
}

// serverLinkLocal is the server's source address: the tunnel is a link of
// its own, and DHCPv6 servers answer from a link-local address.
var serverLinkLocal = netip.MustParseAddr("fe80::1")

// IsToServer6 reports cheaply whether an inner packet is IPv6 UDP to port
// 547 (no extension headers).
func IsToServer6(pkt []byte) bool { return isUDP6ToPort(pkt, ServerPort6) }

// IsToClient6 reports cheaply whether an inner packet is IPv6 UDP to port
// 546.
func IsToClient6(pkt []byte) bool { return isUDP6ToPort(pkt, ClientPort6) }

func isUDP6ToPort(pkt []byte, port uint16) bool {
	return len(pkt) >= ipv6HeaderLen+udpHeaderLen && pkt[0]>>4 == 6 && pkt[6] == protoUDP &&
		binary.BigEndian.Uint16(pkt[ipv6HeaderLen+2:]) == port
}

// appendIPv6UDP builds an IPv6 packet (hop limit 255 for link-local
// traffic, no extension headers) with a UDP header and payload, checksum
// filled in.
func appendIPv6UDP(b []byte, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	start := len(b)
	ulen := udpHeaderLen + len(payload)
	b = append(b, make([]byte, ipv6HeaderLen+udpHeaderLen)...)
	b = append(b, payload...)
	ip := b[start : start+ipv6HeaderLen]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(ulen))
	ip[6] = protoUDP
	ip[7] = 255
	s16, d16 := src.As16(), dst.As16()
	copy(ip[8:24], s16[:])
	copy(ip[24:40], d16[:])
	udp := b[start+ipv6HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(ulen))
	c := inet.Checksum(inet.Sum(inet.PseudoSum(netip.AddrFrom16(s16), netip.AddrFrom16(d16), protoUDP, ulen), udp))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return b
}

// parseIPv6UDP returns the UDP datagram in pkt, or ok=false for anything
// else (not IPv6, extension headers, not UDP, bad lengths or checksums).
func parseIPv6UDP(pkt []byte) (d udpDatagram, ok bool) {
	if len(pkt) < ipv6HeaderLen+udpHeaderLen || pkt[0]>>4 != 6 || pkt[6] != protoUDP {
		return d, false
	}
	plen := int(binary.BigEndian.Uint16(pkt[4:]))
	if plen < udpHeaderLen || ipv6HeaderLen+plen > len(pkt) {
		return d, false
	}
	udp := pkt[ipv6HeaderLen : ipv6HeaderLen+plen]
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen != plen {
		return d, false
	}
	s16, d16 := [16]byte(pkt[8:24]), [16]byte(pkt[24:40])
	if binary.BigEndian.Uint16(udp[6:]) == 0 || inet.Checksum(inet.Sum(inet.PseudoSum(netip.AddrFrom16(s16), netip.AddrFrom16(d16), protoUDP, ulen), udp)) != 0 {
		return d, false // RFC 8200 §8.1: the checksum is mandatory over IPv6
	}
	return udpDatagram{src: netip.AddrFrom16(s16), dst: netip.AddrFrom16(d16),
		sport: binary.BigEndian.Uint16(udp[0:]), dport: binary.BigEndian.Uint16(udp[2:]), payload: udp[udpHeaderLen:]}, true
}

// Client6 is the UE's side of DHCPv6 inside the tunnel: one SOLICIT with
// Rapid Commit, from a link-local address derived from its identity.
type Client6 struct {
	duid dhcpv6.DUID
	iaid [4]byte
	src  netip.Addr
	xid  dhcpv6.TransactionID
}

// ClientLease6 is what the UE learnt: its address and the P-CSCF's.
type ClientLease6 struct {
	Addr   netip.Addr // the UE's inner IPv6 address (a /128)
	Server netip.Addr // OPTION_SIP_SERVER_A: the P-CSCF's inner IPv6 address
	Lease  time.Duration
}

// NewClient6 returns a client identified by id (the IMPI).
func NewClient6(id []byte) (*Client6, error) {
	if len(id) == 0 {
		return nil, errors.New("dhcp: empty client identifier")
	}
	h := sha256.Sum256(id)
	var ll [16]byte
	ll[0], ll[1] = 0xfe, 0x80
	copy(ll[8:], h[:8])
	c := &Client6{duid: &dhcpv6.DUIDLL{HWType: 31, LinkLayerAddr: net.HardwareAddr(h[:16])}, src: netip.AddrFrom16(ll)}
	copy(c.iaid[:], h[16:20])
	return c, nil
}

// Solicit returns the SOLICIT packet (IPv6/UDP, to ff02::1:2 port 547);
// each call starts a new transaction.
func (c *Client6) Solicit() ([]byte, error) {
	xid, err := dhcpv6.GenerateTransactionID()
	if err != nil {
		return nil, err
	}
	c.xid = xid
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeSolicit, TransactionID: xid}
	m.AddOption(dhcpv6.OptClientID(c.duid))
	m.AddOption(dhcpv6.OptElapsedTime(0))
	m.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
	m.AddOption(&dhcpv6.OptIANA{IaId: c.iaid})
	m.AddOption(dhcpv6.OptRequestedOption(optSIPServerA))
	return appendIPv6UDP(nil, c.src, AllServers6, ClientPort6, ServerPort6, m.ToBytes()), nil
}

// Handle reads a packet for port 546: the lease if it is the REPLY to our
// SOLICIT, or an error (ignore the packet and keep waiting).
func (c *Client6) Handle(pkt []byte) (*ClientLease6, error) {
	d, ok := parseIPv6UDP(pkt)
	if !ok || d.dport != ClientPort6 {
		return nil, ErrNotDHCP
	}
	m, err := dhcpv6.MessageFromBytes(d.payload)
	if err != nil {
		return nil, ErrBadDHCPv6
	}
	if m.TransactionID != c.xid || m.MessageType != dhcpv6.MessageTypeReply {
		return nil, errors.New("dhcp: not the reply to our SOLICIT")
	}
	if cid := m.Options.ClientID(); cid == nil || !cid.Equal(c.duid) {
		return nil, errors.New("dhcp: reply for another client")
	}
	ia := m.Options.OneIANA()
	if ia == nil {
		return nil, errors.New("dhcp: reply without IA_NA")
	}
	if st := ia.Options.Status(); st != nil && st.StatusCode != 0 {
		return nil, fmt.Errorf("dhcp: no address: status %v", st.StatusCode)
	}
	ao := ia.Options.OneAddress()
	if ao == nil {
		return nil, errors.New("dhcp: IA_NA without an address")
	}
	addr, ok := netip.AddrFromSlice(ao.IPv6Addr)
	if !ok || !addr.Is6() || addr.Is4In6() || !addr.IsGlobalUnicast() {
		return nil, errors.New("dhcp: bad IA address")
	}
	l := &ClientLease6{Addr: addr, Lease: ao.ValidLifetime}
	if o := m.GetOneOption(optSIPServerA); o != nil {
		if b := o.ToBytes(); len(b) >= 16 {
			l.Server = netip.AddrFrom16([16]byte(b[:16]))
		}
	}
	if !l.Server.IsValid() || !l.Server.IsGlobalUnicast() {
		return nil, errors.New("dhcp: reply without the P-CSCF's address (OPTION_SIP_SERVER_A)")
	}
	return l, nil
}

// Acquire runs the exchange: send sends a packet into the tunnel, replies
// delivers packets for port 546. The SOLICIT is sent again every second
// (RFC 8415 §18.2.1 starts at 1 s) until a REPLY arrives or ctx ends.
func (c *Client6) Acquire(ctx context.Context, send func([]byte) error, replies <-chan []byte) (*ClientLease6, error) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	sol, err := c.Solicit()
	if err != nil {
		return nil, err
	}
	for {
		if err := send(sol); err != nil {
			return nil, err
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("dhcp: no IPv6 lease: %w", ctx.Err())
			case <-t.C:
				break wait
			case p := <-replies:
				if l, err := c.Handle(p); err == nil {
					return l, nil
				}
			}
		}
	}
}
