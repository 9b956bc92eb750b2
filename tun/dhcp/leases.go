package dhcp

import (
	"net/netip"
	"sync"
	"time"
)

// leases is the lease book the DHCPv4 and the DHCPv6 server keep alike
// (each embeds one): leases by binding and by address, and their deadlines
// in time order.
type leases struct {
	mu sync.Mutex
	// Guarded by mu.
	byBinding map[string]*Lease
	byAddr    map[netip.Addr]*Lease
	// expiry holds every deadline setExpiry gave a lease, earliest first. One
	// that was moved since, or whose lease is gone, is dropped when it comes
	// to the top: expiring costs O(log n) per lease that expires, not a walk
	// over all of them (a P-CSCF holds a lease per UE).
	expiry expiryHeap
}

func newLeases() leases {
	return leases{byBinding: map[string]*Lease{}, byAddr: map[netip.Addr]*Lease{}}
}

// setExpiry gives l the deadline at (the zero time: none).
func (b *leases) setExpiry(l *Lease, at time.Time) {
	l.Expires = at
	if !at.IsZero() {
		b.expiry.push(deadline{at: at.UnixNano(), l: l})
	}
}

// expireLocked removes the leases whose deadline is before now.
func (b *leases) expireLocked(now time.Time) {
	t := now.UnixNano()
	for len(b.expiry) > 0 && b.expiry[0].at < t {
		d := b.expiry.pop()
		l := d.l
		if l.Expires.IsZero() || l.Expires.UnixNano() != d.at || b.byBinding[l.Binding] != l {
			continue // moved since, or already gone
		}
		delete(b.byBinding, l.Binding)
		if b.byAddr[l.Addr] == l {
			delete(b.byAddr, l.Addr)
		}
	}
}

// deadline is a lease's expiry as setExpiry gave it (Unix nanoseconds).
type deadline struct {
	at int64
	l  *Lease
}

// expiryHeap is a binary min-heap of deadlines by at.
type expiryHeap []deadline

func (h *expiryHeap) push(d deadline) {
	*h = append(*h, d)
	s := *h
	for i := len(s) - 1; i > 0; {
		up := (i - 1) / 2
		if s[up].at <= s[i].at {
			break
		}
		s[up], s[i] = s[i], s[up]
		i = up
	}
}

func (h *expiryHeap) pop() deadline {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = deadline{}
	s = s[:last]
	for i := 0; ; {
		small, l, r := i, 2*i+1, 2*i+2
		if l < len(s) && s[l].at < s[small].at {
			small = l
		}
		if r < len(s) && s[r].at < s[small].at {
			small = r
		}
		if small == i {
			break
		}
		s[i], s[small] = s[small], s[i]
		i = small
	}
	*h = s
	return top
}

// Release frees the lease of binding (de-registration, SA deletion).
func (b *leases) Release(binding string) {
	b.mu.Lock()
	b.releaseLocked(binding)
	b.mu.Unlock()
}

func (b *leases) releaseLocked(binding string) {
	if l := b.byBinding[binding]; l != nil {
		delete(b.byBinding, binding)
		delete(b.byAddr, l.Addr)
	}
}

// Rebind moves a lease to a new binding, keeping its address (the SA set was
// replaced by re-registration). It reports whether old had a lease.
func (b *leases) Rebind(old, new string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.byBinding[old]
	if l == nil || b.byBinding[new] != nil {
		return false
	}
	delete(b.byBinding, old)
	l.Binding = new
	b.byBinding[new] = l
	return true
}

// Lookup returns the lease of binding.
func (b *leases) Lookup(binding string) (Lease, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.byBinding[binding]
	if l == nil {
		return Lease{}, false
	}
	return *l, true
}

// Leases returns the number of offered (advertised) or bound leases.
func (b *leases) Leases() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.byBinding)
}
