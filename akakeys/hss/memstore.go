package hss

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// MemStore is a Store in memory, for tests of code that needs an HSS (a
// registrar, say) without a database file. It is not durable: everything is
// lost with the value. The zero value is not usable; call NewMemStore.
type MemStore struct {
	mu    sync.Mutex
	subs  map[string]Subscriber // guarded by mu
	impus map[string]string     // IMPU -> IMPI; guarded by mu
	gen   uint64                // identity changes (Add, Delete); guarded by mu
}

var (
	_ Store        = (*MemStore)(nil)
	_ Generational = (*MemStore)(nil)
)

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore {
	return &MemStore{subs: map[string]Subscriber{}, impus: map[string]string{}}
}

// Add implements Store.
func (m *MemStore) Add(ctx context.Context, s Subscriber) error {
	if err := s.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.subs[s.IMPI]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateIMPI, s.IMPI)
	}
	for _, u := range s.IMPUs {
		if owner, ok := m.impus[u]; ok {
			return fmt.Errorf("%w: %q belongs to %q", ErrIMPUTaken, u, owner)
		}
	}
	m.subs[s.IMPI] = s.clone()
	for _, u := range s.IMPUs {
		m.impus[u] = s.IMPI
	}
	m.gen++
	return nil
}

// Get implements Store.
func (m *MemStore) Get(ctx context.Context, impi string) (Subscriber, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.subs[impi]
	if !ok {
		return Subscriber{}, fmt.Errorf("%w: %q", ErrUnknownSubscriber, impi)
	}
	return s.clone(), nil
}

// List implements Store.
func (m *MemStore) List(ctx context.Context) ([]Subscriber, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Subscriber, 0, len(m.subs))
	for _, s := range m.subs {
		out = append(out, s.clone())
	}
	slices.SortFunc(out, func(a, b Subscriber) int {
		switch {
		case a.IMPI < b.IMPI:
			return -1
		case a.IMPI > b.IMPI:
			return 1
		}
		return 0
	})
	return out, nil
}

// Delete implements Store.
func (m *MemStore) Delete(ctx context.Context, impi string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.subs[impi]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSubscriber, impi)
	}
	for _, u := range s.IMPUs {
		delete(m.impus, u)
	}
	delete(m.subs, impi)
	m.gen++
	return nil
}

// LookupIMPU implements Store.
func (m *MemStore) LookupIMPU(ctx context.Context, impu string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	impi, ok := m.impus[impu]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownIMPU, impu)
	}
	return impi, nil
}

// Generation implements Generational: it counts Add and Delete.
func (m *MemStore) Generation(ctx context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen, nil
}

// UpdateSQN implements Store.
func (m *MemStore) UpdateSQN(ctx context.Context, impi string, fn func(Subscriber) (SQNUpdate, error)) (Subscriber, error) {
	if err := ctx.Err(); err != nil {
		return Subscriber{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.subs[impi]
	if !ok {
		return Subscriber{}, fmt.Errorf("%w: %q", ErrUnknownSubscriber, impi)
	}
	u, err := fn(s.clone())
	if err != nil {
		return Subscriber{}, err
	}
	s.SQN = u.SQN
	if u.Resync {
		s.Resyncs++
		s.LastResync = u.At
	}
	m.subs[impi] = s
	return s.clone(), nil
}
