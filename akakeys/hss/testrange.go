package hss

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/imsec/imsec/akakeys"
)

// Test ranges: numbered subscribers with keys a load generator can compute
// again from the same few parameters, so that it needs no copy of the
// subscriber database (imsec sub gen writes them as a provisioning CSV).
//
// Keys that are not given are derived from a seed with HMAC-SHA256, whose
// output no one can predict without the seed but anyone with it can
// compute:
//
//	K  = first 16 bytes of HMAC-SHA256(key = seed, message = "imsec sub gen K " + IMPI)
//	OP = first 16 bytes of HMAC-SHA256(key = seed, message = "imsec sub gen OP")
//
// for instance in a shell:
//
//	printf %s "imsec sub gen K ue000001@ims.example" | openssl dgst -sha256 -hmac SEED | awk '{print substr($NF, 1, 32)}'
//
// They are test keys: whoever knows the seed knows every K.

// DefaultTestSeed is TestRange.Seed when empty.
const DefaultTestSeed = "imsec-test"

// MaxTestRange bounds TestRange.Count.
const MaxTestRange = 10_000_000

// TestRange is Count subscribers numbered Start, Start+1, ...: subscriber i
// has IMPI Prefix + i in at least 6 digits + "@" + Domain (ue000001@ims.example),
// the one IMPU "sip:" + IMPI, AMF 8000 (or AMF), SQN 0, and keys K, OP or
// OPc as given, else derived from Seed (see above).
type TestRange struct {
	Prefix string // e.g. "ue"
	Domain string // e.g. "ims.example"
	Start  int    // first number, >= 0
	Count  int    // 1..MaxTestRange
	Seed   string // for the keys not given; "" means DefaultTestSeed

	K   *akakeys.K   // every subscriber's K; nil: derived per IMPI
	OP  *akakeys.OP  // every subscriber's OP; nil (and OPc nil): derived
	OPc *akakeys.OPc // every subscriber's OPc, instead of OP
	AMF *akakeys.AMF // nil: DefaultAMF
}

// Check reports what is wrong with the range (its first and last IMPI and
// IMPU must be valid identities), wrapping ErrInvalidSubscriber.
func (r TestRange) Check() error {
	switch {
	case r.Count < 1 || r.Count > MaxTestRange:
		return invalidf("test range of %d subscribers: want 1 to %d", r.Count, MaxTestRange)
	case r.Start < 0 || r.Start > 1<<40:
		return invalidf("test range starting at %d: want 0 to 2^40", r.Start)
	case r.OP != nil && r.OPc != nil:
		return invalidf("test range with both OP and OPc: give one")
	}
	for _, i := range []int{r.Start, r.Start + r.Count - 1} {
		s := r.Subscriber(i)
		if err := s.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// IMPI returns the IMPI of subscriber number i.
func (r TestRange) IMPI(i int) string {
	return fmt.Sprintf("%s%06d@%s", r.Prefix, i, r.Domain)
}

// Subscriber returns subscriber number i of the range (i need not be in
// it: a load generator may compute any).
func (r TestRange) Subscriber(i int) Subscriber {
	impi := r.IMPI(i)
	s := Subscriber{IMPI: impi, IMPUs: []string{"sip:" + impi}, AMF: DefaultAMF}
	if r.AMF != nil {
		s.AMF = *r.AMF
	}
	if r.K != nil {
		s.K = *r.K
	} else {
		s.K = DeriveTestK(r.seed(), impi)
	}
	switch {
	case r.OPc != nil:
		s.OPc = *r.OPc
	case r.OP != nil:
		s.SetOP(*r.OP)
	default:
		s.SetOP(DeriveTestOP(r.seed()))
	}
	return s
}

func (r TestRange) seed() string {
	if r.Seed == "" {
		return DefaultTestSeed
	}
	return r.Seed
}

// WriteCSV writes the range as a provisioning CSV (see ReadCSV), with an op
// column unless the range has an OPc.
func (r TestRange) WriteCSV(w io.Writer) error {
	if err := r.Check(); err != nil {
		return err
	}
	cw, err := newCSVWriter(w, r.OPc == nil)
	if err != nil {
		return err
	}
	for i := r.Start; i < r.Start+r.Count; i++ {
		if err := cw.write(r.Subscriber(i)); err != nil {
			return err
		}
	}
	return cw.flush()
}

// DeriveTestK is the K of a test subscriber without a K of its own: the
// first 16 bytes of HMAC-SHA256(seed, "imsec sub gen K " + impi).
func DeriveTestK(seed, impi string) akakeys.K {
	var k akakeys.K
	copy(k[:], testMAC(seed, "imsec sub gen K "+impi))
	return k
}

// DeriveTestOP is the OP of a test range without OP or OPc: the first 16
// bytes of HMAC-SHA256(seed, "imsec sub gen OP").
func DeriveTestOP(seed string) akakeys.OP {
	var op akakeys.OP
	copy(op[:], testMAC(seed, "imsec sub gen OP"))
	return op
}

func testMAC(seed, msg string) []byte {
	m := hmac.New(sha256.New, []byte(seed))
	m.Write([]byte(msg))
	return m.Sum(nil)
}
