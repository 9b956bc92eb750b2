package akakeys

import (
	"crypto/aes"
	"crypto/cipher"
)

// Milenage is the 3GPP authentication and key generation algorithm set
// f1, f1*, f2, f3, f4, f5 and f5* of TS 35.206, keyed with a subscriber's K
// and OPc. It keeps one AES block cipher; it is safe for concurrent use.
type Milenage struct {
	block cipher.Block
	opc   OPc
}

// ComputeOPc derives OPc = E_K(OP) xor OP (TS 35.206 §4.1).
func ComputeOPc(k K, op OP) OPc {
	b, _ := aes.NewCipher(k[:]) // 16-byte key: cannot fail
	var opc OPc
	b.Encrypt(opc[:], op[:])
	for i := range opc {
		opc[i] ^= op[i]
	}
	return opc
}

// NewMilenage keys Milenage with K and OPc.
func NewMilenage(k K, opc OPc) *Milenage {
	b, _ := aes.NewCipher(k[:]) // 16-byte key: cannot fail
	return &Milenage{block: b, opc: opc}
}

// NewMilenageOP keys Milenage with K and OP, deriving OPc.
func NewMilenageOP(k K, op OP) *Milenage { return NewMilenage(k, ComputeOPc(k, op)) }

// OPc returns the OPc this instance was keyed with.
func (m *Milenage) OPc() OPc { return m.opc }

// temp computes TEMP = E_K(RAND xor OPc).
func (m *Milenage) temp(rand RAND) [16]byte {
	var t [16]byte
	for i := range t {
		t[i] = rand[i] ^ m.opc[i]
	}
	m.block.Encrypt(t[:], t[:])
	return t
}

// F1 computes MAC-A (f1) and MAC-S (f1*) in one pass: OUT1 of TS 35.206 §4.1
// with r1 = 64 and c1 = 0.
func (m *Milenage) F1(rand RAND, sqn SQN, amf AMF) (macA, macS MAC) {
	temp := m.temp(rand)
	var in1 [16]byte
	copy(in1[0:6], sqn[:])
	copy(in1[6:8], amf[:])
	copy(in1[8:14], sqn[:])
	copy(in1[14:16], amf[:])
	var x [16]byte
	// rot(IN1 xor OPc, r1=64 bits): byte i of the result is byte (i+8)%16.
	for i := range x {
		j := (i + 8) % 16
		x[i] = temp[i] ^ in1[j] ^ m.opc[j]
	}
	m.block.Encrypt(x[:], x[:])
	for i := range x {
		x[i] ^= m.opc[i]
	}
	copy(macA[:], x[0:8])
	copy(macS[:], x[8:16])
	return macA, macS
}

// out computes OUTn = E_K(rot(TEMP xor OPc, r) xor c) xor OPc for n = 2..5,
// where r is given in bytes and c is the constant whose last octet is cLast.
func (m *Milenage) out(temp *[16]byte, rBytes int, cLast byte) [16]byte {
	var x [16]byte
	for i := range x {
		j := (i + rBytes) % 16
		x[i] = temp[j] ^ m.opc[j]
	}
	x[15] ^= cLast
	m.block.Encrypt(x[:], x[:])
	for i := range x {
		x[i] ^= m.opc[i]
	}
	return x
}

// F2345 computes RES (f2), CK (f3), IK (f4) and AK (f5) for RAND
// (TS 35.206 §4.1: r2=0,c2=1; r3=32,c3=2; r4=64,c4=4).
func (m *Milenage) F2345(rand RAND) (res RES, ck CK, ik IK, ak AK) {
	temp := m.temp(rand)
	o2 := m.out(&temp, 0, 1)
	copy(ak[:], o2[0:6])
	copy(res[:], o2[8:16])
	o3 := m.out(&temp, 4, 2)
	copy(ck[:], o3[:])
	o4 := m.out(&temp, 8, 4)
	copy(ik[:], o4[:])
	return res, ck, ik, ak
}

// F5Star computes AK* (f5*, r5 = 96, c5 = 8), the anonymity key for
// re-synchronisation.
func (m *Milenage) F5Star(rand RAND) AK {
	temp := m.temp(rand)
	o5 := m.out(&temp, 12, 8)
	var ak AK
	copy(ak[:], o5[0:6])
	return ak
}
