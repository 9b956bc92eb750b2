package sip

// imsec: a bounded, insertion-ordered set of the source addresses a UDP
// listener has read from (readListenerConnection), so that the connection
// pool holds at most udpListenerPeersMax of them per listener.

// udpListenerPeersMax is how many source addresses one UDP listener keeps in
// the connection pool (for reusing the listener to send to them). A P-CSCF
// serves about this many UEs per listener; beyond it the least recently
// added source is forgotten. A variable for tests.
var udpListenerPeersMax = 1 << 18

// peerRing is the set; not safe for concurrent use (one reader goroutine
// owns it).
type peerRing struct {
	max   int
	order []string // ring of the addresses, oldest at next once full
	next  int
	in    map[string]int // address -> its slot in order
}

func newPeerRing(max int) *peerRing {
	return &peerRing{max: max, in: map[string]int{}}
}

// add records a; when the set is full the oldest address leaves it and is
// returned. Adding an address already in the set changes nothing.
func (r *peerRing) add(a string) (evicted string, ok bool) {
	if _, dup := r.in[a]; dup {
		return "", false
	}
	if len(r.order) < r.max {
		r.in[a] = len(r.order)
		r.order = append(r.order, a)
		return "", false
	}
	evicted = r.order[r.next]
	delete(r.in, evicted)
	r.order[r.next] = a
	r.in[a] = r.next
	r.next = (r.next + 1) % r.max
	return evicted, true
}

func (r *peerRing) all() []string { return append([]string(nil), r.order...) }
