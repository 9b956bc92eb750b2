package sip

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
)

type setState uint8

const (
	setTemporary setState = iota
	setActive
	setOld
)

func (s setState) String() string {
	return [...]string{"temporary", "active", "old"}[s]
}

// saSetState is one SA set installed in the pump for a registration.
type saSetState struct {
	id      int
	set     *SASet
	side    Side
	state   setState
	created time.Time
	// usedMark is the packet count of this set's inbound SAs when it
	// became active; when it moves, the set carries traffic and the set it
	// replaced can go.
	usedMark uint64
	inSPIs   [2]esp.SPI
	expires  time.Time
	// The media SA pair (zero without the media extension).
	mediaIn, mediaOut uint32 // our media SPI, the UE's
	media             mediaPair
}

// newSPIsLocked draws two unused SPIs above the reserved range.
func (s *Server) newSPIsLocked() (uint32, uint32) {
	var out [2]uint32
	for i := 0; i < 2; {
		var b [4]byte
		rand.Read(b[:])
		v := binary.BigEndian.Uint32(b[:])
		if v <= esp.SPIReservedMax || s.spis[v] || (i == 1 && v == out[0]) {
			continue
		}
		out[i] = v
		i++
	}
	s.spis[out[0]], s.spis[out[1]] = true, true
	return out[0], out[1]
}

// installTemporary builds our half of a new SA set from the UE's offer and
// installs it in the pump as temporary.
func (s *Server) installTemporary(reg *registration, offer Mechanism, v akakeys.Vector) (*saSetState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A fresh challenge replaces an unanswered temporary set.
	for _, st := range append([]*saSetState(nil), reg.sets...) {
		if st.state == setTemporary {
			s.removeSetLocked(reg, st)
		}
	}
	if s.temps >= s.cfg.MaxTempSets {
		return nil, fmt.Errorf("too many pending registrations (%d temporary SA sets)", s.temps)
	}
	// TS 33.203 §7.4: at most MaxSAPairsPerIMPI pairs; drop old sets first.
	for 2*(len(reg.sets)+1) > MaxSAPairsPerIMPI {
		victim := reg.sets[0]
		for _, st := range reg.sets {
			if st.state == setOld {
				victim = st
				break
			}
		}
		s.removeSetLocked(reg, victim)
	}
	spiC, spiS := s.newSPIsLocked()
	portC := s.portCs[0]
	for _, st := range reg.sets {
		if st.set.PCSCF.PortC == portC {
			portC = s.portCs[1]
		}
	}
	ours := Mechanism{Name: MechIPsec3GPP, Q: "0.1", Alg: offer.Alg, EAlg: offer.EffectiveEAlg(), Prot: "esp", Mod: ModUDPEncTun,
		SPIc: spiC, SPIs: spiS, PortC: portC, PortS: s.cfg.PortS}
	var mediaIn, mediaOut uint32
	if ueMedia, _, ok := mediaParams(offer); ok {
		mediaIn, _ = s.newSPIsLocked()
		mediaOut = ueMedia
		ours = withParam(ours, paramMediaSPI, strconv.FormatUint(uint64(mediaIn), 10))
		ours = withParam(ours, paramMediaPort, strconv.Itoa(int(s.MediaESPAddr().Port())))
	}
	set, err := NewSASet(offer, ours, v.CK, v.IK)
	if err != nil {
		delete(s.spis, spiC)
		delete(s.spis, spiS)
		return nil, err
	}
	side, err := set.PCSCFSide()
	if err != nil {
		return nil, err
	}
	if reg.peer == nil {
		reg.peer, err = s.pump.AddPeer(tun.PeerConfig{Name: reg.impi, FollowSource: true})
		if err != nil {
			return nil, err
		}
	}
	for _, in := range side.Inbound {
		if err := s.pump.AddInbound(reg.peer, in); err != nil {
			return nil, err
		}
	}
	s.setSeq++
	st := &saSetState{id: s.setSeq, set: set, side: side, state: setTemporary, created: s.now(),
		inSPIs: [2]esp.SPI{side.Inbound[0].SPI(), side.Inbound[1].SPI()}, expires: s.now().Add(s.cfg.TempSATimeout),
		mediaIn: mediaIn, mediaOut: mediaOut}
	if mediaIn != 0 {
		mp, cfgs, err := newMediaPair(set.EAlg, set.Alg, v.CK, v.IK, mediaIn, mediaOut)
		if err != nil {
			return nil, err
		}
		st.media = mp
		logMediaKeys(s.keylog, cfgs)
	}
	reg.sets = append(reg.sets, st)
	s.temps++
	s.applyOutboundLocked(reg)
	if err := set.LogKeys(s.keylog); err != nil {
		s.log.Warn("key log", "err", err)
	}
	s.emit("", "temporary SAs installed", fmt.Sprintf("%s/%s, SPIs in %#x %#x, out %#x %#x, expire in %v",
		set.EAlg, set.Alg, spiS, spiC, offer.SPIc, offer.SPIs, s.cfg.TempSATimeout))
	return st, nil
}

// applyOutboundLocked installs the outbound selectors of every live set,
// newest first, with the newest set's port-c→port-s SA as the default.
func (s *Server) applyOutboundLocked(reg *registration) {
	var sel []tun.OutboundSA
	var def *esp.Outbound
	for i := len(reg.sets) - 1; i >= 0; i-- {
		st := reg.sets[i]
		sel = append(sel, st.side.Outbound...)
		if def == nil {
			def = st.side.Default
		}
	}
	reg.peer.SetOutboundSAs(def, sel)
}

// removeSetLocked deletes a set's SAs from the pump.
func (s *Server) removeSetLocked(reg *registration, st *saSetState) {
	for _, spi := range st.inSPIs {
		s.pump.RemoveInbound(spi)
	}
	delete(s.spis, st.set.PCSCF.SPIc)
	delete(s.spis, st.set.PCSCF.SPIs)
	if st.mediaIn != 0 {
		delete(s.spis, st.mediaIn)
		if st.state != setTemporary {
			s.mediaPump.RemoveInbound(esp.SPI(st.mediaIn))
		}
	}
	if st.state == setTemporary {
		s.temps--
	}
	kept := reg.sets[:0]
	for _, x := range reg.sets {
		if x != st {
			kept = append(kept, x)
		}
	}
	reg.sets = kept
	if reg.peer != nil {
		s.applyOutboundLocked(reg)
	}
	if reg.pend != nil && reg.pend.set == st {
		reg.pend.set = nil
	}
}

// activateMediaLocked installs the media SA pair of a set that just became
// active, in the media relay's pump. It returns a line for the ladder.
func (s *Server) activateMediaLocked(reg *registration, st *saSetState) string {
	if st.mediaIn == 0 || !reg.lease.IsValid() {
		return ""
	}
	host := []netip.Prefix{netip.PrefixFrom(reg.lease, 32)}
	if reg.mediaPeer == nil {
		p, err := s.mediaPump.AddPeer(tun.PeerConfig{Name: reg.impi, FollowSource: true, Allowed: host, Routes: host})
		if err != nil {
			s.log.Warn("media peer", "impi", reg.impi, "err", err)
			return ""
		}
		reg.mediaPeer = p
	}
	if err := s.mediaPump.AddInbound(reg.mediaPeer, st.media.in); err != nil {
		s.log.Warn("media SA", "impi", reg.impi, "err", err)
		return ""
	}
	reg.mediaPeer.SetOutbound(st.media.out)
	return fmt.Sprintf("separate tunnel for RTP at %v: SPI in %#x, out %#x (keys: TS 33.220 KDF of CK||IK, label %q)",
		s.MediaESPAddr(), st.mediaIn, st.mediaOut, akakeys.MediaLabel)
}

func (s *Server) inboundPackets(st *saSetState) uint64 {
	var n uint64
	for _, spi := range st.inSPIs {
		v, _ := s.pump.InboundPackets(spi)
		n += v
	}
	return n
}
