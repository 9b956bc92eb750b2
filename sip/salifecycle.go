package sip

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
)

// The SA lifecycle of TS 33.203 §7.1 and §7.4, shared by the P-CSCF (one
// saSets per registration) and the UE (one saSets towards its P-CSCF):
//
//	temporary --200 OK through it--> active --newer set active--> old --> deleted
//	    |                                                          ^
//	    +--- no protected REGISTER in time, failed answer ---------+
//
// A temporary set is installed when the 401 is sent (P-CSCF) or received
// (UE); the protected REGISTER and its 200 travel through it. When it
// becomes active, the set it replaces becomes old and is deleted as soon as
// the new set carries traffic, or at its deadline at the latest.

// saState is where an SA set is in its life.
type saState uint8

const (
	saTemporary saState = iota // installed with the 401, waiting for the protected REGISTER
	saActive                   // registered through it
	saOld                      // replaced by a newer active set, kept until that one carries traffic
)

func (s saState) String() string {
	switch s {
	case saTemporary:
		return "temporary"
	case saActive:
		return "active"
	case saOld:
		return "old"
	}
	return "unknown"
}

// liveSet is one SA set installed in a pump.
type liveSet struct {
	id    int
	set   *SASet
	side  Side
	state saState
	// deadline: temporary sets are deleted past it, old sets at the latest
	// past it; for an active set it is the SA lifetime.
	deadline time.Time
	// usedMark is the packet count of the set's inbound SAs when it became
	// active; when the count moves, the set carries traffic and the set it
	// replaced can go.
	usedMark uint64
	// nextLook and lookEvery pace, at the P-CSCF, the housekeeper's looks
	// at an old set's successor (housekeep.go, lookAtOld): zero until the
	// first look.
	nextLook  time.Time
	lookEvery time.Duration
	// source is, at the P-CSCF, the unprotected address the challenge that
	// made the set went to (its per-source cap).
	source netip.Addr
	// spis are the SPIs drawn from the owner's pool for this set (its
	// inbound pair, and a media SPI if any); removal gives them back.
	spis []esp.SPI
	// verify is, at the UE, the Security-Server header as received, echoed
	// in Security-Verify.
	verify string
	// media is the set's media SA pair (the imsec extension, see
	// mediatunnel.go); nil without it.
	media *mediaSAs
	// proven is set once the set's inbound SAs have received a packet:
	// its peer holds the keys. Until then a temporary set at the P-CSCF
	// takes no part in outbound selection (apply), so that sets installed
	// for strangers' challenges cannot divert the real UE's traffic.
	proven bool
	// onRemove, if set, runs when the set is deleted (the P-CSCF removes
	// the set's media SA there).
	onRemove func()
}

// mediaSAs is the media SA pair that belongs to an SA set.
type mediaSAs struct {
	in, out esp.SPI // ours, the peer's
	pair    mediaPair
}

// inSPIs are the SPIs the set receives on.
func (ls *liveSet) inSPIs() [2]esp.SPI {
	return [2]esp.SPI{ls.side.Inbound[0].SPI(), ls.side.Inbound[1].SPI()}
}

// saPump is what the lifecycle needs of a tunnel endpoint (*tun.Pump).
type saPump interface {
	AddInbound(p *tun.Peer, in *esp.Inbound) error
	RemoveInbound(spi esp.SPI) error
	InboundPackets(spi esp.SPI) (uint64, bool)
}

// saPeer is where outbound selectors go (*tun.Peer).
type saPeer interface {
	SetOutboundSAs(def *esp.Outbound, sel []tun.OutboundSA)
}

var (
	_ saPump = (*tun.Pump)(nil)
	_ saPeer = (*tun.Peer)(nil)
)

// saSets is the lifecycle of the SA sets towards one peer. It is not safe
// for concurrent use: the owner's lock guards it (Server.mu, UE.mu).
type saSets struct {
	pump  saPump
	tpeer *tun.Peer // passed to AddInbound
	peer  saPeer    // receives the outbound selectors (tpeer, or a fake in tests)
	pool  *spiPool  // SPIs are given back here; may be nil
	// onTemp, if set, is told each time a set becomes temporary (+1) or
	// stops being one (-1): the P-CSCF counts them (its global and
	// per-source caps), and the lifecycle keeps the count exact.
	onTemp func(ls *liveSet, delta int)
	sets   []*liveSet // oldest first
	// sendOnTemporary lets unproven temporary sets carry outbound traffic:
	// the UE's, which sends first through its new set.
	sendOnTemporary bool
}

// install puts a new set in the pump as temporary; its outbound SAs become
// the preferred ones once it is proven (or at once with sendOnTemporary).
func (l *saSets) install(ls *liveSet) error {
	for i, in := range ls.side.Inbound {
		if err := l.pump.AddInbound(l.tpeer, in); err != nil {
			for _, done := range ls.side.Inbound[:i] {
				l.pump.RemoveInbound(done.SPI())
			}
			return err
		}
	}
	ls.state = saTemporary
	l.sets = append(l.sets, ls)
	l.temp(ls, +1)
	l.apply()
	return nil
}

// activate makes ls the active set: the set it replaces becomes old and
// is kept until ls carries traffic or until oldUntil.
func (l *saSets) activate(ls *liveSet, lifetime, oldUntil time.Time) {
	for _, st := range l.sets {
		if st.state == saActive && st != ls {
			st.state = saOld
			st.deadline = oldUntil
		}
	}
	if ls.state == saTemporary {
		l.temp(ls, -1)
	}
	ls.state = saActive
	ls.proven = true
	ls.deadline = lifetime
	ls.usedMark = l.packets(ls)
	l.apply()
}

// remove deletes a set: its inbound SAs leave the pump, its outbound
// selectors the peer, its SPIs return to the pool. Removing a set twice is
// harmless.
func (l *saSets) remove(ls *liveSet) bool {
	kept := l.sets[:0]
	found := false
	for _, x := range l.sets {
		if x == ls {
			found = true
			continue
		}
		kept = append(kept, x)
	}
	clear(l.sets[len(kept):])
	l.sets = kept
	if !found {
		return false
	}
	for _, spi := range ls.inSPIs() {
		l.pump.RemoveInbound(spi)
	}
	if l.pool != nil {
		l.pool.release(ls.spis...)
	}
	if ls.state == saTemporary {
		l.temp(ls, -1)
	}
	if ls.onRemove != nil {
		ls.onRemove()
	}
	l.apply()
	return true
}

func (l *saSets) temp(ls *liveSet, d int) {
	if l.onTemp != nil {
		l.onTemp(ls, d)
	}
}

// clear deletes every set.
func (l *saSets) clear() {
	for len(l.sets) > 0 {
		l.remove(l.sets[0])
	}
}

// expire deletes temporary sets past their deadline and old sets past
// theirs or once their successor carries traffic; it returns what it
// deleted.
func (l *saSets) expire(now time.Time) (gone []*liveSet) {
	// Most registrations hold one active set and nothing to retire: they
	// cost the housekeeper no copy and no counter lookups.
	if len(l.sets) == 1 && l.sets[0].state == saActive {
		return nil
	}
	used := false
	for _, st := range l.sets {
		if st.state == saOld {
			used = l.successorUsed()
			break
		}
	}
	for _, st := range append([]*liveSet(nil), l.sets...) {
		switch {
		case st.state == saTemporary && now.After(st.deadline),
			st.state == saOld && (used || now.After(st.deadline)):
			l.remove(st)
			gone = append(gone, st)
		}
	}
	return gone
}

// next is the earliest deadline of a temporary or old set (zero if none).
func (l *saSets) next() time.Time {
	var t time.Time
	for _, st := range l.sets {
		if st.state != saActive && (t.IsZero() || st.deadline.Before(t)) {
			t = st.deadline
		}
	}
	return t
}

// provenCount is how many sets are active, old, or temporary and proven.
func (l *saSets) provenCount() int {
	n := 0
	for _, st := range l.sets {
		if st.state != saTemporary || st.proven {
			n++
		}
	}
	return n
}

// active is the active set, or nil.
func (l *saSets) active() *liveSet {
	for _, st := range l.sets {
		if st.state == saActive {
			return st
		}
	}
	return nil
}

// temporaries are the sets waiting for a protected REGISTER.
func (l *saSets) temporaries() []*liveSet {
	var out []*liveSet
	for _, st := range l.sets {
		if st.state == saTemporary {
			out = append(out, st)
		}
	}
	return out
}

// byUEPortC is the set whose UE port-c is port (requests arrive from it),
// among the sets that may carry the UE's packets: unproven temporary sets
// (perhaps installed for strangers with the same ports) are skipped.
func (l *saSets) byUEPortC(port uint16) *liveSet {
	var found *liveSet
	for _, st := range l.sets {
		if st.set.UE.PortC == port && (st.state != saTemporary || st.proven) {
			found = st
		}
	}
	return found
}

// successorUsed tells whether the active set has carried traffic since it
// became active.
func (l *saSets) successorUsed() bool {
	a := l.active()
	return a != nil && l.packets(a) > a.usedMark
}

func (l *saSets) packets(ls *liveSet) uint64 {
	var n uint64
	for _, spi := range ls.inSPIs() {
		v, _ := l.pump.InboundPackets(spi)
		n += v
	}
	return n
}

// prove marks the temporary sets whose inbound SAs have received a packet
// as proven, and re-applies the outbound selectors if one became so. The
// P-CSCF calls it before it answers through a temporary set (the DHCP
// reply, the answer to the protected REGISTER).
func (l *saSets) prove() {
	changed := false
	for _, st := range l.sets {
		if !st.proven && l.packets(st) > 0 {
			st.proven = true
			changed = true
		}
	}
	if changed {
		l.apply()
	}
}

// apply installs the outbound selectors of every set that may send,
// newest first, with the newest such set's default SA for traffic no
// selector takes (SA3 at the P-CSCF, SA1 at the UE).
func (l *saSets) apply() {
	if l.peer == nil {
		return
	}
	var sel []tun.OutboundSA
	var def *esp.Outbound
	for i := len(l.sets) - 1; i >= 0; i-- {
		st := l.sets[i]
		if st.state == saTemporary && !st.proven && !l.sendOnTemporary {
			continue
		}
		sel = append(sel, st.side.Outbound...)
		if def == nil {
			def = st.side.Default
		}
	}
	l.peer.SetOutboundSAs(def, sel)
}

// spiPool hands out SPIs above the RFC 4303 §2.1 reserved range, each at
// most once until it is released. It is not safe for concurrent use: the
// owner's lock guards it.
type spiPool struct {
	used map[esp.SPI]struct{}
	rand func([]byte) // crypto/rand.Read; tests inject collisions
	buf  [4]byte      // draw's random bytes (a local would escape to rand)
}

func newSPIPool() *spiPool {
	return &spiPool{used: map[esp.SPI]struct{}{}, rand: func(b []byte) { rand.Read(b) }}
}

// errSPIPoolFull is returned when no SPI could be drawn (practically only
// with a broken random source).
var errSPIPoolFull = errors.New("sip: no free SPI")

// draw reserves n distinct unused SPIs.
func (p *spiPool) draw(n int) ([]esp.SPI, error) {
	out := make([]esp.SPI, 0, n)
	for tries := 0; len(out) < n; tries++ {
		if tries > 64*n {
			p.release(out...)
			return nil, errSPIPoolFull
		}
		p.rand(p.buf[:])
		v := esp.SPI(binary.BigEndian.Uint32(p.buf[:]))
		if v <= esp.SPIReservedMax {
			continue
		}
		if _, taken := p.used[v]; taken {
			continue
		}
		p.used[v] = struct{}{}
		out = append(out, v)
	}
	return out, nil
}

// reserve marks SPIs chosen elsewhere as in use; false if one already is.
func (p *spiPool) reserve(spis ...esp.SPI) bool {
	for _, v := range spis {
		if _, taken := p.used[v]; taken {
			return false
		}
	}
	for _, v := range spis {
		p.used[v] = struct{}{}
	}
	return true
}

// release gives SPIs back.
func (p *spiPool) release(spis ...esp.SPI) {
	for _, v := range spis {
		delete(p.used, v)
	}
}

// inUse is how many SPIs are drawn and not released.
func (p *spiPool) inUse() int { return len(p.used) }
