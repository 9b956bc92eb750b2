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
// Lookups share a read lock and copy outside it: every REGISTER makes
// one, and with a plain mutex hundreds of handlers queued on it in a
// 3,000/s burst while the CPU was idle (a lock convoy: each handoff waited
// for the next goroutine to be scheduled).
type identities struct {
	mu    sync.RWMutex
	gen   uint64              // guarded by mu
	owner map[string]string   // IMPU -> IMPI; guarded by mu
	impus map[string][]string // IMPI -> IMPUs; guarded by mu; the slices are never modified
}

// at empties the cache unless it holds generation gen. Called with mu held
// for writing.
func (c *identities) at(gen uint64) {
	if c.owner == nil || c.gen != gen {
		c.gen, c.owner, c.impus = gen, map[string]string{}, map[string][]string{}
	}
}

// current reports whether the cache holds generation gen. Called with mu
// held.
func (c *identities) current(gen uint64) bool { return c.owner != nil && c.gen == gen }

// ownerOf returns the cached IMPI of impu at generation gen.
func (c *identities) ownerOf(gen uint64, impu string) (string, bool) {
	c.mu.RLock()
	if c.current(gen) {
		impi, ok := c.owner[impu]
		c.mu.RUnlock()
		return impi, ok
	}
	c.mu.RUnlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at(gen)
	impi, ok := c.owner[impu]
	return impi, ok
}

// impusOf returns a copy of the cached IMPUs of impi at generation gen.
func (c *identities) impusOf(gen uint64, impi string) ([]string, bool) {
	c.mu.RLock()
	if !c.current(gen) {
		c.mu.RUnlock()
		c.mu.Lock()
		c.at(gen) // a new generation: empty, nothing to find
		c.mu.Unlock()
		return nil, false
	}
	impus, ok := c.impus[impi]
	c.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return append([]string(nil), impus...), true // never modified: copied unlocked
}

// putOwner caches impu -> impi, read from the store after generation gen
// was read.
func (c *identities) putOwner(gen uint64, impu, impi string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.owner != nil && c.gen == gen {
		c.owner[impu] = impi
	}
}

// putIMPUs caches impi -> impus and each IMPU -> impi, read from the store
// after generation gen was read. impus is copied.
func (c *identities) putIMPUs(gen uint64, impi string, impus []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.owner == nil || c.gen != gen {
		return
	}
	c.impus[impi] = append([]string(nil), impus...)
	for _, u := range impus {
		c.owner[u] = impi
	}
}
