package sip

import (
	"sync"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
)

// lazySAs keeps the inbound SAs of the P-CSCF's SA sets out of the pump's
// tables until a packet arrives for one of them: a challenge costs a map
// entry here, not a copy of the pump's SPI table, and only the holder of
// the keys can make that first packet authentic (the pump still checks
// it). The pump asks through tun.Config.OnUnknownSPI (install), on its
// inbound goroutine.
//
// Lock order: Server.mu, then lazySAs.mu, then the pump's own; install
// takes only lazySAs.mu and the pump's, never Server.mu.
type lazySAs struct {
	pump *tun.Pump

	mu sync.Mutex
	// Guarded by mu: the SAs added and not yet installed or removed.
	waiting map[esp.SPI]lazySA
}

type lazySA struct {
	peer *tun.Peer
	in   *esp.Inbound
}

var _ saPump = (*lazySAs)(nil)

func newLazySAs() *lazySAs { return &lazySAs{waiting: map[esp.SPI]lazySA{}} }

// AddInbound registers an SA to install on its first packet.
func (l *lazySAs) AddInbound(peer *tun.Peer, in *esp.Inbound) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waiting[in.SPI()] = lazySA{peer: peer, in: in}
	return nil
}

// RemoveInbound forgets an SA, waiting or installed.
func (l *lazySAs) RemoveInbound(spi esp.SPI) error {
	l.mu.Lock()
	_, waited := l.waiting[spi]
	delete(l.waiting, spi)
	l.mu.Unlock()
	if waited {
		return nil
	}
	return l.pump.RemoveInbound(spi)
}

// InboundPackets is the pump's count (0 for an SA not installed yet).
func (l *lazySAs) InboundPackets(spi esp.SPI) (uint64, bool) {
	return l.pump.InboundPackets(spi)
}

// install is the pump's OnUnknownSPI: it installs spi's SA if one waits.
// Holding mu across AddInbound orders it with RemoveInbound: an SA removed
// is never installed afterwards.
func (l *lazySAs) install(spi esp.SPI) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	sa, ok := l.waiting[spi]
	if !ok {
		return false
	}
	delete(l.waiting, spi)
	return l.pump.AddInbound(sa.peer, sa.in) == nil
}

// len is how many SAs wait.
func (l *lazySAs) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.waiting)
}
