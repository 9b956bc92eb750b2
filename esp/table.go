package esp

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Table maps inbound SPIs to SAs. Lookup is for the hot path: one atomic
// load, no lock, safe with concurrent writers. Writers (Add, Replace,
// Remove) are rare, serialised by a mutex, and copy the map
// (copy-on-write). The zero Table is empty and ready.
type Table struct {
	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[SPI]*Inbound]
}

// Lookup returns the SA for spi, or nil.
func (t *Table) Lookup(spi SPI) *Inbound {
	if m := t.m.Load(); m != nil {
		return (*m)[spi]
	}
	return nil
}

// Len returns the number of SAs.
func (t *Table) Len() int {
	if m := t.m.Load(); m != nil {
		return len(*m)
	}
	return 0
}

// SPIs returns the SPIs in the table, in no particular order.
func (t *Table) SPIs() []SPI {
	m := t.m.Load()
	if m == nil {
		return nil
	}
	s := make([]SPI, 0, len(*m))
	for spi := range *m {
		s = append(s, spi)
	}
	return s
}

// Add inserts in under its SPI. It fails if the SPI is taken.
func (t *Table) Add(in *Inbound) error {
	if in == nil {
		return fmt.Errorf("esp: Table.Add of nil SA")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.m.Load()
	if old != nil {
		if _, ok := (*old)[in.spi]; ok {
			return fmt.Errorf("esp: SPI 0x%08x is already in the table", uint32(in.spi))
		}
	}
	t.store(old, in.spi, in)
	return nil
}

// Replace puts in under its SPI and returns the SA it replaced, or nil.
func (t *Table) Replace(in *Inbound) (old *Inbound) {
	if in == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.m.Load()
	if m != nil {
		old = (*m)[in.spi]
	}
	t.store(m, in.spi, in)
	return old
}

// Remove deletes the SA with the given SPI and returns it. It fails if
// there is none.
func (t *Table) Remove(spi SPI) (*Inbound, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.m.Load()
	var in *Inbound
	if m != nil {
		in = (*m)[spi]
	}
	if in == nil {
		return nil, fmt.Errorf("esp: SPI 0x%08x is not in the table", uint32(spi))
	}
	t.store(m, spi, nil)
	return in, nil
}

// store publishes a copy of old with spi set to in (deleted if in is nil).
func (t *Table) store(old *map[SPI]*Inbound, spi SPI, in *Inbound) {
	n := 1
	if old != nil {
		n += len(*old)
	}
	m := make(map[SPI]*Inbound, n)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	if in != nil {
		m[spi] = in
	} else {
		delete(m, spi)
	}
	t.m.Store(&m)
}

// Open finds the SA by the packet's SPI and opens the packet with it.
func (t *Table) Open(pkt []byte) (in *Inbound, payload []byte, nextHeader byte, seq uint64, err error) {
	spi, err := PacketSPI(pkt)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	in = t.Lookup(spi)
	if in == nil {
		return nil, nil, 0, 0, ErrUnknownSPI
	}
	payload, nextHeader, seq, err = in.Open(pkt)
	return in, payload, nextHeader, seq, err
}
