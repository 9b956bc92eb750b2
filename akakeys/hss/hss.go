package hss

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/imsec/imsec/akakeys"
)

// MaxIndBits bounds the IND length an HSS accepts. TS 33.102 Annex C.3.2
// suggests 5; anything much larger wastes SEQ space.
const MaxIndBits = 16

// Config configures an HSS. The zero value is usable.
type Config struct {
	// SQN is the sequence number scheme of TS 33.102 Annex C; the zero
	// value uses an IND of akakeys.DefaultIndBits (5) bits. It must match
	// the USIMs' IND length.
	SQN akakeys.SQNScheme
	// Now is the clock for resync times; nil means time.Now.
	Now func() time.Time
	// Logger receives one line per re-synchronisation (never keys); nil
	// means no logging.
	Logger *slog.Logger
}

// HSS issues authentication vectors and handles re-synchronisation for the
// subscribers of a Store. It is safe for concurrent use; all state is in the
// store, so several HSS values (or processes) may share one store.
type HSS struct {
	store  Store
	scheme akakeys.SQNScheme
	now    func() time.Time
	log    *slog.Logger
}

// New returns an HSS over store.
func New(store Store, cfg Config) (*HSS, error) {
	if store == nil {
		return nil, fmt.Errorf("hss: nil store")
	}
	if cfg.SQN.IndBits > MaxIndBits {
		return nil, fmt.Errorf("hss: IND length %d bits, at most %d allowed", cfg.SQN.IndBits, MaxIndBits)
	}
	h := &HSS{store: store, scheme: cfg.SQN, now: cfg.Now, log: cfg.Logger}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h, nil
}

// Scheme returns the SQN scheme in use.
func (h *HSS) Scheme() akakeys.SQNScheme { return h.scheme }

// Vector issues a fresh authentication vector for impi: it reserves the next
// SQN (Annex C: SEQ+1, IND+1), which is durable in the store before the
// vector is computed, so no two vectors ever carry the same SQN.
//
// Errors: ErrUnknownSubscriber, ErrSQNExhausted, ErrCorrupt, or a store error.
func (h *HSS) Vector(ctx context.Context, impi string) (akakeys.Vector, error) {
	sub, err := h.store.UpdateSQN(ctx, impi, func(s Subscriber) (SQNUpdate, error) {
		next, err := h.next(s.SQN, h.scheme.Next)
		return SQNUpdate{SQN: next}, err
	})
	if err != nil {
		return akakeys.Vector{}, err
	}
	return vectorFor(sub)
}

// Resync handles a synchronisation failure reported by the UE for impi: rand
// is the RAND of the challenge the USIM refused and auts its AUTS, as the
// registrar receives them (the auts parameter of RFC 3310) and passes them
// on (RAND || AUTS in the Cx Multimedia-Auth-Request, TS 29.228). It verifies MAC-S (a failure changes nothing and
// returns an error wrapping akakeys.ErrAUTSMAC), moves the SQN forward to
// SQN_MS if the HSS is behind it (never backwards: see the package doc),
// counts the resync, and returns a fresh vector to challenge the UE with:
// SQN = AfterResync(SQN_MS) if the counter moved, else the next SQN, durable
// before return as with Vector.
func (h *HSS) Resync(ctx context.Context, impi string, rand akakeys.RAND, auts akakeys.AUTS) (akakeys.Vector, error) {
	var sqnMS, before akakeys.SQN
	var moved bool
	sub, err := h.store.UpdateSQN(ctx, impi, func(s Subscriber) (SQNUpdate, error) {
		ms, err := akakeys.NewMilenage(s.K, s.OPc).VerifyAUTS(rand, auts)
		if err != nil {
			return SQNUpdate{}, fmt.Errorf("hss: resync of %q: %w", s.IMPI, err)
		}
		sqnMS, before = ms, s.SQN
		seqMS, _ := h.scheme.Split(ms)
		seqHE, _ := h.scheme.Split(s.SQN)
		moved = seqMS > seqHE
		var next akakeys.SQN
		if moved {
			next, err = h.next(ms, h.scheme.AfterResync)
		} else {
			next, err = h.next(s.SQN, h.scheme.Next)
		}
		return SQNUpdate{SQN: next, Resync: true, At: h.now()}, err
	})
	if err != nil {
		return akakeys.Vector{}, err
	}
	h.log.LogAttrs(ctx, slog.LevelInfo, "hss: re-synchronisation",
		slog.String("impi", impi),
		slog.String("sqn_ms", fmt.Sprintf("%x", sqnMS[:])),
		slog.String("sqn_he", fmt.Sprintf("%x", before[:])),
		slog.Bool("moved", moved),
		slog.String("next_sqn", fmt.Sprintf("%x", sub.SQN[:])),
		slog.Uint64("resyncs", sub.Resyncs))
	return vectorFor(sub)
}

// LookupIMPU returns the IMPI that owns impu, or ErrUnknownIMPU.
func (h *HSS) LookupIMPU(ctx context.Context, impu string) (string, error) {
	return h.store.LookupIMPU(ctx, impu)
}

// IMPUs returns the public identities of impi (the registrar's
// P-Associated-URI). Errors: ErrUnknownSubscriber or a store error.
func (h *HSS) IMPUs(ctx context.Context, impi string) ([]string, error) {
	sub, err := h.store.Get(ctx, impi)
	if err != nil {
		return nil, err
	}
	return append([]string(nil), sub.IMPUs...), nil
}

// next applies step (Next or AfterResync) to from and insists that SEQ grows:
// a SEQ that would wrap past 48 bits means the SQN space is used up.
func (h *HSS) next(from akakeys.SQN, step func(akakeys.SQN) akakeys.SQN) (akakeys.SQN, error) {
	n := step(from)
	seqFrom, _ := h.scheme.Split(from)
	seqN, _ := h.scheme.Split(n)
	if seqN <= seqFrom {
		return akakeys.SQN{}, fmt.Errorf("%w (SQN %x)", ErrSQNExhausted, from[:])
	}
	return n, nil
}

func vectorFor(sub Subscriber) (akakeys.Vector, error) {
	v, err := akakeys.NewMilenage(sub.K, sub.OPc).NewVector(sub.SQN, sub.AMF)
	if err != nil {
		// The SQN is spent but unused: harmless, the USIM accepts gaps.
		return akakeys.Vector{}, fmt.Errorf("hss: vector for %q: %w", sub.IMPI, err)
	}
	return v, nil
}
