package sip

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/ipesp"
	"github.com/imsec/imsec/tun/udp"
)

// Plain ESP (mod=trans and mod=tun): the sockets and addresses both ends
// need beyond ESP in UDP. Plain ESP rides on a raw socket (tun/ipesp),
// which needs CAP_NET_RAW; an end without it falls back to the modes it
// can carry, and says so.

// openPlainESP opens the ESP-in-UDP socket on udpAddr and, if modes ask
// for plain ESP, a raw ESP socket on its address, both in one
// tun.DualConn. Without the privilege for the raw socket it returns the
// UDP socket alone, the modes without the plain ones (UDP-enc-tun if none
// is left), and a warning to show.
func openPlainESP(udpAddr netip.AddrPort, modes []string) (tun.PacketConn, []string, string, error) {
	u, err := udp.Listen(udpAddr)
	if err != nil {
		return nil, nil, "", err
	}
	if !slices.ContainsFunc(modes, PlainESP) {
		return u, modes, "", nil
	}
	raw, err := ipesp.Listen(udpAddr.Addr())
	if errors.Is(err, ipesp.ErrNoPrivilege) {
		kept := slices.DeleteFunc(slices.Clone(modes), PlainESP)
		if len(kept) == 0 {
			kept = []string{ModUDPEncTun}
		}
		return u, kept, fmt.Sprintf("%v; offering only %v", err, kept), nil
	}
	if err != nil {
		u.Close()
		return nil, nil, "", err
	}
	return tun.NewDualConn(u, raw), modes, "", nil
}

// plainEndpoint is where plain ESP to addr goes: its address with port 0
// (tun.DualConn sends port 0 through the raw socket).
func plainEndpoint(addr netip.Addr) netip.AddrPort { return netip.AddrPortFrom(addr.Unmap(), 0) }

// espConn is the P-CSCF's ESP socket: ESP in UDP on cfg.ESP, with plain
// ESP beside it when cfg.Modes has a plain mode and the process may open a
// raw socket. Without the privilege the plain modes are dropped from
// cfg.Modes (before any REGISTER is served) with a warning.
func (s *Server) espConn() (tun.PacketConn, error) {
	conn, modes, warn, err := openPlainESP(s.cfg.ESP, s.cfg.Modes)
	if err != nil {
		return nil, fmt.Errorf("sip: ESP socket on %v: %w", s.cfg.ESP, err)
	}
	if warn != "" {
		s.log.Warn("plain ESP (mod=trans, mod=tun) unavailable: " + warn)
	}
	s.cfg.Modes = modes
	return conn, nil
}

// transportConfig is what the pump needs for transport mode UEs: inbound
// segments are delivered to the gateway's inner address of their family
// (where the protected SIP ports listen; a UE on an IPv6 outer address
// needs --pool6); outbound checksums are made for the
// P-CSCF's outer address (the ESP address, else the SIP address; if both
// are unspecified, IPv4 UDP checksums are sent as zero).
func (s *Server) transportConfig() tun.TransportConfig {
	tc := tun.TransportConfig{Local6: s.gateway6} // invalid without an IPv6 pool
	if s.gateway.Is4() {
		tc.Local4 = s.gateway
	}
	for _, a := range []netip.Addr{s.cfg.ESP.Addr(), s.cfg.SIP.Addr()} {
		a = a.Unmap()
		if !a.IsValid() || a.IsUnspecified() {
			continue
		}
		if a.Is4() && !tc.Outer4.IsValid() {
			tc.Outer4 = a
		}
		if a.Is6() && !tc.Outer6.IsValid() {
			tc.Outer6 = a
		}
	}
	return tc
}

// Modes returns the sec-agree modes the P-CSCF accepts now, most
// preferred first: cfg.Modes less the plain-ESP ones if the raw socket was
// refused.
func (s *Server) Modes() []string { return slices.Clone(s.cfg.Modes) }

// bindPlainLocked points reg's peer at src for plain ESP (no NAT is in
// the way, so the UE's ESP comes from the address its REGISTER came from)
// and, for mod=trans, makes src the UE's address on the inner side: with
// no tunnel there is no DHCP lease, and the pump hands the UE's segments
// on from src (tun.TransportConfig), so src is what the protected ports
// see, what answers are routed to and what the registration is found by.
// Called with s.mu held.
func (s *Server) bindPlainLocked(reg *registration, src netip.Addr, mode string) {
	src = src.Unmap()
	if PlainESP(mode) {
		reg.peer.SetEndpoint(plainEndpoint(src))
		reg.peer.SetKeepalive(0)
	}
	if !TransportMode(mode) || reg.lease == src {
		return
	}
	if reg.lease.IsValid() {
		delete(s.byAddr, reg.lease)
		s.dhcp.Release(reg.impi)
	}
	reg.lease = src
	s.byAddr[src] = reg
	host := []netip.Prefix{netip.PrefixFrom(src, src.BitLen())}
	reg.peer.SetAllowed(host)
	s.pump.SetRoutes(reg.peer, host)
	s.emitLocked(EvDHCPLease, "UE "+reg.impu, "transport mode: no inner address", fmt.Sprintf("the UE is %v inside the SAs too (mod=%s)", src, mode))
}

// proveOnly marks the temporary sets of peer's registration that carried
// an authenticated packet as proven, so that they may send (saSets.prove):
// what a DHCP request does in tunnel mode, an echo request does in
// transport mode.
func (s *Server) proveOnly(peer *tun.Peer) {
	s.mu.Lock()
	if reg := s.regs[peer.Name()]; reg != nil && reg.peer == peer {
		reg.sas.prove()
	}
	s.unlock()
}

// isEchoRequest reports whether pkt is an ICMP or ICMPv6 echo request
// (without options in an IPv4 header, or extension headers in IPv6).
func isEchoRequest(pkt []byte) bool {
	switch {
	case len(pkt) >= 21 && pkt[0] == 0x45:
		return pkt[9] == 1 && pkt[20] == 8
	case len(pkt) >= 41 && pkt[0]>>4 == 6:
		return pkt[6] == 58 && pkt[40] == 128
	}
	return false
}
