package akakeys

// Fixed-size types for every AKA quantity (TS 33.102 §6.3, TS 35.206).
type (
	K    [16]byte // subscriber key
	OP   [16]byte // operator variant algorithm configuration field
	OPc  [16]byte // OP derived with K: E_K(OP) xor OP
	RAND [16]byte // random challenge
	SQN  [6]byte  // 48-bit sequence number, big endian
	AMF  [2]byte  // authentication management field
	MAC  [8]byte  // MAC-A (f1) or MAC-S (f1*)
	RES  [8]byte  // f2 output: RES on the USIM, XRES in the network
	CK   [16]byte // cipher key (f3)
	IK   [16]byte // integrity key (f4)
	AK   [6]byte  // anonymity key (f5, or f5* for resync)
	AUTN [16]byte // (SQN xor AK) || AMF || MAC-A
	AUTS [14]byte // (SQN_MS xor AK*) || MAC-S
)

// SQNFromUint64 makes a SQN from the low 48 bits of v.
func SQNFromUint64(v uint64) SQN {
	return SQN{byte(v >> 40), byte(v >> 32), byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// Uint64 returns the SQN as an integer.
func (s SQN) Uint64() uint64 {
	return uint64(s[0])<<40 | uint64(s[1])<<32 | uint64(s[2])<<24 | uint64(s[3])<<16 | uint64(s[4])<<8 | uint64(s[5])
}
