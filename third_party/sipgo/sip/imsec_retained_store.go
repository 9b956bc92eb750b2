package sip

// imsec: completed non-INVITE server transactions over UDP leave the
// transaction store for a retainedStore, which keeps only what answering a
// retransmission needs (IMSEC.md section 11).

import (
	"hash/maphash"
	"sync"
	"time"
	"unsafe"
)

// retainedSlabSize is the size of the arrays entries are written into. An
// array is a large object of its own (the allocator's small classes end at
// 32 KiB): it holds no pointers, is never scanned, and is freed whole.
const retainedSlabSize = 64 << 10

// retainedStore holds, for RFC 3261 Timer J (64*T1) after it was sent, the
// final response of every non-INVITE server transaction over UDP, keyed by
// the transaction's key. A request that matches no live transaction but a
// retained response is answered with that response's bytes (RFC 3261
// §17.2.2: a retransmission in the Completed state is answered with the
// last response).
//
// A retained ServerTx kept a timer, channels, locks and the response's
// header for 32 s: a few KiB in a dozen objects the collector marked, and
// one timer and one goroutine per transaction. Here an entry is its bytes
// in a shared array and a fixed-size record; entries are appended in the
// order they are made and, all living Timer J, expire in that order, so a
// whole array goes at once and one timer serves the store.
type retainedStore struct {
	life time.Duration // Timer J when the store was made
	seed maphash.Seed  // immutable
	base time.Time     // immutable; entries' times are nanoseconds since it

	mu sync.Mutex
	// Guarded by mu:
	index  map[uint64]retainedRef // key hash -> its newest entry
	slabs  []*retainedSlab        // oldest first; the last one is filled
	nextID uint64                 // ID of the next slab
	timer  *time.Timer            // sweeps at the oldest slab's expiry; nil while there is none
	closed bool

	// releasing counts sweeps giving back references outside mu; close
	// waits for them, so that no reference is held after it returns. Add
	// is called under mu and never once closed is set.
	releasing sync.WaitGroup
}

// retainedRef is where an entry is: its slab's ID and its place in it.
type retainedRef struct {
	slab uint64
	ent  uint32
}

// retainedSlab is an array of entries' bytes and their records.
type retainedSlab struct {
	id      uint64
	buf     []byte // key, destination and response of each entry, back to back; never rewritten
	ents    []retainedEntry
	expires int64 // the newest entry's expiry
}

// retainedEntry is one retained response: its bytes are buf[off:off+keyLen]
// (the transaction key), then destLen bytes of destination, then wireLen
// of response.
type retainedEntry struct {
	hash    uint64
	expires int64
	conn    Connection
	off     uint32
	keyLen  uint16
	destLen uint16
	wireLen uint32
}

func newRetainedStore(life time.Duration) *retainedStore {
	return &retainedStore{life: life, seed: maphash.MakeSeed(), base: time.Now()}
}

func (s *retainedStore) now() int64 { return int64(time.Since(s.base)) }

// put retains wire, the final response of the transaction key, to be sent
// to dest on conn again; it holds a reference to conn (Ref) until the entry
// is dropped. It returns wire as a string of the store's copy,
// which stays valid (and unchanged) for as long as it is referenced; after
// close it returns a copy of its own.
func (s *retainedStore) put(key, dest string, wire []byte, conn Connection) string {
	need := len(key) + len(dest) + len(wire)
	if len(key) > 0xFFFF || len(dest) > 0xFFFF || need > 1<<31 {
		return string(wire) // not retained: no SIP message over UDP is this large
	}
	h := maphash.String(s.seed, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return string(wire)
	}
	now := s.now()
	var sl *retainedSlab
	if n := len(s.slabs); n > 0 && cap(s.slabs[n-1].buf)-len(s.slabs[n-1].buf) >= need {
		sl = s.slabs[n-1]
	} else {
		sl = &retainedSlab{id: s.nextID, buf: make([]byte, 0, max(retainedSlabSize, need))}
		s.nextID++
		s.slabs = append(s.slabs, sl)
	}
	off := len(sl.buf)
	sl.buf = append(append(append(sl.buf, key...), dest...), wire...)
	e := retainedEntry{hash: h, expires: now + int64(s.life), conn: conn, off: uint32(off),
		keyLen: uint16(len(key)), destLen: uint16(len(dest)), wireLen: uint32(len(wire))}
	conn.Ref(1) // held until the entry is dropped, as the transaction held it
	sl.ents = append(sl.ents, e)
	sl.expires = max(sl.expires, e.expires)
	if s.index == nil {
		s.index = make(map[uint64]retainedRef)
	}
	s.index[h] = retainedRef{slab: sl.id, ent: uint32(len(sl.ents) - 1)}
	if s.timer == nil {
		s.timer = time.AfterFunc(time.Duration(s.slabs[0].expires-now), s.onTimer)
	}
	w := sl.buf[off+len(key)+len(dest) : off+need]
	return unsafe.String(unsafe.SliceData(w), len(w))
}

// resend sends the retained response of the transaction key again, and
// reports whether there was one.
func (s *retainedStore) resend(key string) bool {
	h := maphash.String(s.seed, key)
	s.mu.Lock()
	ref, ok := s.index[h]
	if !ok || len(s.slabs) == 0 || ref.slab < s.slabs[0].id {
		s.mu.Unlock()
		return false
	}
	sl := s.slabs[ref.slab-s.slabs[0].id]
	e := sl.ents[ref.ent]
	b := sl.buf[e.off:]
	if e.expires <= s.now() || string(b[:e.keyLen]) != key { // a hash collision is a miss
		s.mu.Unlock()
		return false
	}
	b = b[e.keyLen:]
	dest := string(b[:e.destLen])
	w := b[e.destLen : int(e.destLen)+int(e.wireLen)]
	s.mu.Unlock()

	// The slab's bytes are never rewritten, and the string keeps them.
	res := &wireResponse{wire: unsafe.String(unsafe.SliceData(w), len(w))}
	res.SetDestination(dest)
	res.SetTransport("UDP")
	_ = e.conn.WriteMsg(res) // as passResp: a failed retransmission changes nothing
	return true
}

// onTimer drops what has expired and waits for the next slab's expiry.
func (s *retainedStore) onTimer() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	now := s.now()
	dropped := s.sweepLocked(now)
	if len(s.slabs) == 0 {
		s.timer = nil
	} else {
		s.timer.Reset(time.Duration(s.slabs[0].expires - now))
	}
	s.releasing.Add(1)
	s.mu.Unlock()
	release(dropped)
	s.releasing.Done()
}

// sweepLocked removes the slabs whose entries have all expired, with their
// entries' index entries (unless a newer entry took the hash since), and
// returns them; the caller releases them after unlocking.
func (s *retainedStore) sweepLocked(now int64) []*retainedSlab {
	n := 0
	for _, sl := range s.slabs {
		if sl.expires > now {
			break
		}
		for i, e := range sl.ents {
			if s.index[e.hash] == (retainedRef{slab: sl.id, ent: uint32(i)}) {
				delete(s.index, e.hash)
			}
		}
		n++
	}
	if n == 0 {
		return nil
	}
	dropped := append([]*retainedSlab(nil), s.slabs[:n]...)
	clear(s.slabs[:n])
	s.slabs = s.slabs[n:]
	if len(s.slabs) == 0 {
		// Go maps do not shrink: after a burst, start a small one.
		s.slabs, s.index = nil, nil
	}
	return dropped
}

// release gives back the connection references of dropped entries. It
// runs without the store's lock: closing a connection may call out.
func release(slabs []*retainedSlab) {
	for _, sl := range slabs {
		for _, e := range sl.ents {
			e.conn.TryClose()
		}
	}
}

// len is the number of responses retained (for tests).
func (s *retainedStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.index)
}

// close drops everything and stops the timer; put and resend then retain
// and find nothing. It returns once every reference the store held is
// given back, a sweep's running meanwhile included.
func (s *retainedStore) close() {
	s.mu.Lock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	dropped := s.slabs
	s.slabs, s.index = nil, nil
	s.mu.Unlock()
	release(dropped)
	s.releasing.Wait()
}
