package akakeys

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
)

// DefaultDelta is Δ of TS 33.102 Annex C.2.1 when USIMConfig.Delta is 0:
// a SEQ more than 2^28 ahead of the highest accepted one is refused.
const DefaultDelta = 1 << 28

// MaxIndBits bounds USIMConfig.IndBits: the USIM keeps 2^IndBits slots.
const MaxIndBits = 10

// USIMConfig sets the freshness rules of a USIM. The zero value is the
// default of TS 33.102 Annex C: IND of 5 bits, Δ = 2^28, no ageing limit.
type USIMConfig struct {
	// IndBits is the length of IND, the low bits of SQN that select a slot
	// of the SEQ_MS array (Annex C.1.2, C.2.1). 0 means DefaultIndBits. It
	// must match the network's SQNScheme.IndBits.
	IndBits uint
	// Delta is Δ of Annex C.2.1: SQN is refused when SEQ - SEQ_MS > Δ,
	// SEQ_MS being the highest SEQ accepted in any slot. It protects against
	// a wrap-around of the counter. 0 means DefaultDelta.
	Delta uint64
	// AgeLimit is L of Annex C.2.2, the optional ageing check: when
	// non-zero, SQN is refused when SEQ_MS - SEQ > L, so a vector issued
	// long ago and used out of order is refused even if its slot is free.
	// 0 turns the check off (the default; Annex C.2.2 makes it optional).
	AgeLimit uint64
}

// USIM is the user side of UMTS AKA (TS 33.102 §6.3.3): it verifies AUTN,
// checks that SQN is fresh with the array mechanism of Annex C.2, answers RES,
// CK and IK, and builds AUTS on a synchronisation failure.
//
// It keeps SEQ_MS(i) for each IND slot i. A USIM is safe for concurrent use;
// the check and the update of a slot are one atomic step, so the same AUTN is
// accepted at most once.
type USIM struct {
	m        *Milenage
	indBits  uint
	delta    uint64
	ageLimit uint64

	mu  sync.Mutex
	seq []uint64 // SEQ_MS(i), 2^indBits entries
}

// NewUSIM makes a USIM keyed with K and OPc, with every slot at SEQ_MS = 0
// (a fresh card: any SQN with 0 < SEQ <= Δ is accepted).
func NewUSIM(k K, opc OPc, cfg USIMConfig) (*USIM, error) {
	ind := cfg.IndBits
	if ind == 0 {
		ind = DefaultIndBits
	}
	if ind > MaxIndBits {
		return nil, fmt.Errorf("akakeys: USIM IndBits %d out of range 1..%d", cfg.IndBits, MaxIndBits)
	}
	delta := cfg.Delta
	if delta == 0 {
		delta = DefaultDelta
	}
	return &USIM{
		m:        NewMilenage(k, opc),
		indBits:  ind,
		delta:    delta,
		ageLimit: cfg.AgeLimit,
		seq:      make([]uint64, 1<<ind),
	}, nil
}

// ErrMACFailure is returned when MAC-A inside AUTN does not verify: the
// challenge did not come from the subscriber's home network (TS 33.102
// §6.3.3, "MAC failure"). The USIM state is not changed.
var ErrMACFailure = errors.New("akakeys: AUTN MAC-A verification failed")

// ErrSyncFailure is what a *SyncFailureError matches with errors.Is.
var ErrSyncFailure = errors.New("akakeys: synchronisation failure (SQN not fresh)")

// SyncReason says which Annex C.2 check refused SQN.
type SyncReason uint8

const (
	// SyncNotFresh: SEQ <= SEQ_MS(IND), the slot already holds this or a
	// later SEQ (a replay, or a vector used after a newer one in its slot).
	SyncNotFresh SyncReason = iota + 1
	// SyncTooFarAhead: SEQ - SEQ_MS > Δ (Annex C.2.1).
	SyncTooFarAhead
	// SyncTooOld: SEQ_MS - SEQ > L, the ageing limit (Annex C.2.2).
	SyncTooOld
)

func (r SyncReason) String() string {
	switch r {
	case SyncNotFresh:
		return "SEQ not above SEQ_MS of its IND slot"
	case SyncTooFarAhead:
		return "SEQ more than delta ahead of the highest accepted SEQ"
	case SyncTooOld:
		return "SEQ older than the ageing limit L"
	}
	return "unknown"
}

// SyncFailureError is returned by Authenticate when AUTN is authentic but
// its SQN is not fresh. AUTS carries SQN_MS, the highest SQN the USIM has
// accepted, for the network to re-synchronise (TS 33.102 §6.3.3, §6.3.5).
// errors.Is(err, ErrSyncFailure) holds for it.
type SyncFailureError struct {
	AUTS   AUTS
	SQNMS  SQN // the SQN_MS inside AUTS, in clear
	Reason SyncReason
}

func (e *SyncFailureError) Error() string {
	return "akakeys: synchronisation failure: " + e.Reason.String()
}

// Is makes errors.Is(err, ErrSyncFailure) true.
func (e *SyncFailureError) Is(target error) bool { return target == ErrSyncFailure }

// Authenticate runs the USIM side of AKA on a challenge (TS 33.102 §6.3.3):
//
//  1. SQN = (SQN xor AK) xor f5(RAND), AK being f5 of RAND;
//  2. XMAC = f1(SQN, RAND, AMF) with the AMF taken from AUTN, compared with
//     MAC-A in constant time: ErrMACFailure if they differ;
//  3. SQN must be fresh (Annex C.2): SEQ > SEQ_MS(IND), SEQ - SEQ_MS <= Δ
//     and, if set, SEQ_MS - SEQ <= L. If not, a *SyncFailureError with AUTS;
//  4. SEQ_MS(IND) = SEQ, and RES, CK, IK are returned.
//
// The state moves only after MAC-A verified and SQN was found fresh, so a
// forged or replayed AUTN leaves it unchanged.
func (u *USIM) Authenticate(r RAND, autn AUTN) (res RES, ck CK, ik IK, err error) {
	res, ck, ik, ak := u.m.F2345(r)
	var sqn SQN
	for i := range sqn {
		sqn[i] = autn[i] ^ ak[i]
	}
	amf := AMF{autn[6], autn[7]}
	xmac, _ := u.m.F1(r, sqn, amf)
	if subtle.ConstantTimeCompare(xmac[:], autn[8:16]) != 1 {
		return RES{}, CK{}, IK{}, ErrMACFailure
	}

	v := sqn.Uint64()
	seq, ind := v>>u.indBits, v&(1<<u.indBits-1)

	u.mu.Lock()
	highest, highestInd := u.highestLocked()
	var reason SyncReason
	switch {
	case seq <= u.seq[ind]:
		reason = SyncNotFresh
	case seq > highest && seq-highest > u.delta:
		reason = SyncTooFarAhead
	case u.ageLimit != 0 && highest > seq && highest-seq > u.ageLimit:
		reason = SyncTooOld
	default:
		u.seq[ind] = seq
		u.mu.Unlock()
		return res, ck, ik, nil
	}
	u.mu.Unlock()

	sqnMS := SQNFromUint64(highest<<u.indBits | highestInd)
	return RES{}, CK{}, IK{}, &SyncFailureError{AUTS: u.m.AUTS(r, sqnMS), SQNMS: sqnMS, Reason: reason}
}

// highestLocked returns the highest SEQ_MS over all slots and the first slot
// holding it.
func (u *USIM) highestLocked() (seq, ind uint64) {
	for i, s := range u.seq {
		if s > seq {
			seq, ind = s, uint64(i)
		}
	}
	return seq, ind
}

// SQNMS returns SQN_MS, the highest SQN accepted so far (SEQ_MS || IND of
// the slot holding it), the value an AUTS would carry now.
func (u *USIM) SQNMS() SQN {
	u.mu.Lock()
	defer u.mu.Unlock()
	seq, ind := u.highestLocked()
	return SQNFromUint64(seq<<u.indBits | ind)
}

// USIMState is the part of a USIM that must survive a restart: IndBits and
// SEQ_MS(i) for every slot. A UE persists it (MarshalBinary) after each
// successful authentication and restores it with SetState, so a replayed
// challenge stays refused across restarts.
type USIMState struct {
	IndBits uint
	SEQ     []uint64 // SEQ_MS(i); len(SEQ) == 1 << IndBits
}

// State returns a copy of the USIM's state.
func (u *USIM) State() USIMState {
	u.mu.Lock()
	defer u.mu.Unlock()
	return USIMState{IndBits: u.indBits, SEQ: append([]uint64(nil), u.seq...)}
}

// SetState replaces the USIM's SEQ_MS array with s. IndBits must equal the
// USIM's and every SEQ must fit in 48-IndBits bits.
func (u *USIM) SetState(s USIMState) error {
	if err := s.check(); err != nil {
		return err
	}
	if s.IndBits != u.indBits {
		return fmt.Errorf("akakeys: USIM state has IndBits %d, this USIM uses %d", s.IndBits, u.indBits)
	}
	u.mu.Lock()
	copy(u.seq, s.SEQ)
	u.mu.Unlock()
	return nil
}

// MarshalBinary encodes the USIM's state (see USIMState.MarshalBinary).
func (u *USIM) MarshalBinary() ([]byte, error) { return u.State().MarshalBinary() }

// UnmarshalBinary restores a state encoded by MarshalBinary; the keys are
// untouched.
func (u *USIM) UnmarshalBinary(b []byte) error {
	var s USIMState
	if err := s.UnmarshalBinary(b); err != nil {
		return err
	}
	return u.SetState(s)
}

const usimStateVersion = 1

func (s USIMState) check() error {
	if s.IndBits == 0 || s.IndBits > MaxIndBits {
		return fmt.Errorf("akakeys: USIM state IndBits %d out of range 1..%d", s.IndBits, MaxIndBits)
	}
	if len(s.SEQ) != 1<<s.IndBits {
		return fmt.Errorf("akakeys: USIM state has %d slots, want %d for IndBits %d", len(s.SEQ), 1<<s.IndBits, s.IndBits)
	}
	limit := uint64(1) << (48 - s.IndBits)
	for i, v := range s.SEQ {
		if v >= limit {
			return fmt.Errorf("akakeys: USIM state slot %d: SEQ %#x does not fit in %d bits", i, v, 48-s.IndBits)
		}
	}
	return nil
}

// MarshalBinary encodes the state as: version (1 octet, = 1), IndBits
// (1 octet), then SEQ_MS(i) for each slot as a 6-octet big-endian integer.
func (s USIMState) MarshalBinary() ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 2, 2+6*len(s.SEQ))
	b[0], b[1] = usimStateVersion, byte(s.IndBits)
	for _, v := range s.SEQ {
		q := SQNFromUint64(v)
		b = append(b, q[:]...)
	}
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote; a wrong version, length
// or value is an error and leaves s unchanged.
func (s *USIMState) UnmarshalBinary(b []byte) error {
	if len(b) < 2 {
		return fmt.Errorf("akakeys: USIM state: %d octets, want at least 2", len(b))
	}
	if b[0] != usimStateVersion {
		return fmt.Errorf("akakeys: USIM state: unknown version %d", b[0])
	}
	ind := uint(b[1])
	if ind == 0 || ind > MaxIndBits {
		return fmt.Errorf("akakeys: USIM state: IndBits %d out of range 1..%d", ind, MaxIndBits)
	}
	n := 1 << ind
	if len(b) != 2+6*n {
		return fmt.Errorf("akakeys: USIM state: %d octets, want %d for IndBits %d", len(b), 2+6*n, ind)
	}
	st := USIMState{IndBits: ind, SEQ: make([]uint64, n)}
	for i := range st.SEQ {
		st.SEQ[i] = SQN(b[2+6*i : 8+6*i]).Uint64()
	}
	if err := st.check(); err != nil {
		return err
	}
	*s = st
	return nil
}
