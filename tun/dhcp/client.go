package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// ClientLease is what a UE learns: its inner address and prefix, the server
// (router) address, and the lease time.
type ClientLease struct {
	Addr      netip.Prefix
	Router    netip.Addr
	Server    netip.Addr
	LeaseTime time.Duration
}

// Client is the UE side: a small state machine that builds the packets to
// send into the tunnel and consumes the server's replies. It is not safe for
// concurrent use; Acquire drives it.
type Client struct {
	id    []byte // client identifier option (RFC 2132 §9.14), type 0 + id
	xid   dhcpv4.TransactionID
	offer *dhcpv4.DHCPv4
}

// Errors of the client.
var (
	ErrNak      = errors.New("dhcp: server refused the request (DHCPNAK)")
	ErrNotReply = errors.New("dhcp: not a DHCP reply for this client")
)

// NewClient makes a client identified by id (any octets, e.g. the IMPI).
func NewClient(id []byte) (*Client, error) {
	xid, err := dhcpv4.GenerateTransactionID()
	if err != nil {
		return nil, err
	}
	return &Client{id: append([]byte{0}, id...), xid: xid}, nil
}

// Discover returns the DHCPDISCOVER IPv4 packet, from 0.0.0.0:68 to
// 255.255.255.255:67, htype 31 (IPsec tunnel, RFC 3456). It carries the
// Rapid Commit option (RFC 4039): a server that supports it answers with
// the ACK at once, halving the exchange; one that does not offers, and the
// client requests as usual.
func (c *Client) Discover() ([]byte, error) {
	c.offer = nil
	m, err := dhcpv4.New(
		dhcpv4.WithTransactionID(c.xid),
		dhcpv4.WithHWType(iana.HWTypeIPsec),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
		dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, c.id)),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionRapidCommit, nil)),
	)
	if err != nil {
		return nil, err
	}
	return c.packet(m), nil
}

func (c *Client) packet(m *dhcpv4.DHCPv4) []byte {
	return appendIPv4UDP(nil, netip.IPv4Unspecified(), limitedBroadcast, ClientPort, ServerPort, m.ToBytes())
}

// Handle consumes one inner packet for UDP port 68. On an OFFER it returns
// the REQUEST to send; on an ACK to the REQUEST, or a rapid ACK (with the
// Rapid Commit option, RFC 4039 §4) to the DISCOVER, it returns the lease;
// on a NAK ErrNak.
func (c *Client) Handle(pkt []byte) (next []byte, lease *ClientLease, err error) {
	d, ok := parseIPv4UDP(pkt)
	if !ok || d.dport != ClientPort {
		return nil, nil, ErrNotReply
	}
	m, err := dhcpv4.FromBytes(d.payload)
	if err != nil || m.OpCode != dhcpv4.OpcodeBootReply || m.TransactionID != c.xid {
		return nil, nil, ErrNotReply
	}
	switch m.MessageType() {
	case dhcpv4.MessageTypeOffer:
		if c.offer != nil {
			return nil, nil, nil // already requesting
		}
		c.offer = m
		req, err := dhcpv4.NewRequestFromOffer(m,
			dhcpv4.WithHWType(iana.HWTypeIPsec),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientIdentifier, c.id)))
		if err != nil {
			return nil, nil, err
		}
		return c.packet(req), nil, nil
	case dhcpv4.MessageTypeAck:
		if c.offer == nil && !m.Options.Has(dhcpv4.OptionRapidCommit) {
			return nil, nil, ErrNotReply
		}
		l, err := leaseFromAck(m)
		if err != nil {
			return nil, nil, err
		}
		return nil, l, nil
	case dhcpv4.MessageTypeNak:
		c.offer = nil
		return nil, nil, ErrNak
	}
	return nil, nil, ErrNotReply
}

func leaseFromAck(m *dhcpv4.DHCPv4) (*ClientLease, error) {
	addr, ok := netip.AddrFromSlice(m.YourIPAddr.To4())
	if !ok || addr.IsUnspecified() {
		return nil, fmt.Errorf("dhcp: ACK without an address")
	}
	bits := 32
	if mask := m.SubnetMask(); mask != nil {
		if ones, b := mask.Size(); b == 32 {
			bits = ones
		}
	}
	l := &ClientLease{Addr: netip.PrefixFrom(addr, bits), LeaseTime: m.IPAddressLeaseTime(DefaultLeaseTime)}
	if r := m.Router(); len(r) > 0 {
		l.Router, _ = netip.AddrFromSlice(r[0].To4())
	}
	if sid := m.ServerIdentifier(); sid != nil {
		l.Server, _ = netip.AddrFromSlice(sid.To4())
	}
	if !l.Router.IsValid() {
		l.Router = l.Server
	}
	return l, nil
}

// Acquire runs DISCOVER/ACK (rapid commit), or DISCOVER/OFFER/REQUEST/ACK
// with a server without it: send puts an IPv4 packet into the
// tunnel, replies delivers the packets for UDP port 68 that come out of it.
// It retransmits after 1 s, 2 s, 4 s, ... (capped at 8 s) until ctx ends.
func (c *Client) Acquire(ctx context.Context, send func([]byte) error, replies <-chan []byte) (*ClientLease, error) {
	pkt, err := c.Discover()
	if err != nil {
		return nil, err
	}
	wait := time.Second
	for {
		if err := send(pkt); err != nil {
			return nil, fmt.Errorf("dhcp: send: %w", err)
		}
		t := time.NewTimer(wait)
	recv:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("dhcp: no lease: %w", ctx.Err())
			case <-t.C:
				wait = min(2*wait, 8*time.Second)
				break recv
			case r := <-replies:
				next, lease, err := c.Handle(r)
				switch {
				case errors.Is(err, ErrNotReply):
					continue
				case errors.Is(err, ErrNak):
					t.Stop()
					if pkt, err = c.Discover(); err != nil {
						return nil, err
					}
					break recv
				case err != nil:
					t.Stop()
					return nil, err
				case lease != nil:
					t.Stop()
					return lease, nil
				case next != nil:
					pkt = next
					t.Stop()
					if err := send(pkt); err != nil {
						return nil, fmt.Errorf("dhcp: send: %w", err)
					}
					t = time.NewTimer(wait)
				}
			}
		}
	}
}
