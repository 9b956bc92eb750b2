package dhcp

import (
	"net/netip"
	"sync"
	"time"
)

// leases is the lease book the DHCPv4 and the DHCPv6 server keep alike
// (each embeds one): leases by binding and by address, and when expired
// ones were last swept.
type leases struct {
	mu sync.Mutex
	// Guarded by mu.
	byBinding map[string]*Lease
	byAddr    map[netip.Addr]*Lease
	nextSweep time.Time // when expired leases are next looked for (sweepEvery)
	swept     time.Time // when they were last
}

func newLeases() leases {
	return leases{byBinding: map[string]*Lease{}, byAddr: map[netip.Addr]*Lease{}}
}

// sweepEvery bounds how often Handle looks for expired leases: a sweep
// walks every lease, and a P-CSCF with 100k UEs answers thousands of
// requests a second. An expired lease may so live up to sweepEvery longer;
// a full pool sweeps at once.
const sweepEvery = time.Second

func (b *leases) expireLocked(now time.Time) {
	b.swept, b.nextSweep = now, now.Add(sweepEvery)
	for binding, l := range b.byBinding {
		if now.After(l.Expires) && !l.Expires.IsZero() {
			delete(b.byBinding, binding)
			delete(b.byAddr, l.Addr)
		}
	}
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
