package sip

import (
	"fmt"
	"strconv"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/tun"
)

// The P-CSCF's side of the SA lifecycle (salifecycle.go): building a
// registration's temporary set from the UE's offer, and the media SAs of a
// set that becomes active. Called with s.mu held.

// errTooManyPending is the answer when the global cap on temporary SA sets
// is reached.
type errTooManyPending struct{ n int }

func (e errTooManyPending) Error() string {
	return fmt.Sprintf("too many pending registrations (%d temporary SA sets)", e.n)
}

// installTemporaryLocked builds our half of a new SA set from the UE's
// offer and installs it in the pump as temporary, for the challenge ch
// (which came from ch.key.src). The temporary set an earlier challenge of
// the same source and Call-ID holds is replaced; the sets of other sources
// (perhaps the real UE's, while a stranger floods its IMPI) are not, and
// neither is the active set. outer tells whether the challenge came on the
// unprotected port: a re-registration's comes through the SAs, from the
// UE's inner address, which says nothing of where its ESP comes from.
func (s *Server) installTemporaryLocked(reg *registration, ch *challenge, offer Mechanism, v akakeys.Vector, outer bool) (*liveSet, error) {
	if reg.peer == nil {
		peer, err := s.pump.AddPeer(tun.PeerConfig{Name: reg.impi, FollowSource: true})
		if err != nil {
			return nil, err
		}
		reg.peer = peer
		reg.sas = saSets{pump: s.lazy, tpeer: peer, peer: peer, pool: s.spis, onTemp: s.countTemp}
	}
	src := ch.key.src.Addr()
	if s.temps >= s.cfg.MaxTempSets || !s.limits.tempOK(src) {
		return nil, errTooManyPending{s.temps}
	}
	// TS 33.203 §7.4: at most MaxSAPairsPerIMPI pairs for the UE: its
	// active and old sets and the temporary sets that carried its packets.
	// Unproven temporary sets (perhaps strangers') are bounded by
	// Limits.PendingPerIMPI instead. Old sets go first; never the active set.
	for 2*(reg.sas.provenCount()+1) > MaxSAPairsPerIMPI {
		var victim *liveSet
		for _, st := range reg.sas.sets {
			if st.state == saOld || (victim == nil && st.state == saTemporary && st.proven) {
				victim = st
			}
		}
		if victim == nil {
			return nil, errTooManyPending{s.temps}
		}
		reg.sas.remove(victim)
	}
	ueMedia, _, hasMedia := mediaParams(offer)
	n := 2
	if hasMedia {
		n = 3
	}
	spis, err := s.spis.draw(n)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.spis.release(spis...)
		}
	}()
	portC := s.portCs[0]
	for _, st := range reg.sas.sets {
		if st.set.PCSCF.PortC == portC {
			portC = s.portCs[1]
		}
	}
	ours := Mechanism{Name: MechIPsec3GPP, Q: "0.1", Alg: offer.Alg, EAlg: offer.EffectiveEAlg(), Prot: "esp", Mod: offer.EffectiveMod(),
		SPIc: spis[0], SPIs: spis[1], PortC: portC, PortS: s.cfg.PortS}
	if hasMedia {
		ours = withParam(ours, paramMediaSPI, strconv.FormatUint(uint64(spis[2]), 10))
		ours = withParam(ours, paramMediaPort, strconv.Itoa(int(s.MediaESPAddr().Port())))
	}
	set, err := NewSASet(offer, ours, v.CK, v.IK)
	if err != nil {
		return nil, err
	}
	side, err := set.PCSCFSide()
	if err != nil {
		return nil, err
	}
	s.setSeq++
	ls := &liveSet{id: s.setSeq, set: set, side: side, deadline: s.now().Add(s.cfg.TempSATimeout), spis: spis, source: src}
	if hasMedia {
		mp, cfgs, err := newMediaPair(set.Suite, v.CK, v.IK, spis[2], ueMedia)
		if err != nil {
			return nil, err
		}
		ls.media = &mediaSAs{in: spis[2], out: ueMedia, pair: mp}
		logMediaKeys(s.keylog, cfgs, src)
	}
	if err := reg.sas.install(ls); err != nil {
		return nil, err
	}
	if outer && (PlainESP(set.Mode()) || TransportMode(set.Mode())) {
		s.bindPlainLocked(reg, src, set.Mode())
	}
	ok = true
	if err := set.LogKeys(s.keylog, src); err != nil {
		s.log.Warn("key log", "err", err)
	}
	if s.tracing() {
		s.emitLocked(EvSATemporary, "", "temporary SAs installed", fmt.Sprintf("%s, SPIs in %#x %#x, out %#x %#x, expire in %v",
			set.Suite, ours.SPIs, ours.SPIc, offer.SPIc, offer.SPIs, s.cfg.TempSATimeout))
	}
	return ls, nil
}

// activateMediaLocked installs the media SA pair of a set that just became
// active, in the media relay's pump. It returns a line for the ladder ("" when
// nothing was installed, or nobody takes events).
func (s *Server) activateMediaLocked(reg *registration, ls *liveSet) string {
	host := reg.hosts()
	if ls.media == nil || len(host) == 0 {
		return ""
	}
	if reg.mediaPeer == nil {
		p, err := s.mediaPump.AddPeer(tun.PeerConfig{Name: reg.impi, FollowSource: true, Allowed: host, Routes: host})
		if err != nil {
			s.log.Warn("media peer", "impi", reg.impi, "err", err)
			return ""
		}
		reg.mediaPeer = p
	}
	if err := s.mediaPump.AddInbound(reg.mediaPeer, ls.media.pair.in); err != nil {
		s.log.Warn("media SA", "impi", reg.impi, "err", err)
		return ""
	}
	in := ls.media.in
	ls.onRemove = func() { s.mediaPump.RemoveInbound(in) }
	reg.mediaPeer.SetOutbound(ls.media.pair.out)
	if !s.tracing() {
		return ""
	}
	return fmt.Sprintf("separate tunnel for RTP at %v: SPI in %#x, out %#x (keys: TS 33.220 KDF of CK||IK, label %q)",
		s.MediaESPAddr(), ls.media.in, ls.media.out, akakeys.MediaLabel)
}

// countTemp keeps the global and per-source counts of temporary sets
// (saSets.onTemp). Called with s.mu held.
func (s *Server) countTemp(ls *liveSet, d int) {
	s.temps += d
	s.limits.addTemp(ls.source, d)
}
