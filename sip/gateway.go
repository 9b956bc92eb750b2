package sip

import (
	"context"
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
		Netstack: &tun.NetstackOptions{MTU: tun.InnerMTU(1500), Addresses: []netip.Prefix{netip.PrefixFrom(s.gateway, s.cfg.Pool.Bits())}, Name: "pcscf",
			Loopback: slices.ContainsFunc(s.cfg.Modes, TransportMode)},
		Pump: tun.Config{Intercept: s.intercept, EchoResponder: s.gateway, BatchPad: s.cfg.BatchPad, Logger: s.log, Now: s.cfg.Now,
			OnUnknownSPI: s.lazy.install, Transport: s.transportConfig()},
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
	for _, port := range []uint16{s.cfg.PortS, s.portCs[0], s.portCs[1]} {
		ap := netip.AddrPortFrom(s.gateway, port)
		pc, err := ns.ListenUDP(ap)
		if err != nil {
			return err
		}
		s.innerLns = append(s.innerLns, pc)
		s.serve("protected UDP "+ap.String(), func() error { return s.inner.ServeUDP(pc) })
		if err := waitPool(ctx, ua, "udp", ap.String()); err != nil {
			return err
		}
	}
	ln, err := ns.ListenTCP(netip.AddrPortFrom(s.gateway, s.cfg.PortS))
	if err != nil {
		return err
	}
	s.innerLns = append(s.innerLns, ln)
	s.serve("protected TCP", func() error { return s.inner.ServeTCP(ln) })
	s.innerInj = newConnInjector(&net.TCPAddr{IP: s.gateway.AsSlice(), Port: int(s.portCs[0])})
	s.innerLns = append(s.innerLns, s.innerInj)
	s.serve("protected TCP (dialed)", func() error { return s.inner.ServeTCP(s.innerInj) })
	return nil
}

// startMedia brings up the media relay's ESP gateway: its own socket,
// netstack (with the same inner address) and pump.
func (s *Server) startMedia() error {
	ep, err := tun.NewEndpoint(tun.EndpointConfig{
		Listen:   s.cfg.MediaESP,
		Wrap:     s.cfg.WrapMediaESP,
		Netstack: &tun.NetstackOptions{MTU: tun.InnerMTU(1500), Addresses: []netip.Prefix{netip.PrefixFrom(s.gateway, s.cfg.Pool.Bits())}, Name: "pcscf-media"},
		Pump:     tun.Config{EchoResponder: s.gateway, BatchPad: s.cfg.BatchPad, Logger: s.log, Now: s.cfg.Now},
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

// dhcpRequest is a DHCP packet a peer sent through its tunnel.
type dhcpRequest struct {
	peer *tun.Peer
	pkt  []byte
}

// intercept takes DHCP requests out of the tunnels (RFC 3456 style) and
// hands them to serveDHCP. It runs on the pump's inbound path, so it only
// copies: the registrar's lock and the pump's Inject are serveDHCP's to
// take, never the pump's. A full queue drops the request (the client
// retransmits).
func (s *Server) intercept(peer *tun.Peer, pkt []byte) bool {
	if !dhcp.IsToServer(pkt) {
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
	case s.dhcpIn <- dhcpRequest{peer: peer, pkt: append([]byte(nil), pkt...)}:
	default:
		s.log.Debug("dhcp queue full", "peer", peer.Name())
	}
	return true
}

// serveDHCP answers DHCP inside the tunnels: the lease is bound to the
// peer, i.e. to the IMPI whose SAs carried the request.
func (s *Server) serveDHCP() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case r := <-s.dhcpIn:
			s.answerDHCP(r.peer, r.pkt)
		}
	}
}

func (s *Server) answerDHCP(peer *tun.Peer, pkt []byte) {
	if pkt == nil {
		s.proveOnly(peer)
		return
	}
	reply, lease, err := s.dhcp.Handle(pkt, peer.Name())
	if err != nil {
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
		reg := s.regs[peer.Name()]
		if reg != nil && reg.peer == peer && reg.lease != lease.Addr {
			if reg.lease.IsValid() {
				delete(s.byAddr, reg.lease)
			}
			reg.lease = lease.Addr
			s.byAddr[lease.Addr] = reg
			host := []netip.Prefix{netip.PrefixFrom(lease.Addr, 32)}
			peer.SetAllowed(host)
			s.pump.SetRoutes(peer, host)
			s.emitLocked(EvDHCPLease, "UE "+reg.impu, "DHCPACK", fmt.Sprintf("inner address %v (through the tunnel, bound to %s)", lease.Addr, reg.impi))
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
		lease = reg.lease
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
	laddr := netip.AddrPortFrom(s.gateway, st.set.PCSCF.PortC)
	raddr := netip.AddrPortFrom(lease, st.set.UE.PortS)
	s.emitEvent(Event{Kind: EvOptionsSent, To: "UE " + reg.impu, What: "OPTIONS", Detail: fmt.Sprintf("inside the tunnel, %v -> %v", laddr, raddr), Addr: raddr})
	return sendRequest(ctx, s.innerCli, s.innerUA, s.ns, s.innerInj, req, laddr, raddr)
}
