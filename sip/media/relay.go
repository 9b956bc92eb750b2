package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ListenFunc opens a UDP socket bound to laddr (port 0: a free port). It
// is where one side of a relay session lives: tun.Netstack's ListenUDP for
// a socket inside a UE's tunnel, ListenKernel for the host's network.
type ListenFunc func(laddr netip.AddrPort) (net.PacketConn, error)

// ListenKernel opens a kernel UDP socket.
func ListenKernel(laddr netip.AddrPort) (net.PacketConn, error) {
	network := "udp4"
	if laddr.Addr().Is6() {
		network = "udp6"
	}
	return net.ListenUDP(network, net.UDPAddrFromAddrPort(laddr))
}

var _ ListenFunc = ListenKernel

// Leg is one side of a relay session.
type Leg struct {
	Listen ListenFunc     // nil: ListenKernel
	Local  netip.AddrPort // address to bind; port 0 picks a free port
	// Peer is the only source accepted on this leg, and where datagrams
	// arriving on the other leg are sent. The zero value latches the
	// source of the first datagram that arrives (see Session).
	Peer netip.AddrPort
}

// Relay is the media relay of a P-CSCF: for each media stream of a call it
// allocates a Session, a pair of UDP sockets (legs A and B) that forward
// datagrams both ways. Leg A faces the UE (its socket can live inside the
// UE's media tunnel), leg B faces the far relay (the other server's
// Session, whose leg B faces ours). The relay reads nothing of what it
// forwards: RTP, RTCP and anything else in UDP pass alike.
type Relay struct {
	log *slog.Logger

	mu       sync.Mutex
	sessions map[*Session]struct{} // guarded by mu
	closed   bool                  // guarded by mu
	// ended is the sum of the sessions closed so far (guarded by mu):
	// with the live sessions' counters it makes Stats.
	ended DirectionStats
}

// Stats returns the relay's totals since it started: both directions of
// every session, the closed ones included.
func (r *Relay) Stats() DirectionStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.ended
	for s := range r.sessions {
		st := s.Stats()
		t.add(st.AToB)
		t.add(st.BToA)
	}
	return t
}

func (d *DirectionStats) add(o DirectionStats) {
	d.Packets += o.Packets
	d.Bytes += o.Bytes
	d.Unexpected += o.Unexpected
	d.NoPeer += o.NoPeer
	d.WriteErrors += o.WriteErrors
	d.ReadErrors += o.ReadErrors
}

// ErrRelayClosed is returned by Allocate after Close.
var ErrRelayClosed = errors.New("media: relay closed")

// NewRelay returns a relay with no sessions. log may be nil (no logging);
// the relay logs sessions opening and closing, never datagrams.
func NewRelay(log *slog.Logger) *Relay {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{log: log, sessions: map[*Session]struct{}{}}
}

// Session forwards datagrams between its two legs, each read by its own
// goroutine:
//
//   - a datagram that arrives on leg A from A's peer is sent from leg B to
//     B's peer, and the other way round;
//   - one from another source is dropped (counted Unexpected);
//   - one that has nowhere to go yet, B's peer being unknown, is dropped
//     (counted NoPeer).
//
// A leg whose peer is not known latches the source of the first datagram
// it receives; until SetPeer or that first datagram, anyone may take the
// leg. Inside a UE's tunnel only the UE can reach leg A anyway (ESP
// authenticates it); on the inter-server leg give the far relay's address
// from its SDP with SetPeerB when it is known, and latching only covers
// the time before.
type Session struct {
	relay *Relay
	legs  [2]sessionLeg
	stats [2]directionCounters // [0]: A to B, [1]: B to A
	wg    sync.WaitGroup

	stopMu sync.Mutex
	stop   func() bool // stops the context's AfterFunc
	once   sync.Once
	err    error
}

type sessionLeg struct {
	conn  packetConn
	local netip.AddrPort
	peer  atomic.Pointer[netip.AddrPort] // nil: not known yet
}

type directionCounters struct {
	packets, bytes, unexpected, noPeer, writeErrors, readErrors atomic.Uint64
}

// DirectionStats counts one direction of a Session.
type DirectionStats struct {
	Packets     uint64 `json:"packets"`      // forwarded
	Bytes       uint64 `json:"bytes"`        // forwarded UDP payload octets
	Unexpected  uint64 `json:"unexpected"`   // dropped: not from the arrival leg's peer
	NoPeer      uint64 `json:"no_peer"`      // dropped: the departure leg's peer unknown
	WriteErrors uint64 `json:"write_errors"` // dropped: the send failed
	ReadErrors  uint64 `json:"read_errors"`  // failed reads (the datagram, if any, is lost)
}

// SessionStats counts both directions of a Session.
type SessionStats struct {
	AToB DirectionStats `json:"a_to_b"`
	BToA DirectionStats `json:"b_to_a"`
}

// Allocate opens the two legs of a new session and starts forwarding. The
// session lives until its Close, the relay's Close, or the end of ctx
// (give it the call's context).
func (r *Relay) Allocate(ctx context.Context, a, b Leg) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &Session{relay: r}
	for i, l := range [2]Leg{a, b} {
		listen := l.Listen
		if listen == nil {
			listen = ListenKernel
		}
		c, err := listen(l.Local)
		if err != nil {
			if i == 1 {
				s.legs[0].conn.Close()
			}
			return nil, fmt.Errorf("media: relay leg %c on %v: %w", 'A'+i, l.Local, err)
		}
		s.legs[i].conn = newPacketConn(c)
		s.legs[i].local = s.legs[i].conn.localAddrPort()
		if l.Peer.IsValid() {
			s.setPeer(i, l.Peer)
		}
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		s.legs[0].conn.Close()
		s.legs[1].conn.Close()
		return nil, ErrRelayClosed
	}
	r.sessions[s] = struct{}{}
	r.mu.Unlock()

	s.wg.Add(2)
	go s.forward(0, 1)
	go s.forward(1, 0)
	stop := context.AfterFunc(ctx, func() { s.Close() })
	s.stopMu.Lock()
	s.stop = stop
	s.stopMu.Unlock()
	r.log.Debug("media relay session open", "a", s.legs[0].local, "b", s.legs[1].local, "peer_a", a.Peer, "peer_b", b.Peer)
	return s, nil
}

// forward moves datagrams arriving on leg from to leg to, until the
// session closes.
func (s *Session) forward(from, to int) {
	defer s.wg.Done()
	in, out := &s.legs[from], &s.legs[to]
	st := &s.stats[from]
	buf := make([]byte, 64<<10)
	for {
		n, src, err := in.conn.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A failing socket must not spin a core.
			st.readErrors.Add(1)
			time.Sleep(time.Millisecond)
			continue
		}
		peer := in.peer.Load()
		if peer == nil {
			latched := src
			if !in.peer.CompareAndSwap(nil, &latched) {
				peer = in.peer.Load()
			} else {
				peer = &latched
			}
		}
		if *peer != src {
			st.unexpected.Add(1)
			continue
		}
		dst := out.peer.Load()
		if dst == nil {
			st.noPeer.Add(1)
			continue
		}
		if _, err := out.conn.write(buf[:n], *dst); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			st.writeErrors.Add(1)
			continue
		}
		st.packets.Add(1)
		st.bytes.Add(uint64(n))
	}
}

func (s *Session) setPeer(i int, p netip.AddrPort) {
	p = netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
	s.legs[i].peer.Store(&p)
}

func (s *Session) peer(i int) netip.AddrPort {
	if p := s.legs[i].peer.Load(); p != nil {
		return *p
	}
	return netip.AddrPort{}
}

// LocalA is leg A's socket address, the one to give the UE (in the SDP)
// as where to send its media. An unspecified bind address reads as such:
// the caller knows which of its addresses the UE reaches.
func (s *Session) LocalA() netip.AddrPort { return s.legs[0].local }

// LocalB is leg B's socket address, the one to give the far relay.
func (s *Session) LocalB() netip.AddrPort { return s.legs[1].local }

// PeerA is leg A's peer (the UE's media address), zero if not known yet.
func (s *Session) PeerA() netip.AddrPort { return s.peer(0) }

// PeerB is leg B's peer (the far relay's address), zero if not known yet.
func (s *Session) PeerB() netip.AddrPort { return s.peer(1) }

// SetPeerA sets leg A's peer, replacing a latched or earlier one.
func (s *Session) SetPeerA(p netip.AddrPort) { s.setPeer(0, p) }

// SetPeerB sets leg B's peer, replacing a latched or earlier one.
func (s *Session) SetPeerB(p netip.AddrPort) { s.setPeer(1, p) }

// Stats returns the session's counters.
func (s *Session) Stats() SessionStats {
	get := func(c *directionCounters) DirectionStats {
		return DirectionStats{
			Packets: c.packets.Load(), Bytes: c.bytes.Load(), Unexpected: c.unexpected.Load(),
			NoPeer: c.noPeer.Load(), WriteErrors: c.writeErrors.Load(), ReadErrors: c.readErrors.Load(),
		}
	}
	return SessionStats{AToB: get(&s.stats[0]), BToA: get(&s.stats[1])}
}

// Close closes both legs' sockets and waits for the forwarding goroutines
// to end. It is safe to call more than once and from several goroutines.
func (s *Session) Close() error {
	s.once.Do(func() {
		s.stopMu.Lock()
		stop := s.stop
		s.stopMu.Unlock()
		if stop != nil {
			stop()
		}
		s.err = errors.Join(s.legs[0].conn.Close(), s.legs[1].conn.Close())
		s.wg.Wait()
		st := s.Stats()
		s.relay.mu.Lock()
		if _, live := s.relay.sessions[s]; live {
			delete(s.relay.sessions, s)
			s.relay.ended.add(st.AToB)
			s.relay.ended.add(st.BToA)
		}
		s.relay.mu.Unlock()
		s.relay.log.Debug("media relay session closed", "a", s.legs[0].local, "b", s.legs[1].local,
			"a_to_b_packets", st.AToB.Packets, "b_to_a_packets", st.BToA.Packets,
			"dropped", st.AToB.Unexpected+st.AToB.NoPeer+st.BToA.Unexpected+st.BToA.NoPeer)
	})
	return s.err
}

// Len is the number of open sessions.
func (r *Relay) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Close closes every session and makes Allocate fail from then on.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.closed = true
	sessions := make([]*Session, 0, len(r.sessions))
	for s := range r.sessions {
		sessions = append(sessions, s)
	}
	r.mu.Unlock()
	var errs []error
	for _, s := range sessions {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}
