package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/dhcp"
)

// startTunnel brings up the device, the ESP socket and the pump (once).
func (u *UE) startTunnel() error {
	if u.pump != nil {
		return nil
	}
	ka := max(u.cfg.Keepalive, 0)
	all := everything
	modes := u.cfg.Modes
	if u.cfg.TUN != "" && slices.ContainsFunc(modes, TransportMode) {
		// Transport mode hands segments on as from and to the outer
		// addresses: a kernel TUN holding our own address would take
		// the host's traffic.
		modes = slices.DeleteFunc(slices.Clone(modes), TransportMode)
		u.log.Warn("transport mode (mod=trans, UDP-enc-trans) needs the netstack, not a kernel TUN: not offered")
	}
	if u.local == u.cfg.PCSCFESP.Addr().Unmap() && slices.ContainsFunc(modes, TransportMode) {
		// In transport mode our netstack holds our own address and
		// reaches the P-CSCF at its: they must differ.
		modes = slices.DeleteFunc(slices.Clone(modes), TransportMode)
		u.log.Warn("transport mode needs a local address other than the P-CSCF's (on one host: --local 127.0.0.2): not offered")
	}
	conn, modes, warn, err := openPlainESP(netip.AddrPortFrom(u.local, 0), modes)
	if err != nil {
		return fmt.Errorf("sip: UE ESP socket: %w", err)
	}
	if warn != "" {
		u.log.Warn("plain ESP (mod=trans, mod=tun) unavailable: " + warn)
	}
	u.modes = modes
	tc := tun.TransportConfig{Local4: u.local, Outer4: u.local}
	if u.local.Is6() {
		tc = tun.TransportConfig{Local6: u.local, Outer6: u.local}
	}
	cfg := tun.EndpointConfig{
		Conn: conn,
		Wrap: u.cfg.WrapESP,
		Pump: tun.Config{Intercept: u.intercept, BatchPad: u.cfg.BatchPad, Logger: u.log, Now: u.cfg.Now, Transport: tc},
		Peer: &tun.PeerConfig{Name: u.pcscfName(), Endpoint: u.cfg.PCSCFESP, Allowed: all, Routes: all, Keepalive: ka},
	}
	if u.cfg.TUN != "" {
		cfg.Kernel = &tun.KernelOptions{Name: u.cfg.TUN, MTU: innerMTU(u.cfg.PCSCFESP.Addr()), Up: true}
	} else {
		cfg.Netstack = &tun.NetstackOptions{MTU: innerMTU(u.cfg.PCSCFESP.Addr()), Name: "ue", Loopback: slices.ContainsFunc(modes, TransportMode)}
	}
	ep, err := tun.NewEndpoint(cfg)
	var ee *tun.EndpointError
	if errors.As(err, &ee) && u.cfg.TUN != "" && (ee.Step == tun.StepDevice || ee.Step == tun.StepKernelSetup) {
		return fmt.Errorf("sip: kernel TUN %q (needs CAP_NET_ADMIN; run without --tun for the netstack): %w", u.cfg.TUN, err)
	}
	if err != nil {
		return fmt.Errorf("sip: UE tunnel: %w", err)
	}
	u.mu.Lock() // Info reads them
	u.ep, u.dev, u.pump, u.peer = ep, ep.Device, ep.Pump, ep.Peer
	u.mu.Unlock()
	if ep.Kernel != nil {
		u.kernel, u.inet = ep.Kernel, hostNet{}
	} else {
		u.ns, u.inet = ep.Netstack, ep.Netstack
	}
	u.mu.Lock()
	u.sas.pump, u.sas.tpeer, u.sas.peer = u.pump, u.peer, u.peer
	u.sas.sendOnTemporary = true
	u.mu.Unlock()
	u.goFunc(u.housekeeper)
	return nil
}

// everything is the UE's route and accepted sources through its tunnel:
// every inner packet of either IP version goes to the P-CSCF.
var everything = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// oldSetGrace is how long the UE keeps a replaced SA set (and media SA)
// at the latest: packets in flight on it still arrive. The set goes sooner,
// as soon as its successor carries traffic.
const oldSetGrace = 2 * time.Second

// housekeeper deletes replaced SA sets and media SAs (by the injected
// clock) until Close.
func (u *UE) housekeeper() {
	t := time.NewTimer(housekeepEvery)
	defer t.Stop()
	for {
		select {
		case <-u.ctx.Done():
			return
		case <-t.C:
		case <-u.wake:
		}
		u.Housekeep()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(housekeepEvery)
	}
}

// Housekeep deletes the old SA set once the new one carries traffic or
// its grace is over, and a replaced media SA after its grace. The
// housekeeper runs it; tests with a fake clock call it directly.
func (u *UE) Housekeep() {
	now := u.now()
	u.mu.Lock()
	gone := u.sas.expire(now)
	var oldMedia *esp.Inbound
	if u.mediaOld != nil && !now.Before(u.mediaOldUntil) {
		oldMedia, u.mediaOld = u.mediaOld, nil
	}
	u.mu.Unlock()
	if oldMedia != nil {
		u.mediaPump.RemoveInbound(oldMedia.SPI())
	}
	for range gone {
		u.emit(EvSAOldDeleted, "", "old SAs deleted", "")
	}
}

// intercept takes DHCP replies (to port 68) and DHCPv6 replies (to port
// 546) for the clients.
func (u *UE) intercept(_ *tun.Peer, pkt []byte) bool {
	ch := u.dhcpIn
	switch {
	case dhcp.IsToClient(pkt):
	case dhcp.IsToClient6(pkt):
		ch = u.dhcp6In
	default:
		return false
	}
	select {
	case ch <- append([]byte(nil), pkt...):
	default:
	}
	return true
}

// portC returns the port-c for a new set: it alternates so that a new set
// never shares a port-c with the one it replaces.
func (u *UE) portC(idx int) uint16 { return u.cfg.PortS - 6 + uint16(idx%2) }

// activateMedia brings up (once) and rekeys the media tunnel when the
// P-CSCF agreed to it in Security-Server.
func (u *UE) activateMedia(ctx context.Context, mine, srv Mechanism, ck akakeys.CK, ik akakeys.IK) error {
	ueSPI, _, ok1 := mediaParams(mine)
	pSPI, port, ok2 := mediaParams(srv)
	if !ok1 || !ok2 || port == 0 {
		return nil // no media extension on this set
	}
	if u.mediaPump == nil {
		ep := u.cfg.PCSCFMediaESP
		if !ep.IsValid() {
			ep = netip.AddrPortFrom(u.cfg.PCSCFESP.Addr(), port)
		}
		all := everything
		var hosts []netip.Prefix
		for _, a := range u.innerLeases {
			hosts = append(hosts, netip.PrefixFrom(a, a.BitLen()))
		}
		me, err := tun.NewEndpoint(tun.EndpointConfig{
			Listen: netip.AddrPortFrom(u.local, 0),
			Wrap:   u.cfg.WrapMediaESP,
			Netstack: &tun.NetstackOptions{MTU: innerMTU(ep.Addr()), Name: "ue-media", Addresses: hosts,
				Loopback: slices.ContainsFunc(u.modes, TransportMode)}, // our own address inside, as for signalling
			Pump: tun.Config{BatchPad: u.cfg.BatchPad, Logger: u.log, Now: u.cfg.Now},
			Peer: &tun.PeerConfig{Name: u.pcscfName() + " media", Endpoint: ep, Allowed: all, Routes: all, Keepalive: max(u.cfg.Keepalive, 0)},
		})
		if err != nil {
			return fmt.Errorf("sip: media tunnel: %w", err)
		}
		u.mu.Lock() // Info reads them
		u.mediaEp, u.mediaPump, u.mediaNS, u.mediaPeer = me, me.Pump, me.Netstack, me.Peer
		u.mu.Unlock()
	}
	mp, cfgs, err := newMediaPair(srv.Suite(), ck, ik, ueSPI, pSPI)
	if err != nil {
		return err
	}
	logMediaKeys(u.keylog, cfgs, u.mediaPeer.Endpoint().Addr())
	if err := u.mediaPump.AddInbound(u.mediaPeer, mp.in); err != nil {
		return err
	}
	u.mediaPeer.SetOutbound(mp.out)
	u.mu.Lock()
	if u.mediaOld != nil {
		// A third rekey within the grace: the oldest goes now.
		u.mediaPump.RemoveInbound(u.mediaOld.SPI())
	}
	u.mediaOld, u.mediaOldUntil = u.mediaIn, u.now().Add(oldSetGrace)
	u.mediaIn = mp.in
	u.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rtt, err := u.mediaPump.Ping(pctx, u.mediaPeer, u.innerAddr, u.gateway, 0x1ee, uint16(ueSPI))
	if err != nil {
		return fmt.Errorf("pinhole ping through the media tunnel: %w", err)
	}
	what := "ICMP echo (inside the media tunnel)"
	if u.gateway.Is6() {
		what = "ICMPv6 echo (inside the media tunnel)"
	}
	u.emit(EvPing, u.pcscfName()+" media", what, fmt.Sprintf("SPIs in %#x out %#x, to %v, answered in %v",
		ueSPI, pSPI, u.mediaPeer.Endpoint(), rtt.Round(time.Microsecond)))
	return nil
}

// dropSet deletes one SA set (a failed registration's).
func (u *UE) dropSet(ls *liveSet) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sas.remove(ls)
}

// acquireAddress runs DHCP, DHCPv6 or both (UEConfig.Inner) through the
// tunnel, each followed by a ping to the P-CSCF's inner address of that
// family (the pinhole ping: it also proves the path both ways). The first
// packet through the new SAs opens the NAT pinhole.
func (u *UE) acquireAddress(ctx context.Context) error {
	var leases []netip.Addr
	var inner, gw netip.Addr
	first := "first packet through the SAs: opens the NAT pinhole"
	if u.cfg.Inner != InnerIPv6 {
		cl, err := dhcp.NewClient([]byte(u.cfg.IMPI))
		if err != nil {
			return err
		}
		dctx, cancel := context.WithTimeout(ctx, defaultDHCPTimeout)
		defer cancel()
		u.emit(EvDHCP, u.pcscfName(), "DHCPDISCOVER (inside ESP)", first)
		first = ""
		lease, err := cl.Acquire(dctx, func(p []byte) error { return u.pump.Inject(u.peer, p) }, u.dhcpIn)
		if err != nil {
			return fmt.Errorf("sip: no inner address over the tunnel: %w", err)
		}
		if err := u.addAddress(lease.Addr); err != nil {
			return err
		}
		u.emit(EvInnerAddress, "", "inner address "+lease.Addr.String(), "from DHCP over the tunnel; P-CSCF inner "+lease.Router.String())
		if err := u.pinhole(ctx, lease.Addr.Addr(), lease.Router); err != nil {
			return err
		}
		leases = append(leases, lease.Addr.Addr())
		inner, gw = lease.Addr.Addr(), lease.Router
	}
	if u.cfg.Inner != InnerIPv4 {
		cl, err := dhcp.NewClient6([]byte(u.cfg.IMPI))
		if err != nil {
			return err
		}
		dctx, cancel := context.WithTimeout(ctx, defaultDHCPTimeout)
		defer cancel()
		u.emit(EvDHCP, u.pcscfName(), "DHCPv6 SOLICIT (inside ESP)", first)
		lease, err := cl.Acquire(dctx, func(p []byte) error { return u.pump.Inject(u.peer, p) }, u.dhcp6In)
		if err != nil {
			return fmt.Errorf("sip: no inner IPv6 address over the tunnel (a P-CSCF answers DHCPv6 only with an IPv6 pool: imsec pcscf --pool6): %w", err)
		}
		p := netip.PrefixFrom(lease.Addr, 128)
		if err := u.addAddress(p); err != nil {
			return err
		}
		if u.kernel != nil {
			// A /128 brings no connected route: the P-CSCF's inner
			// address gets one through the TUN.
			if err := u.kernel.AddRoute(netip.PrefixFrom(lease.Server, 128)); err != nil && !errors.Is(err, syscall.EEXIST) {
				return fmt.Errorf("sip: route to %v via %s: %w", lease.Server, u.kernel.Name(), err)
			}
		}
		u.emit(EvInnerAddress, "", "inner address "+p.String(), "from DHCPv6 over the tunnel; P-CSCF inner "+lease.Server.String())
		if err := u.pinhole(ctx, lease.Addr, lease.Server); err != nil {
			return err
		}
		leases = append(leases, lease.Addr)
		inner, gw = lease.Addr, lease.Server
	}
	u.mu.Lock()
	u.innerAddr, u.gateway, u.innerLeases = inner, gw, leases
	u.mu.Unlock()
	return nil
}

// pinhole pings the P-CSCF's inner address dst from src through the tunnel.
func (u *UE) pinhole(ctx context.Context, src, dst netip.Addr) error {
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	rtt, err := u.pump.Ping(pctx, u.peer, src, dst, 0x1ec, 1)
	if err != nil {
		return fmt.Errorf("sip: pinhole ping to %v: %w", dst, err)
	}
	what := "ICMP echo (inside ESP)"
	if dst.Is6() {
		what = "ICMPv6 echo (inside ESP)"
	}
	u.emit(EvPing, u.pcscfName(), what, fmt.Sprintf("pinhole ping answered in %v", rtt.Round(time.Microsecond)))
	return nil
}

// addAddress puts the leased address on the inner side (and on the media
// tunnel's netstack, if any). An address already there is fine: a fresh
// start often gets the same lease back.
func (u *UE) addAddress(p netip.Prefix) error {
	has := func(ps []netip.Prefix) bool {
		for _, q := range ps {
			if q.Addr() == p.Addr() {
				return true
			}
		}
		return false
	}
	if u.mediaNS != nil && !has(u.mediaNS.Addresses()) {
		if err := u.mediaNS.AddAddress(netip.PrefixFrom(p.Addr(), p.Addr().BitLen())); err != nil {
			return err
		}
	}
	if u.ns != nil {
		if has(u.ns.Addresses()) {
			return nil
		}
		return u.ns.AddAddress(p)
	}
	if err := u.kernel.AddAddress(p); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("sip: address %v on %s: %w", p, u.kernel.Name(), err)
	}
	return nil
}

// stopInner closes the SIP listeners on the inner side (the address they
// were bound to is gone).
func (u *UE) stopInner() {
	for _, l := range u.innerLns {
		l.Close()
	}
	u.innerLns = nil
	if u.innerUA != nil {
		u.innerUA.Close()
		u.innerUA = nil
	}
}

// startInner serves SIP on our protected ports on the inner side (UDP on
// port-s and both port-c, TCP on port-s and for connections we dial).
func (u *UE) startInner() error {
	if u.innerUA != nil && u.innerBound == u.innerAddr {
		return nil
	}
	u.stopInner()
	u.innerBound = u.innerAddr
	ua, err := newUA("imsec-ue", u.log, nil, true)
	if err != nil {
		return err
	}
	u.sipc.watch(ua)
	u.innerUA = ua
	if u.inner, err = sipgo.NewServer(ua, sipgo.WithServerLogger(u.log)); err != nil {
		return err
	}
	u.inner.OnInvite(u.handler(u.onInvite))
	u.inner.OnAck(u.handler(u.onAck))
	u.inner.OnBye(u.handler(u.onBye))
	u.inner.OnOptions(u.handler(func(req *sip.Request, tx sip.ServerTransaction) {
		if u.cfg.Events != nil {
			u.cfg.Events(Event{Kind: EvOptionsAnswered, Time: u.now(), From: u.name, To: u.pcscfName(), What: "200 OK to OPTIONS",
				Detail: "inside ESP, from port-s over " + req.Transport(), Addr: parseAddrPort(req.Source()), Transport: req.Transport()})
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.SetDestination(req.Source())
		tx.Respond(res)
	}))
	if u.innerCli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(u.log), sipgo.WithClientHostname(u.innerAddr.String())); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(u.ctx, 5*time.Second)
	defer cancel()
	for _, port := range []uint16{u.cfg.PortS, u.portC(0), u.portC(1)} {
		ap := netip.AddrPortFrom(u.innerAddr, port)
		pc, err := u.inet.ListenUDP(ap)
		if err != nil {
			return err
		}
		u.innerLns = append(u.innerLns, pc)
		srv := u.inner
		u.serve(func() error { return srv.ServeUDP(pc) })
		if err := waitPool(ctx, ua, "udp", ap.String()); err != nil {
			return err
		}
	}
	ln, err := u.inet.ListenTCP(netip.AddrPortFrom(u.innerAddr, u.cfg.PortS))
	if err != nil {
		return err
	}
	u.innerLns = append(u.innerLns, ln)
	srv := u.inner
	u.serve(func() error { return srv.ServeTCP(ln) })
	u.innerInj = newConnInjector(&net.TCPAddr{IP: u.innerAddr.AsSlice(), Port: int(u.portC(0))})
	u.innerLns = append(u.innerLns, u.innerInj)
	inj := u.innerInj
	u.serve(func() error { return srv.ServeTCP(inj) })
	return nil
}

// sendInner sends a request inside the tunnel from our port-c to the
// P-CSCF's port-s (over TCP when it is large).
func (u *UE) sendInner(ctx context.Context, req *sip.Request, portC, pcscfPortS uint16) (*sip.Response, error) {
	return sendRequest(ctx, u.innerCli, u.innerUA, u.inet, u.innerInj, req,
		netip.AddrPortFrom(u.innerAddr, portC), netip.AddrPortFrom(u.gateway, pcscfPortS))
}

// Ping sends an ICMP echo to the P-CSCF's inner address through the
// netstack and the tunnel.
func (u *UE) Ping(ctx context.Context, seq int) (time.Duration, error) {
	u.mu.Lock()
	src, dst := u.innerAddr, u.gateway
	u.mu.Unlock()
	if !dst.IsValid() {
		return 0, errors.New("sip: no inner address yet")
	}
	if u.ns != nil {
		return u.ns.Ping(ctx, dst, seq, []byte("imsec"))
	}
	return u.pump.Ping(ctx, u.peer, src, dst, 0x1ed, uint16(seq))
}

// useMode points the tunnel at the P-CSCF the way mode carries ESP: in
// UDP to PCSCFESP with NAT keepalives, or plain to its address (port 0)
// without. With mod=trans our own address is our address inside the SAs
// and the P-CSCF's is its: no DHCP, and the inner SIP listeners move
// there. A change of mode forgets the inner address of the old one.
func (u *UE) useMode(mode string) error {
	u.mu.Lock()
	changed := u.mode != mode
	u.mode = mode
	if changed {
		u.innerAddr, u.gateway, u.innerLeases = netip.Addr{}, netip.Addr{}, nil
	}
	u.mu.Unlock()
	switch {
	case PlainESP(mode):
		u.peer.SetEndpoint(plainEndpoint(u.cfg.PCSCFESP.Addr()))
		u.peer.SetKeepalive(0)
	default:
		u.peer.SetEndpoint(u.cfg.PCSCFESP)
		u.peer.SetKeepalive(max(u.cfg.Keepalive, 0))
	}
	if !TransportMode(mode) {
		return nil
	}
	if err := u.addAddress(netip.PrefixFrom(u.local, u.local.BitLen())); err != nil {
		return err
	}
	u.mu.Lock()
	u.innerAddr, u.gateway, u.innerLeases = u.local, u.cfg.PCSCFESP.Addr().Unmap(), []netip.Addr{u.local}
	u.mu.Unlock()
	return nil
}

// provePath is transport mode's pinhole ping: echo requests to the
// P-CSCF through the new set until one is answered. The P-CSCF only sends
// through a temporary set that has carried an authenticated packet, so
// its answer to the first request may be lost; the later ones come back.
func (u *UE) provePath(ctx context.Context) error {
	var err error
	for seq := uint16(1); seq <= 10; seq++ {
		pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		var rtt time.Duration
		rtt, err = u.pump.Ping(pctx, u.peer, u.innerAddr, u.gateway, 0x1eb, seq)
		cancel()
		if err == nil {
			u.emit(EvPing, u.pcscfName(), "ICMP echo (transport mode ESP)", fmt.Sprintf("answered in %v", rtt.Round(time.Microsecond)))
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("sip: no echo from the P-CSCF through the new SAs (plain ESP, mod=trans): %w", err)
}
