package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Defaults for NetstackOptions.
const (
	// DefaultNetstackMTU leaves room for IPv4 + UDP + ESP (header, 16-byte
	// IV, up to 17 bytes of padding and trailer, 16-byte ICV) inside a
	// 1500-byte path: 1500 - 20 - 8 - 8 - 16 - 17 - 16 = 1415, rounded
	// down. It is the value the sipgo probe ran with.
	DefaultNetstackMTU = 1400

	// DefaultNetstackBatch is the default BatchSize of a Netstack.
	DefaultNetstackBatch = 64

	// DefaultNetstackQueue is the default number of outbound packets the
	// stack may queue before Read collects them; more are dropped.
	DefaultNetstackQueue = 2048
)

// TCP tuning applied to every Netstack (see doc.go, "TCP performance").
const (
	tcpSendBufferMax    = 6 << 20 // tailscale PR #12994
	tcpReceiveBufferMax = 8 << 20 // tailscale PR #12994
	udpReceiveDefault   = 1 << 20 // room for SIP bursts
	udpBufferMax        = 4 << 20
)

// nicID is the only NIC of every Netstack.
const nicID tcpip.NICID = 1

// NetstackOptions configures NewNetstack. The zero value is a usable
// address-less stack with DefaultNetstackMTU.
type NetstackOptions struct {
	// MTU of the link, in bytes; 0 means DefaultNetstackMTU. At least 1280
	// (IPv6's minimum) when non-zero.
	MTU int

	// Addresses to assign at creation. More can be added (and removed)
	// later with AddAddress. With no IPv4 address the stack can still send
	// and receive DHCP (see AddAddress).
	Addresses []netip.Prefix

	// BatchSize is the most packets one Read returns; 0 means
	// DefaultNetstackBatch.
	BatchSize int

	// QueueLen bounds the outbound packets queued between the stack and
	// Read; 0 means DefaultNetstackQueue.
	QueueLen int

	// Name is what Name returns; "" means "netstack".
	Name string

	// Loopback accepts packets from loopback addresses (127.0.0.0/8,
	// ::1) from the link, which the stack otherwise drops as martians. A
	// Pump with transport mode SAs hands segments on as from the ESP
	// packet's outer source, which is a loopback address when both ends
	// run on one host. The Pump's per-peer source check still applies.
	Loopback bool
}

// Netstack is a Device backed by an in-process gVisor TCP/IP stack. It
// needs no privilege. Packets the stack sends come out of Read; packets
// given to Write go into the stack. Sockets on the stack are opened with
// ListenUDP, DialUDP, ListenTCP and DialTCP and are ordinary net types.
type Netstack struct {
	s     *stack.Stack
	link  *linkEndpoint
	name  string
	mtu   int
	batch int

	closeOnce sync.Once
	closed    atomic.Bool

	// mu serialises address changes and guards the fields below.
	mu          sync.Mutex
	v4Count     int  // IPv4 addresses assigned through AddAddress
	placeholder bool // 0.0.0.0 assigned because v4Count == 0

	badPackets atomic.Uint64
}

var _ Device = (*Netstack)(nil)

// NewNetstack creates a Netstack with its link up and routes for all of
// IPv4 and IPv6 pointing at the link.
func NewNetstack(opts NetstackOptions) (*Netstack, error) {
	if opts.MTU == 0 {
		opts.MTU = DefaultNetstackMTU
	}
	if opts.MTU < 1280 || opts.MTU > 65535 {
		return nil, fmt.Errorf("tun: netstack MTU %d outside [1280, 65535]", opts.MTU)
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = DefaultNetstackBatch
	}
	if opts.BatchSize < 1 {
		return nil, fmt.Errorf("tun: netstack batch size %d < 1", opts.BatchSize)
	}
	if opts.QueueLen == 0 {
		opts.QueueLen = DefaultNetstackQueue
	}
	if opts.QueueLen < 1 {
		return nil, fmt.Errorf("tun: netstack queue length %d < 1", opts.QueueLen)
	}
	if opts.Name == "" {
		opts.Name = "netstack"
	}

	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocolWithOptions(ipv4.Options{AllowExternalLoopbackTraffic: opts.Loopback}),
			ipv6.NewProtocolWithOptions(ipv6.Options{AllowExternalLoopbackTraffic: opts.Loopback}),
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	d := &Netstack{
		s:     s,
		link:  newLinkEndpoint(opts.QueueLen, uint32(opts.MTU)),
		name:  opts.Name,
		mtu:   opts.MTU,
		batch: opts.BatchSize,
	}
	fail := func(err error) (*Netstack, error) {
		s.Destroy()
		d.link.close()
		return nil, err
	}
	if err := tuneStack(s); err != nil {
		return fail(err)
	}
	if terr := s.CreateNIC(nicID, d.link); terr != nil {
		return fail(fmt.Errorf("tun: netstack CreateNIC: %v", terr))
	}
	// A tunnel is point to point: everything not local goes to the link.
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	d.mu.Lock()
	err := d.setPlaceholderLocked(true)
	d.mu.Unlock()
	if err != nil {
		return fail(err)
	}
	for _, p := range opts.Addresses {
		if err := d.AddAddress(p); err != nil {
			return fail(err)
		}
	}
	return d, nil
}

// tuneStack applies the TCP and buffer settings documented in doc.go.
func tuneStack(s *stack.Stack) error {
	// SACK off: with it, this gVisor's SACK recovery sometimes stops a
	// connection for good after loss with reordering (no segment, no
	// retransmission timer; TestFakeLossyNetworkTCP failed 11 times in 220
	// runs under load with SACK, never in 140 without). NewReno recovers
	// one loss per round trip instead: slower under heavy loss, never stuck.
	sack := tcpip.TCPSACKEnabled(false)
	rack := tcpip.TCPRecovery(0) // RACK off: with it gVisor TCP stalls for good after a loss (gVisor #6113; tailscale PR #14896)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	cc := tcpip.CongestionControlOption("cubic")
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultSendBufferSize, Max: tcpSendBufferMax}
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: tcp.DefaultReceiveBufferSize, Max: tcpReceiveBufferMax}
	for _, o := range []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"SACK", &sack},
		{"RACK", &rack},
		{"receive buffer auto-tuning", &moderate},
		{"congestion control", &cc},
		{"send buffer range", &snd},
		{"receive buffer range", &rcv},
	} {
		if terr := s.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); terr != nil {
			return fmt.Errorf("tun: netstack TCP %s: %v", o.name, terr)
		}
	}
	if terr := s.SetOption(tcpip.ReceiveBufferSizeOption{Min: stack.MinBufferSize, Default: udpReceiveDefault, Max: udpBufferMax}); terr != nil {
		return fmt.Errorf("tun: netstack receive buffer: %v", terr)
	}
	if terr := s.SetOption(tcpip.SendBufferSizeOption{Min: stack.MinBufferSize, Default: stack.DefaultBufferSize, Max: udpBufferMax}); terr != nil {
		return fmt.Errorf("tun: netstack send buffer: %v", terr)
	}
	return nil
}

// Read implements Device. It blocks for the first packet, then takes the
// packets already queued, up to len(bufs).
func (d *Netstack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < MinOffset || len(sizes) < len(bufs) {
		return 0, ErrOffset
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	if d.closed.Load() {
		return 0, ErrClosed
	}
	var pkt *stack.PacketBuffer
	select {
	case pkt = <-d.link.out:
	case <-d.link.done:
		return 0, ErrClosed
	}
	n := 0
	for {
		size := pkt.Size()
		if len(bufs[n]) < offset+size {
			pkt.DecRef()
			return n, ErrOffset
		}
		sizes[n] = copyPacket(bufs[n][offset:], pkt)
		pkt.DecRef()
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case pkt = <-d.link.out:
		default:
			return n, nil
		}
	}
}

// Write implements Device. Packets are copied into the stack before Write
// returns. A packet that is empty or neither IPv4 nor IPv6 is dropped and
// counted (Stats.BadPackets).
func (d *Netstack) Write(bufs [][]byte, offset int) (int, error) {
	if offset < MinOffset {
		return 0, ErrOffset
	}
	if d.closed.Load() {
		return 0, ErrClosed
	}
	for i, b := range bufs {
		if len(b) < offset {
			return i, ErrOffset
		}
		p := b[offset:]
		var proto tcpip.NetworkProtocolNumber
		switch {
		case len(p) >= header.IPv4MinimumSize && p[0]>>4 == 4:
			proto = header.IPv4ProtocolNumber
		case len(p) >= header.IPv6MinimumSize && p[0]>>4 == 6:
			proto = header.IPv6ProtocolNumber
		default:
			d.badPackets.Add(1)
			continue
		}
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		ok := d.link.deliver(proto, pkt)
		pkt.DecRef()
		if !ok {
			return i, ErrClosed
		}
	}
	return len(bufs), nil
}

// MTU implements Device.
func (d *Netstack) MTU() int { return d.mtu }

// BatchSize implements Device.
func (d *Netstack) BatchSize() int { return d.batch }

// Name implements Device.
func (d *Netstack) Name() string { return d.name }

// Close implements Device. It also closes every socket opened on the
// stack: their blocked calls return net.ErrClosed.
func (d *Netstack) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		d.link.close()
		d.s.Destroy() // aborts endpoints, stops TCP workers, removes the NIC
		d.link.drain()
	})
	return nil
}

// NetstackStats are counters of a Netstack.
type NetstackStats struct {
	// BadPackets counts packets given to Write that were empty or neither
	// IPv4 nor IPv6.
	BadPackets uint64
	// QueueDrops counts outbound packets dropped because Read did not keep
	// up (the queue of NetstackOptions.QueueLen was full).
	QueueDrops uint64
	// MalformedReceived counts inbound packets gVisor discarded as
	// malformed at the IP layer.
	MalformedReceived uint64
	// TCPRetransmits and TCPTimeouts count TCP segments retransmitted and
	// retransmission timeouts, over every connection of the stack.
	TCPRetransmits, TCPTimeouts uint64
}

// Stats returns the counters.
func (d *Netstack) Stats() NetstackStats {
	st := d.s.Stats()
	return NetstackStats{
		BadPackets:        d.badPackets.Load(),
		QueueDrops:        d.link.queueDrop.Load(),
		MalformedReceived: st.IP.MalformedPacketsReceived.Value(),
		TCPRetransmits:    st.TCP.Retransmits.Value(),
		TCPTimeouts:       st.TCP.Timeouts.Value(),
	}
}

// AddAddress assigns p.Addr() to the stack; p.Bits() is the on-link prefix
// (informational on a point-to-point link, used for subnet broadcast). It
// may be called at any time, before or after traffic flows.
//
// Until an IPv4 address is assigned the stack holds 0.0.0.0 as a
// placeholder source address, so that a DHCP client can bind 0.0.0.0:68 and
// send to 255.255.255.255:67 with source 0.0.0.0 (RFC 2131 §4.1). Replies
// must go to the limited broadcast 255.255.255.255 (the client sets the
// BROADCAST flag): a datagram to the address being offered is dropped until
// that address is added. (gVisor's promiscuous mode would accept it, but it
// also makes the stack drop every packet whose source it does not own as
// "from itself", so it is not used.) Adding the first IPv4 address removes
// the placeholder; removing the last brings it back.
func (d *Netstack) AddAddress(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Zone() != "" {
		return fmt.Errorf("tun: netstack address %v invalid", p)
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	if p.Addr().Is4() && p.Bits() > 32 {
		return fmt.Errorf("tun: netstack address %v invalid", p)
	}
	a := p.Addr()
	if a.IsUnspecified() || a.IsMulticast() || (a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
		return fmt.Errorf("tun: netstack address %v is not a unicast address", p)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		return ErrClosed
	}
	pa := tcpip.ProtocolAddress{
		Protocol: protoOf(a),
		AddressWithPrefix: tcpip.AddressWithPrefix{
			Address:   tcpip.AddrFromSlice(a.AsSlice()),
			PrefixLen: p.Bits(),
		},
	}
	if terr := d.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{PEB: stack.CanBePrimaryEndpoint}); terr != nil {
		return fmt.Errorf("tun: netstack add %v: %v", p, terr)
	}
	if a.Is4() {
		d.v4Count++
		if d.v4Count == 1 {
			return d.setPlaceholderLocked(false)
		}
	}
	return nil
}

// RemoveAddress removes an address assigned with AddAddress. Connections
// using it stop working.
func (d *Netstack) RemoveAddress(a netip.Addr) error {
	a = a.Unmap()
	if !a.IsValid() || a.IsUnspecified() {
		return fmt.Errorf("tun: netstack address %v invalid", a)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		return ErrClosed
	}
	if terr := d.s.RemoveAddress(nicID, tcpip.AddrFromSlice(a.AsSlice())); terr != nil {
		return fmt.Errorf("tun: netstack remove %v: %v", a, terr)
	}
	if a.Is4() {
		d.v4Count--
		if d.v4Count == 0 {
			return d.setPlaceholderLocked(true)
		}
	}
	return nil
}

// Addresses returns the addresses assigned with AddAddress (not the
// placeholder).
func (d *Netstack) Addresses() []netip.Prefix {
	var out []netip.Prefix
	for _, pa := range d.s.AllAddresses()[nicID] {
		a, ok := netip.AddrFromSlice(pa.AddressWithPrefix.Address.AsSlice())
		if !ok || a.IsUnspecified() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			continue
		}
		out = append(out, netip.PrefixFrom(a, pa.AddressWithPrefix.PrefixLen))
	}
	return out
}

// setPlaceholderLocked assigns (on) or removes (off) the 0.0.0.0
// placeholder. d.mu must be held.
func (d *Netstack) setPlaceholderLocked(on bool) error {
	if d.placeholder == on {
		return nil
	}
	any4 := tcpip.AddrFrom4([4]byte{})
	if on {
		pa := tcpip.ProtocolAddress{
			Protocol:          ipv4.ProtocolNumber,
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: any4, PrefixLen: 32},
		}
		if terr := d.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{PEB: stack.CanBePrimaryEndpoint}); terr != nil {
			return fmt.Errorf("tun: netstack add 0.0.0.0 placeholder: %v", terr)
		}
	} else {
		if terr := d.s.RemoveAddress(nicID, any4); terr != nil {
			return fmt.Errorf("tun: netstack remove 0.0.0.0 placeholder: %v", terr)
		}
	}
	d.placeholder = on
	return nil
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() || a.Is4In6() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

// errInvalidAddr is the cause in the net.OpError returned when a socket
// call is given an address it cannot use (zero, wrong family, wrong type).
var errInvalidAddr = errors.New("tun: invalid address")
