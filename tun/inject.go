package tun

import (
	"errors"
	"sync"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/udp"
)

// Inject seals one inner IP packet to peer and sends it, outside the
// Device (DHCP, the pinhole ping, the gateway's echo replies).
func (p *Pump) Inject(peer *Peer, pkt []byte) error {
	pb := getPacketBuf(len(pkt))
	defer putPacketBuf(pb)
	buf := *pb
	copy(buf[outOffset:], pkt)
	return p.injectBuf(peer, buf, len(pkt))
}

// pooledPacket is the size of the buffers packetBufs holds: an inner packet
// of up to 2 KiB (a SIP message, a DHCP reply, a stream's echo) with the
// room around it that sealing in place needs.
const pooledPacket = outOffset + 2048 + esp.TailRoom

// packetBufs recycles the buffers Inject and Socket writes seal in. A
// P-CSCF sends every protected SIP message, every DHCP reply and every echo
// reply this way, thousands a second: with a heap of a GiB (100,000 UEs
// held), each byte of garbage costs mark work.
var packetBufs = sync.Pool{New: func() any { b := make([]byte, pooledPacket); return &b }}

// getPacketBuf returns a buffer for an n-byte inner packet at outOffset,
// with esp.TailRoom after it; putPacketBuf gives it back once sent.
func getPacketBuf(n int) *[]byte {
	if outOffset+n+esp.TailRoom <= pooledPacket {
		return packetBufs.Get().(*[]byte)
	}
	b := make([]byte, outOffset+n+esp.TailRoom)
	return &b
}

func putPacketBuf(b *[]byte) {
	if cap(*b) == pooledPacket {
		*b = (*b)[:pooledPacket]
		packetBufs.Put(b)
	}
}

// sealOne is injectBuf's batch of one; sealOnes recycles them.
type sealOne struct {
	jobs  [1]esp.SealJob
	sas   [1]*outSA
	peers [1]*Peer
	msgs  [1]udp.Message
}

var sealOnes = sync.Pool{New: func() any { return new(sealOne) }}

// injectBuf is Inject of the n-byte packet at buf[outOffset:], with
// esp.TailRoom after it: sealed in place and sent before it returns.
func (p *Pump) injectBuf(peer *Peer, buf []byte, n int) error {
	if p.closed() {
		return ErrClosedPump
	}
	pkt := buf[outOffset : outOffset+n]
	s := peer.pickSA(pkt)
	if s == nil {
		p.ctr.noSA.Add(1)
		return errNoSeal(peer)
	}
	one := sealOnes.Get().(*sealOne)
	defer func() {
		*one = sealOne{}
		sealOnes.Put(one)
	}()
	one.jobs[0] = esp.SealJob{Buf: buf, Off: outOffset, N: n}
	if isTransport(s.out.Mode()) {
		hl, proto, ok := p.transportOut(pkt, peer)
		if !ok {
			p.ctr.notIP.Add(1)
			return errNoSeal(peer)
		}
		one.jobs[0] = esp.SealJob{Buf: buf, Off: outOffset + hl, N: n - hl, NextHeader: proto}
	}
	s.out.SealBatch(one.jobs[:])
	one.sas[0], one.peers[0] = s, peer
	if p.sealed(one.jobs[:], one.sas[:], one.peers[:], one.msgs[:]) == 0 {
		return errNoSeal(peer)
	}
	if _, err := p.conn.WriteBatch(one.msgs[:]); err != nil {
		p.ctr.sendErrors.Add(1)
		return err
	}
	return nil
}

func errNoSeal(peer *Peer) error {
	return errors.New("tun: cannot seal to peer " + peer.name + " (no outbound SA, or SA exhausted)")
}
