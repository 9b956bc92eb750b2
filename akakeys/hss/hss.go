package hss

import (
	"context"
	"errors"
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
	// Reserve is how many SQNs the HSS reserves for a subscriber with one
	// durable store write and then issues from memory (see reserve.go);
	// 0 means DefaultReserve (64), 1 writes the store for every vector.
	// At most MaxReserve. A crash skips at most Reserve-1 SEQ values of a
	// subscriber, which the USIM accepts.
	Reserve int
}

// HSS issues authentication vectors and handles re-synchronisation for the
// subscribers of a Store. It is safe for concurrent use. The SQN state is
// in the store; in memory the HSS keeps each subscriber's range of reserved
// SQNs and, with a Generational store, the identities it looked up. Several
// HSS values (or processes) may share one store: each issues from ranges
// of its own, so no SQN is issued twice.
type HSS struct {
	store   Store
	gen     Generational // the store's ability, or nil
	scheme  akakeys.SQNScheme
	maxSEQ  uint64 // the largest SEQ of scheme
	reserve uint64 // SQNs per range, 1..MaxReserve
	now     func() time.Time
	log     *slog.Logger

	res reservations // SQN ranges by IMPI (reserve.go)
	ids identities   // identity cache (identities.go)
}

// New returns an HSS over store.
func New(store Store, cfg Config) (*HSS, error) {
	if store == nil {
		return nil, fmt.Errorf("hss: nil store")
	}
	if cfg.SQN.IndBits > MaxIndBits {
		return nil, fmt.Errorf("hss: IND length %d bits, at most %d allowed", cfg.SQN.IndBits, MaxIndBits)
	}
	if cfg.Reserve < 0 || cfg.Reserve > MaxReserve {
		return nil, fmt.Errorf("hss: Reserve %d out of range 0..%d", cfg.Reserve, MaxReserve)
	}
	h := &HSS{store: store, scheme: cfg.SQN, reserve: uint64(cfg.Reserve), now: cfg.Now, log: cfg.Logger}
	h.gen, _ = store.(Generational)
	h.maxSEQ, _ = h.scheme.Split(akakeys.SQNFromUint64(1<<48 - 1))
	if h.reserve == 0 {
		h.reserve = DefaultReserve
	}
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

// Vector issues a fresh authentication vector for impi with the next SQN
// (Annex C: SEQ+1, IND+1) of the subscriber's reserved range, renewing the
// range in the store when it is used up or void (see reserve.go). Every SQN
// is durable in the store (at or below the stored SQN) before its vector is
// computed, so no two vectors ever carry the same SQN, across restarts and
// processes.
//
// Errors: ErrUnknownSubscriber, ErrSQNExhausted, ErrCorrupt, or a store error.
func (h *HSS) Vector(ctx context.Context, impi string) (akakeys.Vector, error) {
	r, err := h.res.acquire(ctx, impi)
	if err != nil {
		return akakeys.Vector{}, err
	}
	sub, err := h.issue(ctx, impi, r)
	r.release()
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
// SQN = AfterResync(SQN_MS) if the counter moved, else the step after the
// stored SQN (above every SQN issued by anyone). The subscriber's range is
// replaced by a new one starting at that SQN, stored in the same UpdateSQN.
func (h *HSS) Resync(ctx context.Context, impi string, rand akakeys.RAND, auts akakeys.AUTS) (akakeys.Vector, error) {
	r, err := h.res.acquire(ctx, impi)
	if err != nil {
		return akakeys.Vector{}, err
	}
	defer r.release()
	gen, err := h.generation(ctx)
	if err != nil {
		return akakeys.Vector{}, err
	}
	var sqnMS, before, first, mark akakeys.SQN
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
		if err != nil {
			return SQNUpdate{}, err
		}
		first, mark = next, h.ahead(next, h.reserve-1)
		return SQNUpdate{SQN: mark, Resync: true, At: h.now()}, nil
	})
	if errors.Is(err, ErrUnknownSubscriber) {
		h.res.forget(impi, r)
	}
	if err != nil {
		// A refused AUTS or an exhausted SQN changed nothing: the range,
		// if any, is still good.
		return akakeys.Vector{}, err
	}
	if err := h.stored(sub, mark); err != nil {
		r.valid = false
		return akakeys.Vector{}, err
	}
	r.set(sub, first, mark, gen)
	h.log.LogAttrs(ctx, slog.LevelInfo, "hss: re-synchronisation",
		slog.String("impi", impi),
		slog.String("sqn_ms", fmt.Sprintf("%x", sqnMS[:])),
		slog.String("sqn_he", fmt.Sprintf("%x", before[:])),
		slog.Bool("moved", moved),
		slog.String("next_sqn", fmt.Sprintf("%x", first[:])),
		slog.String("reserved_to", fmt.Sprintf("%x", mark[:])),
		slog.Uint64("resyncs", sub.Resyncs))
	sub.SQN = first
	return vectorFor(sub)
}

// LookupIMPU returns the IMPI that owns impu, or ErrUnknownIMPU. With a
// Generational store the answer comes from memory while no identity has
// changed in the store (see identities.go).
func (h *HSS) LookupIMPU(ctx context.Context, impu string) (string, error) {
	if h.gen == nil {
		return h.store.LookupIMPU(ctx, impu)
	}
	gen, err := h.gen.Generation(ctx)
	if err != nil {
		return "", err
	}
	if impi, ok := h.ids.ownerOf(gen, impu); ok {
		return impi, nil
	}
	impi, err := h.store.LookupIMPU(ctx, impu)
	if err != nil {
		return "", err
	}
	h.ids.putOwner(gen, impu, impi)
	return impi, nil
}

// IMPUs returns the public identities of impi (the registrar's
// P-Associated-URI), cached like LookupIMPU. Errors: ErrUnknownSubscriber
// or a store error.
func (h *HSS) IMPUs(ctx context.Context, impi string) ([]string, error) {
	var gen uint64
	if h.gen != nil {
		var err error
		if gen, err = h.gen.Generation(ctx); err != nil {
			return nil, err
		}
		if impus, ok := h.ids.impusOf(gen, impi); ok {
			return impus, nil
		}
	}
	sub, err := h.store.Get(ctx, impi)
	if err != nil {
		return nil, err
	}
	if h.gen != nil {
		h.ids.putIMPUs(gen, impi, sub.IMPUs)
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
