package sip

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/imsec/imsec/tun"
)

type registration struct {
	impi       string
	impu       string
	impus      []string
	peer       *tun.Peer
	sets       []*saSetState
	pend       *challenge
	lease      netip.Addr
	contact    string
	registered bool
	protected  bool
	expires    time.Time
	source     netip.AddrPort // unprotected SIP source (after NAT)
	natted     bool
	mediaPeer  *tun.Peer // in the media pump, once a set with media is active
}

// dropLocked removes a registration with all its SAs and its lease.
func (s *Server) dropLocked(reg *registration, why string) {
	for len(reg.sets) > 0 {
		s.removeSetLocked(reg, reg.sets[0])
	}
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
	delete(s.regs, reg.impi)
	s.log.Info("registration removed", "impi", reg.impi, "why", why)
}

func (s *Server) housekeeper() {
	defer s.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Housekeep()
		}
	}
}

// Housekeep expires temporary sets, retires old sets once their successor
// carries traffic, and drops registrations past their expiry. It runs twice
// a second; tests with a fake clock call it directly.
func (s *Server) Housekeep() {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, reg := range s.regs {
		for _, st := range append([]*saSetState(nil), reg.sets...) {
			switch st.state {
			case setTemporary:
				if now.After(st.expires) {
					s.removeSetLocked(reg, st)
					emit(s.cfg.Events, now, s.name, "", "temporary SAs expired", fmt.Sprintf("%s: no protected REGISTER in %v", reg.impi, s.cfg.TempSATimeout))
				}
			case setOld:
				if now.After(st.expires) || s.successorUsedLocked(reg) {
					s.removeSetLocked(reg, st)
					emit(s.cfg.Events, now, s.name, "", "old SAs deleted", fmt.Sprintf("%s: SA set %d replaced", reg.impi, st.id))
				}
			}
		}
		if reg.registered && now.After(reg.expires) {
			emit(s.cfg.Events, now, s.name, "", "registration expired", reg.impi)
			s.dropLocked(reg, "expired")
			continue
		}
		if !reg.registered && len(reg.sets) == 0 && reg.pend == nil {
			s.dropLocked(reg, "idle")
		}
		if reg.pend != nil && now.Sub(reg.pend.issued) > s.cfg.TempSATimeout && (reg.pend.set == nil || reg.pend.set.state != setTemporary) {
			reg.pend = nil
		}
	}
}

func (s *Server) successorUsedLocked(reg *registration) bool {
	for _, st := range reg.sets {
		if st.state == setActive && s.inboundPackets(st) > st.usedMark {
			return true
		}
	}
	return false
}

// RegistrationInfo is a snapshot of one registration.
type RegistrationInfo struct {
	IMPI, IMPU string
	Registered bool
	Protected  bool
	InnerAddr  netip.Addr
	Endpoint   netip.AddrPort // where ESP to the UE goes (after NAT)
	NAT        bool
	Expires    time.Time
	Sets       []SetInfo
}

// SetInfo describes one SA set.
type SetInfo struct {
	ID         int
	State      string
	EAlg, Alg  string
	InboundSPI [2]uint32 // ours: spi-s, spi-c
	OutSPI     [2]uint32 // the UE's: spi-c, spi-s
}

// Registrations lists every registration.
func (s *Server) Registrations() []RegistrationInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []RegistrationInfo
	for _, reg := range s.regs {
		ri := RegistrationInfo{IMPI: reg.impi, IMPU: reg.impu, Registered: reg.registered, Protected: reg.protected,
			InnerAddr: reg.lease, NAT: reg.natted, Expires: reg.expires}
		if reg.peer != nil {
			ri.Endpoint = reg.peer.Endpoint()
		}
		for _, st := range reg.sets {
			ri.Sets = append(ri.Sets, SetInfo{ID: st.id, State: st.state.String(), EAlg: st.set.EAlg, Alg: st.set.Alg,
				InboundSPI: [2]uint32{st.set.PCSCF.SPIs, st.set.PCSCF.SPIc}, OutSPI: [2]uint32{st.set.UE.SPIc, st.set.UE.SPIs}})
		}
		out = append(out, ri)
	}
	return out
}
