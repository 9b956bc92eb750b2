package tun

import (
	"errors"
	"sync/atomic"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/udp"
)

// Outbound is a pipeline of two goroutines joined by a ring of packet
// buffers (outRing): readDevice fills the ring from the Device, outbound
// seals what is there and sends it in one WriteBatch. The Device's read
// (a system call per packet on a TUN when there is no offload) runs on one
// core while sealing runs on the other, and under load every WriteBatch
// carries whatever arrived during the previous one: small packets, which a
// TUN hands over one per read, still leave in batches. Packets keep their
// order, and so do their ESP sequence numbers, because one goroutine seals.
//
// The ring holds depth batches of the Device's BatchSize buffers; readDevice
// waits for room for a whole batch (a TUN with segmentation offload fills up
// to BatchSize from one read) and outbound frees slots once sent.
//
// No lock: a slot between tail and head belongs to outbound, any other to
// readDevice, and each moves its own index only (atomic) after it is done
// with the slots it hands over.
type outRing struct {
	bufs  [][]byte // slots, then the first batch-1 slots again: every Read gets batch contiguous entries
	sizes []int    // of each slot (the mirrored tail is copied back)
	slots uint64   // set once
	batch int      // set once

	head, tail atomic.Uint64 // slots filled (written by readDevice only), slots sent (by outbound only)
	filled     chan struct{} // wakes outbound; capacity 1
	drained    chan struct{} // wakes readDevice; capacity 1
}

// outRingBytes bounds the ring's memory; it holds 2 to 8 batches.
const outRingBytes = 2 << 20

func newOutRing(batch, size int) *outRing {
	depth := min(max(outRingBytes/(batch*size), 2), 8)
	slots := depth * batch
	r := &outRing{slots: uint64(slots), batch: batch, sizes: make([]int, slots+batch-1),
		filled: make(chan struct{}, 1), drained: make(chan struct{}, 1)}
	r.bufs = make([][]byte, slots+batch-1)
	for i := range slots {
		r.bufs[i] = make([]byte, size)
	}
	copy(r.bufs[slots:], r.bufs[:batch-1])
	return r
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// readDevice fills the ring from the Device until it is closed.
func (p *Pump) readDevice(r *outRing) {
	defer p.wg.Done()
	defer close(r.filled) // outbound's signal to stop
	head := r.head.Load()
	errPause := pause{p: p, d: readErrorPause}
	defer errPause.stop()
	for {
		for head-r.tail.Load() > r.slots-uint64(r.batch) {
			select {
			case <-r.drained:
			case <-p.stop:
				return
			}
		}
		i := int(head % r.slots)
		n, err := p.dev.Read(r.bufs[i:i+r.batch], r.sizes[i:i+r.batch], outOffset)
		if err != nil && n == 0 {
			if p.closed() || errors.Is(err, ErrClosed) {
				return
			}
			p.ctr.deviceErrors.Add(1) // transient: keep going, without spinning
			if !errPause.wait() {
				return
			}
			continue
		}
		if over := i + n - int(r.slots); over > 0 {
			copy(r.sizes[:over], r.sizes[r.slots:int(r.slots)+over])
		}
		head += uint64(n)
		r.head.Store(head)
		wake(r.filled)
	}
}

// outbound seals the packets readDevice puts in the ring and sends them.
//
// Each pass takes everything in the ring: it routes every packet to a peer
// and an outbound SA, reserves each run's sequence numbers (one atomic
// operation per run of packets under one SA), seals the runs in batches
// (AES-CBC encrypts eight packets at once, HMAC-SHA1 authenticates up to
// four), and sends the lot with one WriteBatch. With ParallelSeal the
// sealHelper goroutine seals the second half of a large pass meanwhile;
// that is off by default because on the two-core machine the targets are
// set on the other core is already busy with readDevice, inbound and the
// kernel, and splitting measured slower (docs/results.md, Experiments).
func (p *Pump) outbound(r *outRing, h *sealHelper) {
	defer p.wg.Done()
	if h != nil {
		defer close(h.tasks)
	}
	var (
		msgs  = make([]udp.Message, r.slots)
		jobs  = make([]esp.SealJob, r.slots)
		sas   = make([]*outSA, r.slots)
		peers = make([]*Peer, r.slots)
	)
	tail := r.tail.Load()
	for {
		head := r.head.Load()
		if head == tail {
			if _, ok := <-r.filled; !ok {
				return
			}
			continue
		}
		t := &p.tables
		k, bytes := 0, 0
		for ; tail != head && !passFull(k, bytes); tail++ {
			i := int(tail % r.slots)
			pkt := r.bufs[i][outOffset : outOffset+r.sizes[i]]
			bytes += len(pkt)
			peer, s := p.outSA(t, pkt)
			if s == nil {
				continue
			}
			jobs[k] = esp.SealJob{Buf: r.bufs[i], Off: outOffset, N: len(pkt)}
			if isTransport(s.out.Mode()) {
				hl, proto, ok := p.transportOut(pkt, peer)
				if !ok {
					p.ctr.notIP.Add(1)
					continue
				}
				jobs[k] = esp.SealJob{Buf: r.bufs[i], Off: outOffset + hl, N: len(pkt) - hl, NextHeader: proto}
			}
			sas[k], peers[k] = s, peer
			k++
		}
		if p.padding() {
			forRuns(jobs[:k], sas, func(out *esp.Outbound, run []esp.SealJob) { padRun(out, run, p.cfg.BatchPad) })
		}
		forRuns(jobs[:k], sas, func(out *esp.Outbound, run []esp.SealJob) { out.Reserve(run) })
		if h != nil && k >= parallelMin {
			half := k / 2
			h.tasks <- sealTask{jobs: jobs[half:k], sas: sas[half:k]}
			sealRuns(jobs[:half], sas)
			<-h.done
		} else {
			sealRuns(jobs[:k], sas)
		}
		p.send(msgs[:p.sealed(jobs[:k], sas, peers, msgs)])
		r.tail.Store(tail)
		wake(r.drained)
	}
}

// passFull reports whether an outbound pass with k packets of bytes bytes
// in all should stop and send: at passSmall packets of under
// passSmallSize bytes on average, else at passMax packets. A pass is
// serial (seal all, then one sendmmsg, during which the kernel also runs
// the receiving side of a local peer), so small passes of small packets
// overlap better with the rest of the path (in tun mode on two cores they
// carried more packets/s than passes of everything waiting; the figures
// are in docs/results.md). Large packets fill a 64 KB GSO send at about
// 45 packets, and passes below that cost throughput.
func passFull(k, bytes int) bool {
	return k >= passMax || (k >= passSmall && bytes < k*passSmallSize)
}

const (
	passSmall     = 16
	passSmallSize = 512
	passMax       = 48
)

// parallelMin is the smallest batch ParallelSeal splits.
const parallelMin = 16

// sealHelper is ParallelSeal's second sealing goroutine: outbound hands it
// the second half of a batch and waits on done after sealing the first.
type sealHelper struct {
	tasks chan sealTask // written and closed by outbound (when it stops)
	done  chan struct{} // one value per task, written by the helper; capacity 1
}

// sealTask is part of a reserved batch, with each job's SA.
type sealTask struct {
	jobs []esp.SealJob
	sas  []*outSA
}

func (p *Pump) sealHelper(h *sealHelper) {
	defer p.wg.Done()
	for t := range h.tasks {
		sealRuns(t.jobs, t.sas)
		h.done <- struct{}{}
	}
}

// sealRuns seals reserved jobs, sas[i] being job i's SA.
func sealRuns(jobs []esp.SealJob, sas []*outSA) {
	forRuns(jobs, sas, func(out *esp.Outbound, run []esp.SealJob) { out.SealReserved(run) })
}

// forRuns calls f for each run of consecutive jobs under one SA.
func forRuns(jobs []esp.SealJob, sas []*outSA, f func(*esp.Outbound, []esp.SealJob)) {
	for lo := 0; lo < len(jobs); {
		hi := lo + 1
		for hi < len(jobs) && sas[hi] == sas[lo] {
			hi++
		}
		f(sas[lo].out, jobs[lo:hi])
		lo = hi
	}
}

// outSA routes an inner packet to its peer and the SA that seals it,
// counting the packet if there is none.
func (p *Pump) outSA(t *peerTables, pkt []byte) (*Peer, *outSA) {
	_, dst, ok := innerAddrs(pkt)
	if !ok {
		p.ctr.notIP.Add(1)
		return nil, nil
	}
	peer := t.route(dst)
	if peer == nil {
		p.ctr.noRoute.Add(1)
		return nil, nil
	}
	s := peer.pickSA(pkt)
	if s == nil {
		p.ctr.noSA.Add(1)
		return nil, nil
	}
	return peer, s
}

// sealed turns the sealed jobs into datagrams in msgs, counts them (and the
// failures), and returns how many there are.
func (p *Pump) sealed(jobs []esp.SealJob, sas []*outSA, peers []*Peer, msgs []udp.Message) int {
	now := p.cfg.Now().UnixNano()
	m := 0
	var bytes, pad uint64
	for i := range jobs {
		j := &jobs[i]
		if j.Err != nil {
			p.ctr.drops[esp.ReasonOf(j.Err)].Add(1)
			continue
		}
		s, peer := sas[i], peers[i]
		s.packets.Add(1)
		s.bytes.Add(uint64(j.N))
		peer.ctr.txPackets.Add(1)
		peer.ctr.txBytes.Add(uint64(j.N))
		peer.lastSent.Store(now)
		bytes += uint64(j.N)
		pad += uint64(j.Pad)
		msgs[m] = udp.Message{Buf: j.Pkt, N: len(j.Pkt), Addr: peer.Endpoint()}
		m++
	}
	p.ctr.txPackets.Add(uint64(m))
	p.ctr.txBytes.Add(bytes)
	if pad != 0 {
		p.ctr.txPadBytes.Add(pad)
	}
	return m
}

func (p *Pump) send(msgs []udp.Message) {
	if len(msgs) == 0 {
		return
	}
	sent, err := p.conn.WriteBatch(msgs)
	if err != nil || sent < len(msgs) {
		p.ctr.sendErrors.Add(uint64(len(msgs) - sent))
	}
}
