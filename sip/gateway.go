package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/dhcp"
)

// startInner brings up the ESP gateway: socket, netstack, pump, DHCP, and
// the protected SIP ports on the netstack.
func (s *Server) startInner() error {
	conn, err := s.espConn()
	if err != nil {
		return err
	}
	ep, err := tun.NewEndpoint(tun.EndpointConfig{
		Conn: conn,
		Wrap: s.cfg.WrapESP,
		Netstack: &tun.NetstackOptions{MTU: innerMTU(s.cfg.ESP.Addr()), Addresses: s.gatewayPrefixes(), Name: "pcscf",
			Loopback: slices.ContainsFunc(s.cfg.Modes, TransportMode)},
		Pump: tun.Config{Intercept: s.intercept, EchoResponder: s.gateway, BatchPad: s.cfg.BatchPad, Logger: s.log, Now: s.cfg.Now,
			OnUnknownSPI: s.lazy.install, Transport: s.transportConfig(), OnInboundWait: s.ovl.espWaited},
	})
	if err != nil {
		return fmt.Errorf("sip: ESP gateway on %v: %w", s.cfg.ESP, err)
	}
	s.ep, s.ns, s.pump = ep, ep.Netstack, ep.Pump
	s.lazy.pump = ep.Pump
	ns := ep.Netstack
	ua, err := newUA("imsec-pcscf", s.log, s.innerFilter, true)
	if err != nil {
		return err
	}
	s.sipc.watch(ua)
	s.innerUA = ua
	if s.inner, err = sipgo.NewServer(ua, sipgo.WithServerLogger(s.log)); err != nil {
		return err
	}
	s.inner.OnRegister(s.handler(s.onInnerRegister))
	s.inner.OnInvite(s.handler(s.onInvite(true)))
	s.inner.OnAck(s.handler(s.onAck))
	s.inner.OnBye(s.handler(s.onBye(true)))
	s.inner.OnOptions(s.handler(func(req *sip.Request, tx sip.ServerTransaction) { s.respond(tx, req, 200, "OK", false) }))
	if s.innerCli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(s.log), sipgo.WithClientHostname(s.gateway.String())); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	for _, gw := range s.gatewayPrefixes() {
		for _, port := range []uint16{s.cfg.PortS, s.portCs[0], s.portCs[1]} {
			ap := netip.AddrPortFrom(gw.Addr(), port)
			pc, err := s.protectedUDP(ap)
			if err != nil {
				return err
			}
			s.serve("protected UDP "+ap.String(), func() error { return s.inner.ServeUDP(pc) })
			if err := waitPool(ctx, ua, "udp", ap.String()); err != nil {
				return err
			}
		}
		ln, err := ns.ListenTCP(netip.AddrPortFrom(gw.Addr(), s.cfg.PortS))
		if err != nil {
			return err
		}
		s.innerLns = append(s.innerLns, ln)
		s.serve("protected TCP "+gw.Addr().String(), func() error { return s.inner.ServeTCP(ln) })
	}
	s.innerInj = newConnInjector(&net.TCPAddr{IP: s.gateway.AsSlice(), Port: int(s.portCs[0])})
	s.innerLns = append(s.innerLns, s.innerInj)
	s.serve("protected TCP (dialed)", func() error { return s.inner.ServeTCP(s.innerInj) })
	return nil
}

// protectedUDP opens a protected UDP port on the pump itself (a
// tun.Socket: docs/architecture.md, "Protected SIP without the netstack"),
// and the same port on the netstack for what the pump leaves to it: a
// fragmented datagram, which the netstack reassembles and forwardUDP hands
// to the Socket.
func (s *Server) protectedUDP(ap netip.AddrPort) (*tun.Socket, error) {
	sock, err := s.pump.ListenUDP(ap)
	if err != nil {
		return nil, err
	}
	s.innerLns = append(s.innerLns, sock)
	s.protUDP = append(s.protUDP, sock)
	slow, err := s.ns.ListenUDP(ap)
	if err != nil {
		return nil, err
	}
	s.innerLns = append(s.innerLns, slow)
	s.serve("protected UDP (reassembled) "+ap.String(), func() error { return forwardUDP(slow.(tun.UDPAddrPortConn), sock) })
	return sock, nil
}

// forwardUDP hands what from reads to sock until from is closed.
func forwardUDP(from tun.UDPAddrPortConn, sock *tun.Socket) error {
	buf := make([]byte, 65535)
	for {
		n, src, err := from.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		sock.Deliver(buf[:n], src)
	}
}

// innerMTU is the inner MTU of a tunnel whose outer socket is at a on a
// 1500-octet path: an IPv6 socket (the dual-stack [::] too) may carry IPv6,
// whose header is 20 octets longer (tun/mtu.go).
func innerMTU(a netip.Addr) int {
	if a.Is6() && !a.Is4In6() {
		return tun.InnerMTU6(1500)
	}
	return tun.InnerMTU(1500)
}

// startMedia brings up the media relay's ESP gateway: its own socket,
// netstack (with the same inner address) and pump.
func (s *Server) startMedia() error {
	ep, err := tun.NewEndpoint(tun.EndpointConfig{
		Listen: s.cfg.MediaESP,
		Wrap:   s.cfg.WrapMediaESP,
		// A transport mode UE's media come from its own address, a loopback
		// one when both ends run on one host, as for signalling.
		Netstack: &tun.NetstackOptions{MTU: innerMTU(s.cfg.MediaESP.Addr()), Addresses: s.gatewayPrefixes(), Name: "pcscf-media",
			Loopback: slices.ContainsFunc(s.cfg.Modes, TransportMode)},
		Pump: tun.Config{EchoResponder: s.gateway, BatchPad: s.cfg.BatchPad, Logger: s.log, Now: s.cfg.Now},
	})
	if err != nil {
		return fmt.Errorf("sip: media ESP gateway on %v: %w", s.cfg.MediaESP, err)
	}
	s.mediaEp, s.mediaNS, s.mediaPump = ep, ep.Netstack, ep.Pump
	return nil
}

// innerFilter enforces TS 33.203 port discipline on the protected ports:
// requests only on port-s, responses only on a port-c, and only from a
// leased inner address (the pump has already checked the SA).
func (s *Server) innerFilter(info sip.TransportReadProps, data []byte) ([]byte, error) {
	local := addrPortOf(info.LocalAddr)
	remote := addrPortOf(info.RemoteAddr)
	s.mu.Lock()
	reg := s.byAddr[remote.Addr()]
	s.mu.Unlock()
	if reg == nil {
		return nil, nil
	}
	isResponse := len(data) >= 7 && string(data[:7]) == "SIP/2.0"
	if isResponse == (local.Port() == s.cfg.PortS) {
		return nil, nil
	}
	return data, nil
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.UDPAddr:
		return netip.AddrPortFrom(v.AddrPort().Addr().Unmap(), v.AddrPort().Port())
	case *net.TCPAddr:
		return netip.AddrPortFrom(v.AddrPort().Addr().Unmap(), v.AddrPort().Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	return parseAddrPort(a.String())
}

// dhcpQueue is how many DHCP requests wait for serveDHCP before the
// intercept drops one: a burst of registrations (each UE's DISCOVER and
// REQUEST) must not lose them to a queue sized for a handful.
const dhcpQueue = 4096

// errNoPool answers a DHCP request of a family we have no pool for.
var errNoPool = errors.New("sip: no inner pool of that IP version")

// dhcpRequest is a DHCP packet a peer sent through its tunnel.
type dhcpRequest struct {
	peer *tun.Peer
	pkt  []byte
	at   time.Time // queued (for overload control's lag)
}

// intercept takes DHCP requests out of the tunnels (RFC 3456 style) and
// hands them to serveDHCP. It runs on the pump's inbound path, so it only
// copies: the registrar's lock and the pump's Inject are serveDHCP's to
// take, never the pump's. A full queue drops the request (the client
// retransmits).
func (s *Server) intercept(peer *tun.Peer, pkt []byte) bool {
	if !dhcp.IsToServer(pkt) && !dhcp.IsToServer6(pkt) {
		if isEchoRequest(pkt) {
			// A transport mode UE has no DHCP to prove its new set
			// with: its first echo request does (proveOnly), and the
			// pump answers the echo itself once the set may send.
			select {
			case s.dhcpIn <- dhcpRequest{peer: peer}:
			default:
			}
		}
		return false
	}
	select {
	case s.dhcpIn <- dhcpRequest{peer: peer, pkt: append([]byte(nil), pkt...), at: time.Now()}:
	default:
		s.dhcpDropped.Add(1)
	}
	return true
}

// dhcpWorkers is how many goroutines answer DHCP. More than one: during a
// registration burst the SIP side runs a goroutine per request, and a
// single DHCP goroutine would get a share of the CPU too small to keep
// up, starving the registrations in progress in favour of new ones.
const dhcpWorkers = 4

// serveDHCP answers DHCP inside the tunnels: the lease is bound to the
// peer, i.e. to the IMPI whose SAs carried the request. dhcpWorkers of
// them run; two answering one UE's retransmissions bind the same lease.
func (s *Server) serveDHCP() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case r := <-s.dhcpIn:
			if !r.at.IsZero() {
				now := time.Now()
				s.ovl.dhcpWaited(now.Sub(r.at), now)
			}
			s.answerDHCP(r.peer, r.pkt)
		}
	}
}

func (s *Server) answerDHCP(peer *tun.Peer, pkt []byte) {
	if pkt == nil {
		s.proveOnly(peer)
		return
	}
	var reply []byte
	var lease dhcp.Lease
	err := errNoPool
	v6 := pkt[0]>>4 == 6 // the intercept passed only IPv4 or IPv6 UDP
	switch {
	case v6 && s.dhcp6 != nil:
		reply, lease, err = s.dhcp6.Handle(pkt, peer.Name())
	case !v6 && s.dhcp != nil:
		reply, lease, err = s.dhcp.Handle(pkt, peer.Name())
	}
	if err != nil {
		s.dhcpDropped.Add(1)
		s.log.Debug("dhcp", "peer", peer.Name(), "err", err)
		return
	}
	// The request came through a set that proved its keys: the reply
	// goes back through it.
	s.mu.Lock()
	if reg := s.regs[peer.Name()]; reg != nil && reg.peer == peer {
		reg.sas.prove()
	}
	s.unlock()
	if lease.Bound {
		s.mu.Lock()
		if reg := s.regs[peer.Name()]; reg != nil && reg.peer == peer {
			cur, what := &reg.lease, "DHCPACK"
			if v6 {
				cur, what = &reg.lease6, "DHCPv6 REPLY"
			}
			if *cur != lease.Addr {
				if cur.IsValid() {
					delete(s.byAddr, *cur)
				}
				*cur = lease.Addr
				s.byAddr[lease.Addr] = reg
				hosts := reg.hosts()
				peer.SetAllowed(hosts)
				s.pump.SetRoutes(peer, hosts)
				if s.tracing() {
					s.emitLocked(EvDHCPLease, "UE "+reg.impu, what, fmt.Sprintf("inner address %v (through the tunnel, bound to %s)", lease.Addr, reg.impi))
				}
			}
		}
		s.unlock()
	}
	if reply != nil {
		if err := s.pump.Inject(peer, reply); err != nil {
			s.log.Debug("dhcp reply", "err", err)
		}
	}
}

// Options sends an OPTIONS to a registered UE inside its tunnel, from the
// P-CSCF's port-c to the UE's port-s, and returns the response.
func (s *Server) Options(ctx context.Context, impi string) (*sip.Response, error) {
	return s.optionsWithBody(ctx, impi, nil)
}

// optionsWithBody is Options with a body (a large one goes over TCP).
func (s *Server) optionsWithBody(ctx context.Context, impi string, body []byte) (*sip.Response, error) {
	s.mu.Lock()
	reg := s.regs[impi]
	var st *liveSet
	if reg != nil && reg.registered && reg.protected {
		st = reg.sas.active()
	}
	var lease netip.Addr
	if reg != nil {
		lease = reg.contactAddr()
	}
	s.mu.Unlock()
	if st == nil || !lease.IsValid() {
		return nil, fmt.Errorf("sip: %s is not registered with IPsec", impi)
	}
	dst := sip.Uri{Scheme: "sip", Host: lease.String(), Port: int(st.set.UE.PortS)}
	req := sip.NewRequest(sip.OPTIONS, dst)
	req.AppendHeader(&sip.ToHeader{Address: dst})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "pcscf", Host: s.cfg.Domain}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(12)}}})
	if body != nil {
		req.AppendHeader(sip.NewHeader("Content-Type", "text/plain"))
		req.SetBody(body)
	}
	laddr := netip.AddrPortFrom(s.innerFor(lease), st.set.PCSCF.PortC)
	raddr := netip.AddrPortFrom(lease, st.set.UE.PortS)
	s.emitEvent(Event{Kind: EvOptionsSent, To: "UE " + reg.impu, What: "OPTIONS", Detail: fmt.Sprintf("inside the tunnel, %v -> %v", laddr, raddr), Addr: raddr})
	return sendRequest(ctx, s.innerCli, s.innerUA, s.ns, s.innerInj, req, laddr, raddr)
}
