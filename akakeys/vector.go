package akakeys

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
)

// Vector is one authentication vector (quintet) of TS 33.102 §6.3.2, as the
// HSS hands it to the registrar: RAND, XRES, CK, IK, AUTN. SQN and AMF are
// kept alongside for logging and tests; they are also inside AUTN.
type Vector struct {
	RAND RAND
	XRES RES
	CK   CK
	IK   IK
	AUTN AUTN
	SQN  SQN
	AMF  AMF
}

// resyncAMF is the dummy AMF used for MAC-S in AUTS (TS 33.102 §6.3.3).
var resyncAMF = AMF{0, 0}

// Vector builds the vector for a given RAND, SQN and AMF:
// AUTN = (SQN xor AK) || AMF || MAC-A.
func (m *Milenage) Vector(r RAND, sqn SQN, amf AMF) Vector {
	macA, _ := m.F1(r, sqn, amf)
	res, ck, ik, ak := m.F2345(r)
	v := Vector{RAND: r, XRES: res, CK: ck, IK: ik, SQN: sqn, AMF: amf}
	for i := range 6 {
		v.AUTN[i] = sqn[i] ^ ak[i]
	}
	copy(v.AUTN[6:8], amf[:])
	copy(v.AUTN[8:16], macA[:])
	return v
}

// NewVector builds a vector with a fresh RAND from crypto/rand.
func (m *Milenage) NewVector(sqn SQN, amf AMF) (Vector, error) {
	var r RAND
	if _, err := rand.Read(r[:]); err != nil {
		return Vector{}, err
	}
	return m.Vector(r, sqn, amf), nil
}

// AUTS builds the re-synchronisation token a USIM sends when AUTN's SQN is
// not fresh: AUTS = (SQN_MS xor AK*) || MAC-S, with MAC-S = f1*(SQN_MS, RAND,
// AMF=0000) (TS 33.102 §6.3.3).
func (m *Milenage) AUTS(r RAND, sqnMS SQN) AUTS {
	_, macS := m.F1(r, sqnMS, resyncAMF)
	akStar := m.F5Star(r)
	var a AUTS
	for i := range 6 {
		a[i] = sqnMS[i] ^ akStar[i]
	}
	copy(a[6:], macS[:])
	return a
}

// ErrAUTSMAC is returned when the MAC-S inside an AUTS does not verify.
var ErrAUTSMAC = errors.New("akakeys: AUTS MAC-S verification failed")

// VerifyAUTS is the network side of re-synchronisation (TS 33.102 §6.3.5):
// it recovers SQN_MS from AUTS with AK* = f5*(RAND), checks MAC-S in constant
// time, and returns SQN_MS. RAND is the one of the vector the USIM refused.
func (m *Milenage) VerifyAUTS(r RAND, auts AUTS) (SQN, error) {
	akStar := m.F5Star(r)
	var sqnMS SQN
	for i := range 6 {
		sqnMS[i] = auts[i] ^ akStar[i]
	}
	_, macS := m.F1(r, sqnMS, resyncAMF)
	if subtle.ConstantTimeCompare(macS[:], auts[6:]) != 1 {
		return SQN{}, ErrAUTSMAC
	}
	return sqnMS, nil
}
