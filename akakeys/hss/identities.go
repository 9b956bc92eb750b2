package hss

import "sync"

// identities caches the store's answers about identities, IMPU -> IMPI and
// IMPI -> IMPUs, for one store generation (Generational): a registrar asks
// for them on every REGISTER, and they change only when subscribers are
// provisioned or removed. Every lookup reads the generation first; when it
// differs from the cache's, the cache is emptied and refilled from the
// store, so a subscriber added or deleted by another process (imsec sub
// add/del/import) is seen by the next lookup.
//
// An entry is stored under the generation read before the store was asked,
// never a later one: the answer is at least as new as its tag, so a change
// committed between the two reads makes the tag stale and the entry is
// dropped with the rest at the next lookup, never served past the change.
//
// Only answers that found something are cached, so lookups of made-up
// identities cannot grow it: it holds at most every IMPU and IMPI stored.
//
// The cache is split in identityShards shards by a hash of the key, each
// under its own read-write lock, and lookups copy outside it. Every
// REGISTER makes a lookup, and a registration burst's first REGISTERs each
// store an answer: with one lock, hundreds of handlers queued on it in a
// 3,000/s burst (a lock convoy: each handoff waited for the next goroutine
// to be scheduled; docs/results.md, sessions 10 and 11). Each shard keeps
// its own generation: a shard moves to a newer one when a lookup or an
// answer of that generation reaches it, and an answer older than its shard
// is not kept.
type identities struct {
	shards [identityShards]identityShard
}

// identityShards is how many locks the cache is split over.
const identityShards = 64

type identityShard struct {
	mu    sync.RWMutex
	gen   uint64              // guarded by mu
	owner map[string]string   // IMPU -> IMPI; guarded by mu
	impus map[string][]string // IMPI -> IMPUs; guarded by mu; the slices are never modified
}

// shard is key's shard, by FNV-1a: keys that collide only share a lock.
func (c *identities) shard(key string) *identityShard {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &c.shards[h%identityShards]
}

// at empties the shard unless it holds generation gen. Called with mu held
// for writing.
func (c *identityShard) at(gen uint64) {
	if c.owner == nil || c.gen != gen {
		c.gen, c.owner, c.impus = gen, map[string]string{}, map[string][]string{}
	}
}

// current reports whether the shard holds generation gen. Called with mu
// held.
func (c *identityShard) current(gen uint64) bool { return c.owner != nil && c.gen == gen }

// keeps prepares the shard for an answer read under generation gen and
// reports whether it is kept: a newer generation empties the shard first,
// an older one is refused. Called with mu held for writing.
func (c *identityShard) keeps(gen uint64) bool {
	if c.owner == nil || gen > c.gen {
		c.at(gen)
	}
	return c.gen == gen
}

// ownerOf returns the cached IMPI of impu at generation gen.
func (c *identities) ownerOf(gen uint64, impu string) (string, bool) {
	s := c.shard(impu)
	s.mu.RLock()
	if s.current(gen) {
		impi, ok := s.owner[impu]
		s.mu.RUnlock()
		return impi, ok
	}
	s.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.at(gen)
	impi, ok := s.owner[impu]
	return impi, ok
}

// impusOf returns a copy of the cached IMPUs of impi at generation gen.
func (c *identities) impusOf(gen uint64, impi string) ([]string, bool) {
	s := c.shard(impi)
	s.mu.RLock()
	if !s.current(gen) {
		s.mu.RUnlock()
		s.mu.Lock()
		s.at(gen) // a new generation: empty, nothing to find
		s.mu.Unlock()
		return nil, false
	}
	impus, ok := s.impus[impi]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return append([]string(nil), impus...), true // never modified: copied unlocked
}

// putOwner caches impu -> impi, read from the store after generation gen
// was read.
func (c *identities) putOwner(gen uint64, impu, impi string) {
	s := c.shard(impu)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keeps(gen) {
		s.owner[impu] = impi
	}
}

// putIMPUs caches impi -> impus and each IMPU -> impi, read from the store
// after generation gen was read. impus is copied (outside the locks).
func (c *identities) putIMPUs(gen uint64, impi string, impus []string) {
	own := append([]string(nil), impus...)
	s := c.shard(impi)
	s.mu.Lock()
	if s.keeps(gen) {
		s.impus[impi] = own
	}
	s.mu.Unlock()
	for _, u := range own {
		c.putOwner(gen, u, impi)
	}
}
