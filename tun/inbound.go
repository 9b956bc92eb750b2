package tun

import (
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/udp"
)

// inbound reads the socket, opens and writes to the Device.
func (p *Pump) inbound() {
	defer p.wg.Done()
	batch := p.conn.BatchSize()
	size := inOffset + maxPacket
	bufs := make([][]byte, batch)
	msgs := make([]udp.Message, batch)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	wbufs := make([][]byte, 0, batch)
	jobs := make([]esp.OpenJob, batch)
	sas := make([]*inSA, batch)
	idx := make([]int, batch) // of each job's datagram in msgs
	errPause := pause{p: p, d: readErrorPause}
	defer errPause.stop()
	coalesce := pause{p: p, d: keepaliveCoalesce, system: true}
	defer coalesce.stop()
	var kaRate rateWindow // keepalives per second, for coalescing
	var lastESP int64     // when a batch last held an ESP packet (Unix ns)
	quiet := false        // the socket is out of the runtime's poller (p.quieter)
	quietFailing := false // the last SetQuiet failed (logged once until one succeeds)
	for {
		for i := range msgs {
			msgs[i] = udp.Message{Buf: bufs[i][inOffset:]}
		}
		n, err := p.conn.ReadBatch(msgs)
		if err != nil {
			if p.closed() {
				return
			}
			p.ctr.readErrors.Add(1) // transient: keep going
			if !errPause.wait() {
				return
			}
			continue
		}
		t := &p.tables
		now := p.cfg.Now().UnixNano()
		if p.stamps != nil {
			if at := p.stamps.Received(); !at.IsZero() {
				p.cfg.OnInboundWait(time.Since(at)) // the kernel's clock, not cfg.Now
			}
		}
		// Find each datagram's SA, then open each run of one SA's packets
		// with one OpenBatch.
		k, keepalives := 0, 0
		for i := range n {
			d := msgs[i].Buf[:msgs[i].N]
			if len(d) == 1 && d[0] == esp.NATKeepalive {
				keepalives++
			}
			if s := p.inSA(t, d); s != nil {
				jobs[k], sas[k], idx[k] = esp.OpenJob{Pkt: d}, s, i
				k++
			}
		}
		for lo := 0; lo < k; {
			hi := lo + 1
			for hi < k && sas[hi] == sas[lo] {
				hi++
			}
			sas[lo].in.OpenBatch(jobs[lo:hi])
			lo = hi
		}
		wbufs = wbufs[:0]
		var rxPackets, rxBytes uint64
		for q := range k {
			j, s, i := &jobs[q], sas[q], idx[q]
			dummy := j.Err == esp.ErrDummy
			if j.Err != nil && !dummy {
				p.ctr.drops[esp.ReasonOf(j.Err)].Add(1)
				continue
			}
			payload := j.Payload
			peer := s.peer
			// Authenticated: this packet may move the peer's endpoint.
			peer.lastRecv.Store(now)
			if peer.follow && msgs[i].Addr != *peer.endpoint.Load() {
				ep := msgs[i].Addr
				peer.endpoint.Store(&ep)
				peer.ctr.endpointMoves.Add(1)
				p.ctr.endpointMoves.Add(1)
				p.log.Info("peer endpoint moved", "peer", peer.name, "endpoint", ep)
			}
			if dummy { // an authenticated keepalive: liveness, nothing to deliver
				p.ctr.dummiesRecv.Add(1)
				continue
			}
			s.packets.Add(1)
			s.bytes.Add(uint64(len(payload)))
			peer.ctr.rxPackets.Add(1)
			peer.ctr.rxBytes.Add(uint64(len(payload)))
			rxPackets++
			rxBytes += uint64(len(payload))
			// Open decrypted in place: the inner packet starts right after
			// the ESP header and IV, or, in transport mode, an IP header
			// written just before the segment.
			start := inOffset + s.in.HeaderLen()
			if isTransport(s.in.Mode()) {
				pkt := p.transportIn(bufs[i], start, payload, j.NextHeader, msgs[i].Addr.Addr())
				if pkt == nil {
					p.ctr.notIP.Add(1)
					continue
				}
				start -= len(pkt) - len(payload)
				payload = pkt
			}
			if p.local(peer, payload) {
				continue
			}
			src, _, ok := innerAddrs(payload)
			if !ok {
				p.ctr.notIP.Add(1)
				continue
			}
			if !allowed(peer.allowed.Load().list, src) {
				p.ctr.spoofed.Add(1)
				peer.ctr.spoofed.Add(1)
				continue
			}
			if sock, data, from, ok := p.socketFor(payload); sock != nil {
				if ok {
					sock.Deliver(data, from)
				}
				continue
			}
			// Re-slice so that the packet sits at MinOffset.
			wbufs = append(wbufs, bufs[i][start-MinOffset:start+len(payload)])
		}
		p.ctr.rxPackets.Add(rxPackets)
		p.ctr.rxBytes.Add(rxBytes)
		if len(wbufs) > 0 {
			if _, err := p.dev.Write(wbufs, MinOffset); err != nil {
				if p.closed() {
					return
				}
				p.ctr.deviceErrors.Add(1)
			}
		}
		// While more than coalesceAbove keepalives a second come in and
		// no ESP came for coalesceQuiet, the socket is quiet but for many
		// idle peers' keepalives. Then the socket leaves the runtime's
		// poller (udp.Conn.SetQuiet), and after a batch of nothing but
		// keepalives, not a full one, the reader lets more gather before
		// the next read: a P-CSCF holding 100,000 UEs (5,000 keepalives a
		// second) reads, and wakes, once per keepaliveCoalesce, not per
		// keepalive (docs/architecture.md, "Keepalives"). A packet that
		// arrives meanwhile waits at most that long. The first ESP packet,
		// or the rate falling, puts the socket back in the poller, where
		// an empty socket costs its reader nothing. Below the rate nothing
		// waits. The batch's clock reading serves for both.
		if k > 0 {
			lastESP = now
		}
		sparse := kaRate.add(keepalives, now) > coalesceAbove && now-lastESP > int64(coalesceQuiet)
		if p.quieter != nil && sparse != quiet {
			switch err := p.quieter.SetQuiet(sparse); {
			case err == nil:
				quiet, quietFailing = sparse, false
			case p.closed():
				return
			case !quietFailing: // it reads on in the mode it has; tried again next batch
				quietFailing = true
				p.log.Warn("the ESP socket cannot change its poller mode", "quiet", sparse, "err", err)
			}
		}
		if sparse && keepalives == n && n < batch && !coalesce.wait() {
			return
		}
	}
}

// rateWindow counts events per second: add returns the count of the last
// whole second (0 in the first). Times are Unix nanoseconds. Owned by one
// goroutine.
type rateWindow struct {
	start     int64
	cur, last int
}

func (r *rateWindow) add(n int, now int64) int {
	if d := time.Duration(now - r.start); d >= time.Second {
		r.last = r.cur
		if d >= 2*time.Second {
			r.last = 0 // a quiet second in between
		}
		r.start, r.cur = now, 0
	}
	r.cur += n
	return r.last
}

// inSA classifies a datagram (RFC 3948) and returns the inbound SA of an
// ESP packet, counting everything else.
func (p *Pump) inSA(t *peerTables, d []byte) *inSA {
	switch esp.Classify(d) {
	case esp.KindKeepalive:
		p.ctr.keepalivesRecv.Add(1)
		return nil
	case esp.KindNonESP:
		p.ctr.nonESP.Add(1)
		return nil
	case esp.KindInvalid:
		p.ctr.invalid.Add(1)
		return nil
	}
	spi, err := esp.PacketSPI(d)
	if err != nil {
		p.ctr.drops[esp.ReasonOf(err)].Add(1)
		return nil
	}
	s, _ := t.bySPI.get(spi)
	if s == nil && p.cfg.OnUnknownSPI != nil {
		s = p.installOnDemand(spi)
	}
	if s == nil {
		p.ctr.drops[esp.ReasonUnknownSPI].Add(1)
	}
	return s
}

// installOnDemand lets Config.OnUnknownSPI install spi's SA; nil if it
// did not. (The packet that asked still has to open under it: a forged one
// is dropped as any other.)
func (p *Pump) installOnDemand(spi esp.SPI) *inSA {
	// Installed since this packet looked (by another hook's call)?
	if s, _ := p.tables.bySPI.get(spi); s != nil {
		return s
	}
	if !p.cfg.OnUnknownSPI(spi) {
		return nil
	}
	s, _ := p.tables.bySPI.get(spi)
	return s
}

// local handles packets the Pump answers itself; true means consumed.
func (p *Pump) local(peer *Peer, pkt []byte) bool {
	if p.cfg.Intercept != nil && p.cfg.Intercept(peer, pkt) {
		p.ctr.intercepted.Add(1)
		return true
	}
	if id, seq, ok := parseEchoReply(pkt); ok && p.pingDone(id, seq) {
		return true
	}
	if p.cfg.EchoResponder.IsValid() {
		pb := getPacketBuf(len(pkt))
		defer putPacketBuf(pb)
		if reply := echoReplyFor((*pb)[:outOffset], pkt, p.cfg.EchoResponder); reply != nil {
			p.ctr.echoes.Add(1)
			if err := p.injectBuf(peer, reply[:cap(reply)], len(reply)-outOffset); err != nil {
				p.log.Debug("echo reply not sent", "peer", peer.name, "err", err)
			}
			return true
		}
	}
	return false
}
