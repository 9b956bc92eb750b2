// Package tuntest provides in-memory tun.Device fakes for tests: a
// channel-backed device whose packets a test sends and receives through
// channels (in the manner of wireguard-go's tun/tuntest), a pair of such
// devices wired back to back, a trivial pump that joins two devices, and
// builders for small IPv4/IPv6 UDP packets with valid checksums
// (RFC 791, RFC 8200, RFC 768).
package tuntest

import (
	"sync"
	"sync/atomic"

	"github.com/imsec/imsec/tun"
)

// ChannelDevice is a tun.Device whose Read returns the packets sent on
// Inbound and whose Write sends copies of its packets on Outbound. Write
// blocks while Outbound is full, which gives a test back-pressure instead of
// loss. A packet from Inbound longer than the caller's buffer is dropped and
// counted in Truncated.
type ChannelDevice struct {
	Inbound  chan []byte // packets for Read; the test sends here
	Outbound chan []byte // packets from Write; the test receives here

	mtu, batch int
	name       string
	done       chan struct{}
	closeOnce  sync.Once

	// Truncated counts Inbound packets dropped because they did not fit.
	Truncated atomic.Uint64
}

var _ tun.Device = (*ChannelDevice)(nil)

// NewChannelDevice returns a ChannelDevice with the given MTU and batch
// size and channels of queue packets each.
func NewChannelDevice(mtu, batch, queue int) *ChannelDevice {
	return newDevice(mtu, batch, make(chan []byte, queue), make(chan []byte, queue), "tuntest")
}

func newDevice(mtu, batch int, in, out chan []byte, name string) *ChannelDevice {
	if batch < 1 {
		batch = 1
	}
	return &ChannelDevice{Inbound: in, Outbound: out, mtu: mtu, batch: batch, name: name, done: make(chan struct{})}
}

// Pipe returns two devices wired back to back: a packet written to one is
// read from the other. Each direction buffers queue packets.
func Pipe(mtu, batch, queue int) (a, b *ChannelDevice) {
	ab := make(chan []byte, queue)
	ba := make(chan []byte, queue)
	return newDevice(mtu, batch, ba, ab, "tuntest-a"), newDevice(mtu, batch, ab, ba, "tuntest-b")
}

// Read implements tun.Device.
func (d *ChannelDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < tun.MinOffset || len(sizes) < len(bufs) {
		return 0, tun.ErrOffset
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	n := 0
	for n == 0 {
		select {
		case <-d.done:
			return 0, tun.ErrClosed
		case p := <-d.Inbound:
			n = d.put(bufs, sizes, offset, n, p)
		}
	}
	for n < len(bufs) {
		select {
		case p := <-d.Inbound:
			n = d.put(bufs, sizes, offset, n, p)
		default:
			return n, nil
		}
	}
	return n, nil
}

func (d *ChannelDevice) put(bufs [][]byte, sizes []int, offset, n int, p []byte) int {
	if len(bufs[n]) < offset+len(p) {
		d.Truncated.Add(1)
		return n
	}
	sizes[n] = copy(bufs[n][offset:], p)
	return n + 1
}

// Write implements tun.Device. Each packet is copied before it is sent.
func (d *ChannelDevice) Write(bufs [][]byte, offset int) (int, error) {
	if offset < tun.MinOffset {
		return 0, tun.ErrOffset
	}
	for i, b := range bufs {
		if len(b) < offset {
			return i, tun.ErrOffset
		}
		p := append([]byte(nil), b[offset:]...)
		select {
		case <-d.done:
			return i, tun.ErrClosed
		default:
		}
		select {
		case <-d.done:
			return i, tun.ErrClosed
		case d.Outbound <- p:
		}
	}
	return len(bufs), nil
}

// MTU implements tun.Device.
func (d *ChannelDevice) MTU() int { return d.mtu }

// BatchSize implements tun.Device.
func (d *ChannelDevice) BatchSize() int { return d.batch }

// Name implements tun.Device.
func (d *ChannelDevice) Name() string { return d.name }

// Close implements tun.Device. It does not close Inbound or Outbound (the
// test, or the other end of a Pipe, may still be sending on them).
func (d *ChannelDevice) Close() error {
	d.closeOnce.Do(func() { close(d.done) })
	return nil
}

// Pump copies packets between two devices in both directions, the way the
// ESP pump will but with nothing in between. Create it with Connect.
type Pump struct {
	wg sync.WaitGroup

	// AtoB and BtoA count packets copied in each direction.
	AtoB, BtoA atomic.Uint64

	errMu sync.Mutex
	err   error
}

// Connect starts two goroutines, one copying a→b and one b→a, each
// reading a batch of up to BatchSize packets and writing it out. They stop
// when a Read or Write fails, normally because a device was closed; close
// both devices and then call Wait.
func Connect(a, b tun.Device) *Pump {
	p := &Pump{}
	p.wg.Add(2)
	go p.run(a, b, &p.AtoB)
	go p.run(b, a, &p.BtoA)
	return p
}

// Offset is the headroom the pump leaves before each packet, as the ESP
// pump will for its outer headers.
const Offset = 64

func (p *Pump) run(from, to tun.Device, count *atomic.Uint64) {
	defer p.wg.Done()
	batch := from.BatchSize()
	size := Offset + max(from.MTU(), to.MTU())
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	sizes := make([]int, batch)
	out := make([][]byte, 0, batch)
	for {
		n, err := from.Read(bufs, sizes, Offset)
		if err != nil {
			p.setErr(err)
			return
		}
		out = out[:0]
		for i := range n {
			out = append(out, bufs[i][:Offset+sizes[i]])
		}
		if _, err := to.Write(out, Offset); err != nil {
			p.setErr(err)
			return
		}
		count.Add(uint64(n))
	}
}

func (p *Pump) setErr(err error) {
	p.errMu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.errMu.Unlock()
}

// Wait waits for both goroutines to stop and returns the first error that
// stopped one of them (tun.ErrClosed after an orderly close).
func (p *Pump) Wait() error {
	p.wg.Wait()
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.err
}
