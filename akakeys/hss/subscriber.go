package hss

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/imsec/imsec/akakeys"
)

// Subscriber is one IMS subscription: a private identity (IMPI) with its
// public identities (IMPUs), the long-term secrets of its USIM/ISIM and the
// SQN state of the HSS for it.
//
// Formatting a Subscriber with fmt (any verb), logging it with slog or
// marshalling it to JSON shows key fingerprints only, never K, OP or OPc.
type Subscriber struct {
	// IMPI is the private user identity, e.g. "alice@ims.example" (TS 23.003
	// §13.3). It is matched exactly, byte for byte.
	IMPI string
	// IMPUs are the public user identities (sip:, sips: or tel: URIs) that
	// register with this IMPI, first the default one. An IMPU belongs to one
	// IMPI only. Matched exactly.
	IMPUs []string

	K   akakeys.K
	OPc akakeys.OPc // always set; derived from OP when OP is given
	// OP is non-nil when the subscriber was provisioned with OP rather than
	// OPc; OPc must then equal akakeys.ComputeOPc(K, *OP). It is kept only so
	// that an operator can see which of the two was given.
	OP  *akakeys.OP
	AMF akakeys.AMF

	// SQN is the highest SQN the HSS may have issued in a vector: the top of
	// the range it reserved last (see HSS.Vector), at most Config.Reserve-1
	// steps above the last one actually issued. The next range starts above
	// it. The zero SQN means no vector issued yet.
	SQN akakeys.SQN

	// Resyncs counts verified re-synchronisations; LastResync is the time of
	// the latest (zero if none).
	Resyncs    uint64
	LastResync time.Time
}

// SetOP records that the subscriber was provisioned with OP and derives OPc
// from it and K. Set K first.
func (s *Subscriber) SetOP(op akakeys.OP) {
	o := op
	s.OP = &o
	s.OPc = akakeys.ComputeOPc(s.K, op)
}

// Limits on identities. They are generous; they exist so that garbage (a
// pasted file, a binary blob) is refused with a clear message.
const (
	MaxIMPILen  = 256
	MaxIMPULen  = 1024
	MaxIMPUs    = 64
	impuSchemes = "sip:, sips: or tel:"
)

// Validate reports the first problem with s as an error wrapping
// ErrInvalidSubscriber. The message names the field, never a key.
func (s *Subscriber) Validate() error {
	if err := validateIMPI(s.IMPI); err != nil {
		return err
	}
	if len(s.IMPUs) == 0 {
		return invalidf("subscriber %q has no IMPU", s.IMPI)
	}
	if len(s.IMPUs) > MaxIMPUs {
		return invalidf("subscriber %q has %d IMPUs, at most %d allowed", s.IMPI, len(s.IMPUs), MaxIMPUs)
	}
	seen := make(map[string]bool, len(s.IMPUs))
	for _, u := range s.IMPUs {
		if err := validateIMPU(u); err != nil {
			return err
		}
		if seen[u] {
			return invalidf("IMPU %q listed twice", u)
		}
		seen[u] = true
	}
	if s.OP != nil && akakeys.ComputeOPc(s.K, *s.OP) != s.OPc {
		return invalidf("subscriber %q: OPc does not match OP and K", s.IMPI)
	}
	return nil
}

func validateIMPI(impi string) error {
	if impi == "" {
		return invalidf("IMPI is empty")
	}
	if len(impi) > MaxIMPILen {
		return invalidf("IMPI is %d bytes long, at most %d allowed", len(impi), MaxIMPILen)
	}
	if err := printableID(impi); err != nil {
		return invalidf("IMPI %q %v", impi, err)
	}
	return nil
}

func validateIMPU(impu string) error {
	if impu == "" {
		return invalidf("IMPU is empty")
	}
	if len(impu) > MaxIMPULen {
		return invalidf("IMPU is %d bytes long, at most %d allowed", len(impu), MaxIMPULen)
	}
	if err := printableID(impu); err != nil {
		return invalidf("IMPU %q %v", impu, err)
	}
	l := strings.ToLower(impu)
	var rest string
	switch {
	case strings.HasPrefix(l, "sip:"):
		rest = impu[4:]
	case strings.HasPrefix(l, "sips:"):
		rest = impu[5:]
	case strings.HasPrefix(l, "tel:"):
		rest = impu[4:]
	default:
		return invalidf("IMPU %q is not a %s URI", impu, impuSchemes)
	}
	if rest == "" {
		return invalidf("IMPU %q has nothing after the scheme", impu)
	}
	return nil
}

// printableID refuses what has no place in an identity: invalid UTF-8,
// spaces and control characters.
func printableID(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("contains a space or control character")
		}
	}
	return nil
}

func invalidf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidSubscriber}, a...)...)
}

// Fingerprint names a secret without revealing it: "sha256:" and the first
// 4 bytes of SHA-256 over the raw key bytes, in hex. An operator can check a
// key they hold against it, e.g.
//
//	printf %s 465B5CE8B199B49FAA5F0A2EE238A6BC | xxd -r -p | sha256sum | cut -c1-8
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return "sha256:" + hex.EncodeToString(sum[:4])
}

// KeyKind is "OP" when the subscriber was provisioned with OP, else "OPc".
func (s Subscriber) KeyKind() string {
	if s.OP != nil {
		return "OP"
	}
	return "OPc"
}

// String shows the subscriber with key fingerprints in place of the keys.
func (s Subscriber) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hss.Subscriber{IMPI:%q IMPUs:%q K:%s", s.IMPI, s.IMPUs, Fingerprint(s.K[:]))
	if s.OP != nil {
		fmt.Fprintf(&b, " OP:%s", Fingerprint(s.OP[:]))
	}
	fmt.Fprintf(&b, " OPc:%s AMF:%x SQN:%x Resyncs:%d", Fingerprint(s.OPc[:]), s.AMF[:], s.SQN[:], s.Resyncs)
	if !s.LastResync.IsZero() {
		fmt.Fprintf(&b, " LastResync:%s", s.LastResync.UTC().Format(time.RFC3339))
	}
	b.WriteString("}")
	return b.String()
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %x, ...) print String, so
// that no verb can reach the key bytes.
func (s Subscriber) Format(f fmt.State, _ rune) { io.WriteString(f, s.String()) }

// LogValue implements slog.LogValuer with fingerprints in place of keys.
func (s Subscriber) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("impi", s.IMPI),
		slog.Any("impus", s.IMPUs),
		slog.String("k", Fingerprint(s.K[:])),
	}
	if s.OP != nil {
		attrs = append(attrs, slog.String("op", Fingerprint(s.OP[:])))
	}
	attrs = append(attrs,
		slog.String("opc", Fingerprint(s.OPc[:])),
		slog.String("amf", hex.EncodeToString(s.AMF[:])),
		slog.String("sqn", hex.EncodeToString(s.SQN[:])),
		slog.Uint64("resyncs", s.Resyncs),
	)
	if !s.LastResync.IsZero() {
		attrs = append(attrs, slog.Time("last_resync", s.LastResync))
	}
	return slog.GroupValue(attrs...)
}

// SubscriberView is the printable, secret-free form of a Subscriber: what
// `imsec sub list --json` prints and what Subscriber marshals to in JSON.
type SubscriberView struct {
	IMPI           string     `json:"impi"`
	IMPUs          []string   `json:"impus"`
	KeyKind        string     `json:"key_kind"` // "OP" or "OPc": which one was provisioned
	KFingerprint   string     `json:"k_fingerprint"`
	OPFingerprint  string     `json:"op_fingerprint,omitempty"`
	OPcFingerprint string     `json:"opc_fingerprint"`
	AMF            string     `json:"amf"`
	SQN            string     `json:"sqn"`
	SEQ            uint64     `json:"seq"`
	IND            uint64     `json:"ind"`
	Resyncs        uint64     `json:"resyncs"`
	LastResync     *time.Time `json:"last_resync,omitempty"`
}

// View returns the secret-free form of s, with SEQ and IND split by scheme.
func (s Subscriber) View(scheme akakeys.SQNScheme) SubscriberView {
	seq, ind := scheme.Split(s.SQN)
	v := SubscriberView{
		IMPI:           s.IMPI,
		IMPUs:          append([]string{}, s.IMPUs...),
		KeyKind:        s.KeyKind(),
		KFingerprint:   Fingerprint(s.K[:]),
		OPcFingerprint: Fingerprint(s.OPc[:]),
		AMF:            hex.EncodeToString(s.AMF[:]),
		SQN:            hex.EncodeToString(s.SQN[:]),
		SEQ:            seq,
		IND:            ind,
		Resyncs:        s.Resyncs,
	}
	if s.OP != nil {
		v.OPFingerprint = Fingerprint(s.OP[:])
	}
	if !s.LastResync.IsZero() {
		t := s.LastResync.UTC()
		v.LastResync = &t
	}
	return v
}

// MarshalJSON marshals the secret-free view (default SQN scheme). There is
// deliberately no JSON form that carries K, OP or OPc.
func (s Subscriber) MarshalJSON() ([]byte, error) {
	return json.Marshal(s.View(akakeys.SQNScheme{}))
}

// clone returns a deep copy (IMPUs and OP are not shared).
func (s Subscriber) clone() Subscriber {
	c := s
	if s.IMPUs != nil {
		c.IMPUs = append([]string(nil), s.IMPUs...)
	}
	if s.OP != nil {
		op := *s.OP
		c.OP = &op
	}
	return c
}
