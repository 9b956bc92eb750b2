package tun

import (
	"errors"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/udp"
)

// Inject seals one inner IP packet to peer and sends it, outside the
// Device (DHCP, the pinhole ping, the gateway's echo replies).
func (p *Pump) Inject(peer *Peer, pkt []byte) error {
	buf := make([]byte, outOffset+len(pkt)+esp.TailRoom)
	copy(buf[outOffset:], pkt)
	return p.injectBuf(peer, buf, len(pkt))
}

// injectBuf is Inject of the n-byte packet at buf[outOffset:], with
// esp.TailRoom after it: sealed in place.
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
	jobs := []esp.SealJob{{Buf: buf, Off: outOffset, N: n}}
	if isTransport(s.out.Mode()) {
		hl, proto, ok := p.transportOut(pkt, peer)
		if !ok {
			p.ctr.notIP.Add(1)
			return errNoSeal(peer)
		}
		jobs[0] = esp.SealJob{Buf: buf, Off: outOffset + hl, N: n - hl, NextHeader: proto}
	}
	s.out.SealBatch(jobs)
	msgs := make([]udp.Message, 1)
	if p.sealed(jobs, []*outSA{s}, []*Peer{peer}, msgs) == 0 {
		return errNoSeal(peer)
	}
	if _, err := p.conn.WriteBatch(msgs); err != nil {
		p.ctr.sendErrors.Add(1)
		return err
	}
	return nil
}

func errNoSeal(peer *Peer) error {
	return errors.New("tun: cannot seal to peer " + peer.name + " (no outbound SA, or SA exhausted)")
}
