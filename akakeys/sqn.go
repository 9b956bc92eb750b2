package akakeys

// SQNScheme is the network side of the sequence number management of
// TS 33.102 Annex C: SQN = SEQ || IND, with IND the low IndBits bits.
//
// Each new vector takes SEQ+1 and the next IND value (cycling modulo
// 2^IndBits), as Annex C.1.1 and C.1.2 allow: consecutive vectors then land in
// different slots of the USIM's array, so a few vectors used out of order are
// all still accepted.
type SQNScheme struct {
	IndBits uint // IND length; 0 means the default, 5 (C.3.2 example)
}

// DefaultIndBits is the IND length used when SQNScheme.IndBits is 0.
const DefaultIndBits = 5

func (s SQNScheme) ind() uint {
	if s.IndBits == 0 {
		return DefaultIndBits
	}
	return s.IndBits
}

// Split returns SEQ and IND of sqn.
func (s SQNScheme) Split(sqn SQN) (seq, ind uint64) {
	v := sqn.Uint64()
	b := s.ind()
	return v >> b, v & (1<<b - 1)
}

// Join builds SQN from SEQ and IND.
func (s SQNScheme) Join(seq, ind uint64) SQN {
	b := s.ind()
	return SQNFromUint64(seq<<b | ind&(1<<b-1))
}

// Next returns the SQN for the vector after prev: SEQ+1 and IND+1 modulo 2^IndBits.
func (s SQNScheme) Next(prev SQN) SQN {
	seq, ind := s.Split(prev)
	return s.Join(seq+1, ind+1)
}

// AfterResync returns the next SQN after a re-synchronisation reporting
// SQN_MS (Annex C.3.4): SEQ_HE is set to SEQ_MS and the next vector is taken
// from there, so it is fresh for the USIM.
func (s SQNScheme) AfterResync(sqnMS SQN) SQN {
	return s.Next(sqnMS)
}
