package sip

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/sip/internal/connlimit"
	"github.com/imsec/imsec/tun"
)

// registration is the P-CSCF's state for one IMPI. Every field is guarded
// by Server.mu.
type registration struct {
	impi    string
	impu    string
	impus   []string
	peer    *tun.Peer    // in the signalling pump, from the first challenge with sec-agree
	sas     saSets       // the SA sets towards peer (salifecycle.go)
	pending []*challenge // unanswered challenges, oldest first, at most Limits.PendingPerIMPI
	// vector is the unused vector that challenges on the unprotected side
	// share until one is answered (a flood must not burn the IMPI's SQNs);
	// nil once used or past TempSATimeout.
	vector *sharedVector
	// drawing, while a handler draws the shared vector from the HSS, is
	// closed when it is done (registrar.go, sharedVector).
	drawing chan struct{}
	lease   netip.Addr // the inner IPv4 address leased through the tunnel (DHCP)
	lease6  netip.Addr // the inner IPv6 address leased through the tunnel (DHCPv6)
	contact string
	// serviceRoute is, in the proxy role, the S-CSCF's Service-Route from
	// the last 200: the route of the UE's own requests (TS 24.229 §5.2.6.3.3).
	serviceRoute []string
	registered   bool
	protected    bool
	expires      time.Time
	source       netip.AddrPort // unprotected SIP source (after NAT)
	natted       bool
	mediaPeer    *tun.Peer // in the media pump, once a set with media is active
	// busy counts handlers working on the registration outside the lock
	// (waiting for the HSS): the housekeeper must not drop it as idle.
	busy int
	// teardown, if set, is when the SAs of a de-registered registration
	// go (after the 200 and its retransmissions had time to leave).
	teardown time.Time
	// due is when the housekeeper next looks at the registration, and
	// dueIdx its place in Server.due (-1 when not there): housekeep.go.
	due    time.Time
	dueIdx int
	// keysIdleAt, once registered, is when the housekeeper next looks
	// whether the SA sets' prepared keys can go (idleKeys); zero when they
	// went, until a handler lets go of the registration again.
	keysIdleAt time.Time
}

// sharedVector is a vector not yet answered, and when it was drawn.
type sharedVector struct {
	v      akakeys.Vector
	issued time.Time
}

// pendingKey identifies where a challenge went: the UE's address (after
// NAT, or inside the tunnel for a re-registration) and its Call-ID.
type pendingKey struct {
	src    netip.AddrPort
	callID string
}

// hosts are the UE's leased inner addresses as host routes: the inner
// sources its SAs may carry and the destinations routed into its tunnel.
func (reg *registration) hosts() []netip.Prefix {
	var hs []netip.Prefix
	for _, a := range []netip.Addr{reg.lease, reg.lease6} {
		if a.IsValid() {
			hs = append(hs, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return hs
}

// contactAddr is the inner address we send SIP and media to: the IPv6
// lease when the UE holds one (a dual-stack UE signals over IPv6, as IMS
// does), else the IPv4 lease; invalid before DHCP.
func (reg *registration) contactAddr() netip.Addr {
	if reg.lease6.IsValid() {
		return reg.lease6
	}
	return reg.lease
}

func (reg *registration) pendingByKey(k pendingKey) *challenge {
	for _, ch := range reg.pending {
		if ch.key == k {
			return ch
		}
	}
	return nil
}

func (reg *registration) pendingBySet(ls *liveSet) *challenge {
	for _, ch := range reg.pending {
		if ch.set == ls {
			return ch
		}
	}
	return nil
}

// proven tells whether the challenge's SA set has carried packets from
// the UE (so whoever it went to holds the keys).
func (ch *challenge) proven() bool { return ch.set != nil && ch.set.proven }

// makeRoomLocked drops pending challenges (and their temporary sets) so
// that one more from src fits: the source's own oldest unproven ones past
// perSource, then, past perIMPI, the oldest unproven one of the source
// holding the most. Proven challenges are never dropped. False when no
// room can be made.
func (reg *registration) makeRoomLocked(src netip.Addr, perSource, perIMPI int) bool {
	drop := func(ch *challenge) {
		reg.forget(ch)
		if ch.set != nil && ch.set.state == saTemporary {
			reg.sas.remove(ch.set)
		}
	}
	count := map[netip.Addr]int{}
	for _, ch := range reg.pending {
		count[ch.key.src.Addr()]++
	}
	for count[src] >= perSource {
		victim := reg.oldestUnproven(func(a netip.Addr) bool { return a == src })
		if victim == nil {
			return false
		}
		drop(victim)
		count[src]--
	}
	for len(reg.pending) >= perIMPI {
		most, n := netip.Addr{}, 0
		for a, c := range count {
			if c > n && reg.oldestUnproven(func(x netip.Addr) bool { return x == a }) != nil {
				most, n = a, c
			}
		}
		if n == 0 {
			return false
		}
		drop(reg.oldestUnproven(func(a netip.Addr) bool { return a == most }))
		count[most]--
	}
	return true
}

func (reg *registration) oldestUnproven(from func(netip.Addr) bool) *challenge {
	for _, ch := range reg.pending {
		if !ch.proven() && from(ch.key.src.Addr()) {
			return ch
		}
	}
	return nil
}

// forget drops a pending challenge (its temporary set stays; the
// lifecycle or the caller deletes it).
func (reg *registration) forget(ch *challenge) {
	reg.pending = slices.DeleteFunc(reg.pending, func(x *challenge) bool { return x == ch })
}

// regLocked returns the registration of impi, creating it, and marks it
// busy until the caller's releaseLocked.
func (s *Server) regLocked(impi, impu string) *registration {
	reg := s.regs[impi]
	if reg == nil {
		// Copies: impi and impu are usually substrings of the REGISTER's
		// Authorization and To values, which they would keep alive for the
		// registration's life.
		impi, impu = strings.Clone(impi), strings.Clone(impu)
		reg = &registration{impi: impi, impu: impu, dueIdx: -1}
		s.regs[impi] = reg
	}
	reg.busy++
	return reg
}

// dropLocked removes a registration with all its SAs and its lease.
func (s *Server) dropLocked(reg *registration, why string) {
	reg.sas.clear()
	if reg.peer != nil {
		s.pump.RemovePeer(reg.peer)
		reg.peer = nil
	}
	if reg.mediaPeer != nil {
		s.mediaPump.RemovePeer(reg.mediaPeer)
		reg.mediaPeer = nil
	}
	if reg.lease.IsValid() {
		delete(s.byAddr, reg.lease)
		s.dhcp.Release(reg.impi)
		reg.lease = netip.Addr{}
	}
	if reg.lease6.IsValid() {
		delete(s.byAddr, reg.lease6)
		s.dhcp6.Release(reg.impi)
		reg.lease6 = netip.Addr{}
	}
	if s.regs[reg.impi] == reg {
		delete(s.regs, reg.impi)
	}
	s.unscheduleLocked(reg)
	s.log.Info("registration removed", "impi", reg.impi, "why", why)
}

// Stats are the registrar's counters.
type Stats struct {
	Registrations int    // registrations held (registered or pending)
	TempSets      int    // temporary SA sets, all registrations
	SPIs          int    // SPIs in use (signalling and media)
	Pending       int    // unanswered challenges
	WaitingSAs    int    // inbound SAs not yet in the data plane (no packet has used them)
	Leases        int    // inner addresses leased
	Overloaded    uint64 // requests answered 503 by a limit, Shed included
	// Shed counts new registrations refused by overload control
	// (overload.go): 503 with Retry-After at the first REGISTER.
	Shed uint64
	// ShedBy is Shed by the signal that refused each.
	ShedBy ShedCounts
	// InFlight is the REGISTER handlers running now.
	InFlight int
	// DHCPDropped counts DHCP and DHCPv6 requests from the tunnels that
	// got no answer: dropped on a full queue (the UE retransmits),
	// malformed, unsupported, of a family without a pool, or the pool full.
	DHCPDropped uint64
	// ProtectedDropped counts datagrams for the protected UDP ports that
	// got no further: their queue full (the UE retransmits), or a bad UDP
	// checksum or length.
	ProtectedDropped uint64
	// SocketDrops are the datagrams the kernel dropped at the P-CSCF's UDP
	// sockets, their receive buffers full (Linux; zero elsewhere): the
	// loss a P-CSCF that falls behind suffers before any of its counters
	// sees the datagram.
	SocketDrops SocketDrops
	// TCP is the unprotected TCP listener's: connections refused by a cap,
	// closed idle or mid-header, accept errors retried.
	TCP connlimit.Stats
}

// Stats returns the registrar's counters.
func (s *Server) Stats() Stats {
	drops := s.socketDrops() // system calls: not under the lock
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Registrations: len(s.regs), TempSets: s.temps, SPIs: s.spis.inUse(), Overloaded: s.overloaded.Load(), DHCPDropped: s.dhcpDropped.Load(),
		Shed: s.ovl.shed.Load(), InFlight: int(s.ovl.inFlight.Load()), ShedBy: s.ovl.shedCounts()}
	if s.outerLim != nil {
		st.TCP = s.outerLim.Stats()
	}
	st.SocketDrops = drops
	for _, sock := range s.protUDP {
		st.ProtectedDropped += sock.Counters().Dropped
	}
	st.WaitingSAs = s.lazy.len()
	st.Leases = len(s.byAddr)
	for _, reg := range s.regs {
		st.Pending += len(reg.pending)
	}
	return st
}

// RegistrationInfo is a snapshot of one registration.
type RegistrationInfo struct {
	IMPI, IMPU string
	Registered bool
	Protected  bool
	InnerAddr  netip.Addr     // the inner IPv4 lease
	InnerAddr6 netip.Addr     // the inner IPv6 lease
	Endpoint   netip.AddrPort // where ESP to the UE goes (after NAT)
	NAT        bool
	Expires    time.Time
	Sets       []SetInfo
}

// SetInfo describes one SA set.
type SetInfo struct {
	ID         int
	State      string // temporary, active or old
	Suite      Suite
	InboundSPI [2]esp.SPI // ours: spi-s, spi-c
	OutSPI     [2]esp.SPI // the UE's: spi-c, spi-s
}

// Registrations lists every registration.
func (s *Server) Registrations() []RegistrationInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []RegistrationInfo
	for _, reg := range s.regs {
		ri := RegistrationInfo{IMPI: reg.impi, IMPU: reg.impu, Registered: reg.registered, Protected: reg.protected,
			InnerAddr: reg.lease, InnerAddr6: reg.lease6, NAT: reg.natted, Expires: reg.expires}
		if reg.peer != nil {
			ri.Endpoint = reg.peer.Endpoint()
		}
		for _, st := range reg.sas.sets {
			ri.Sets = append(ri.Sets, SetInfo{ID: st.id, State: st.state.String(), Suite: st.set.Suite,
				InboundSPI: [2]esp.SPI{st.set.PCSCF.SPIs, st.set.PCSCF.SPIc}, OutSPI: [2]esp.SPI{st.set.UE.SPIc, st.set.UE.SPIs}})
		}
		out = append(out, ri)
	}
	return out
}
