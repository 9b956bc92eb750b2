package tun

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/inet"
)

// Socket is a UDP socket on a Pump's inner side, outside the Device: the
// Pump hands it the datagrams for its address and port straight from the
// inbound path (after the SA and the source check), and WriteTo seals a
// datagram to the peer whose routes hold the destination, in the caller's
// goroutine. A gateway's protected SIP ports use it: a datagram costs a
// copy and a channel send instead of a trip through a network stack and
// its locks (docs/architecture.md, "Protected SIP without the netstack").
//
// Only whole, unfragmented datagrams with a good checksum, and for IPv6 no
// extension header, take this path; anything else still goes to the Device,
// so a stack behind it may reassemble a fragmented one and give it back
// with Deliver. Safe for concurrent use.
type Socket struct {
	p     *Pump
	local netip.AddrPort
	in    chan datagram // bounded: a full queue drops (counted in Drops)
	done  chan struct{} // closed by Close
	once  sync.Once

	// deadline is the read deadline in Unix nanoseconds (0: none);
	// rewake tells a blocked ReadFrom that it changed.
	deadline atomic.Int64
	rewake   chan struct{}

	delivered, dropped atomic.Uint64
}

type datagram struct {
	b    []byte
	from netip.AddrPort
	buf  *[]byte // b's buffer when it came from datagramBufs
}

// pooledDatagram is the largest datagram whose copy comes from
// datagramBufs: a SIP message over UDP fits (RFC 3261 §18.1.1 keeps them
// under the path MTU), a reassembled one may not.
const pooledDatagram = 2048

// datagramBufs recycles the copies Deliver makes: the reader gives a buffer
// back once it copied the datagram out.
var datagramBufs = sync.Pool{New: func() any { b := make([]byte, 0, pooledDatagram); return &b }}

// socketQueue is how many datagrams wait for a Socket's reader: a burst of
// registrations' REGISTERs, as a kernel socket's receive buffer would hold.
const socketQueue = 4096

var _ net.PacketConn = (*Socket)(nil)

// ErrSocketInUse is returned by ListenUDP for an address and port that
// already have a Socket.
var ErrSocketInUse = errors.New("tun: inner UDP address already in use")

// ListenUDP opens a Socket at ap, a specific inner address and port.
func (p *Pump) ListenUDP(ap netip.AddrPort) (*Socket, error) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if !ap.Addr().IsValid() || ap.Addr().IsUnspecified() || ap.Port() == 0 {
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: net.UDPAddrFromAddrPort(ap), Err: errors.New("a Socket needs a specific address and port")}
	}
	if p.closed() {
		return nil, ErrClosedPump
	}
	s := &Socket{p: p, local: ap, in: make(chan datagram, socketQueue), done: make(chan struct{}), rewake: make(chan struct{}, 1)}
	p.socketsMu.Lock()
	defer p.socketsMu.Unlock()
	old := p.sockets.Load()
	var cur []*Socket
	if old != nil {
		cur = *old
	}
	for _, o := range cur {
		if o.local == ap {
			return nil, ErrSocketInUse
		}
	}
	next := append(slices.Clone(cur), s)
	p.sockets.Store(&next)
	return s, nil
}

// socketFor returns the Socket an inbound inner packet is for and the UDP
// payload and source, or nil when it is not one (the Device takes it).
// Damaged datagrams for a Socket are counted and dropped (ok false).
func (p *Pump) socketFor(pkt []byte) (s *Socket, payload []byte, from netip.AddrPort, ok bool) {
	list := p.sockets.Load()
	if list == nil || len(pkt) == 0 {
		return nil, nil, from, true
	}
	var src, dst netip.Addr
	var seg []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 || pkt[9] != protoUDP {
			return nil, nil, from, true
		}
		ihl := int(pkt[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		frag := binary.BigEndian.Uint16(pkt[6:]) & 0x3fff // MF and the offset
		if ihl < 20 || total < ihl+8 || total > len(pkt) || frag != 0 {
			return nil, nil, from, true
		}
		src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		seg = pkt[ihl:total]
	case 6:
		if len(pkt) < 48 || pkt[6] != protoUDP {
			return nil, nil, from, true
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:]))
		if plen < 8 || 40+plen > len(pkt) {
			return nil, nil, from, true
		}
		src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		seg = pkt[40 : 40+plen]
	default:
		return nil, nil, from, true
	}
	to := netip.AddrPortFrom(dst, binary.BigEndian.Uint16(seg[2:]))
	for _, c := range *list {
		if c.local == to {
			s = c
			break
		}
	}
	if s == nil {
		return nil, nil, from, true
	}
	// The UDP length may be shorter than the IP payload (the rest is
	// ignored, as Linux does), never longer. A zero checksum is "none" over
	// IPv4 only (RFC 768, RFC 8200 §8.1).
	ulen := int(binary.BigEndian.Uint16(seg[4:]))
	if ulen < 8 || ulen > len(seg) {
		s.dropped.Add(1)
		return s, nil, from, false
	}
	seg = seg[:ulen]
	if !(src.Is4() && seg[6] == 0 && seg[7] == 0) && pseudoChecksum(seg, protoUDP, src, dst) != 0 {
		s.dropped.Add(1)
		return s, nil, from, false
	}
	return s, seg[8:], netip.AddrPortFrom(src, binary.BigEndian.Uint16(seg)), true
}

// Deliver queues a datagram for the reader as if it had come through the
// Pump: how a stack behind the Device hands back what it reassembled. It
// copies b; false means dropped (queue full or closed).
func (s *Socket) Deliver(b []byte, from netip.AddrPort) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	d := datagram{from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}
	if len(b) <= pooledDatagram {
		d.buf = datagramBufs.Get().(*[]byte)
		d.b = append((*d.buf)[:0], b...)
	} else {
		d.b = append([]byte(nil), b...)
	}
	select {
	case s.in <- d:
		s.delivered.Add(1)
		return true
	default:
		d.free()
		s.dropped.Add(1)
		return false
	}
}

// ReadFromUDPAddrPort reads the next datagram into b (a longer one is
// truncated, as a UDP socket's read is).
func (s *Socket) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		var expired <-chan time.Time
		var t *time.Timer
		if dl := s.deadline.Load(); dl != 0 {
			wait := time.Until(time.Unix(0, dl))
			if wait <= 0 {
				return 0, netip.AddrPort{}, s.opError("read", os.ErrDeadlineExceeded)
			}
			t = time.NewTimer(wait)
			expired = t.C
		}
		var d datagram
		err := error(nil)
		select {
		case d = <-s.in:
		case <-s.done:
			err = net.ErrClosed
		case <-s.p.stop:
			err = net.ErrClosed
		case <-expired:
			err = os.ErrDeadlineExceeded
		case <-s.rewake:
			// The deadline moved: look again.
			if t != nil {
				t.Stop()
			}
			continue
		}
		if t != nil {
			t.Stop()
		}
		if err != nil {
			return 0, netip.AddrPort{}, s.opError("read", err)
		}
		n := copy(b, d.b)
		d.free()
		return n, d.from, nil
	}
}

// free gives d's buffer back to datagramBufs.
func (d *datagram) free() {
	if d.buf != nil {
		*d.buf = d.b[:0]
		datagramBufs.Put(d.buf)
		d.buf, d.b = nil, nil
	}
}

// ReadFrom is ReadFromUDPAddrPort with a *net.UDPAddr.
func (s *Socket) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := s.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// WriteToUDPAddrPort sends b to addr inside the tunnel of the peer whose
// routes hold addr.
func (s *Socket) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	select {
	case <-s.done:
		return 0, s.opError("write", net.ErrClosed)
	default:
	}
	dst := addr.Addr().Unmap()
	if dst.Is4() != s.local.Addr().Is4() {
		return 0, s.opError("write", errors.New("destination of another address family"))
	}
	hl := 20
	if dst.Is6() {
		hl = 40
	}
	if hl+8+len(b) > maxPacket-outOffset-esp.TailRoom {
		return 0, s.opError("write", errors.New("datagram too long"))
	}
	peer := s.p.tables.route(dst)
	if peer == nil {
		s.p.ctr.noRoute.Add(1)
		return 0, s.opError("write", errors.New("no tunnel routes "+dst.String()))
	}
	// The packet at outOffset, with room for the ESP header before it and
	// the trailer after it (injectBuf seals in place).
	pb := getPacketBuf(hl + 8 + len(b))
	defer putPacketBuf(pb)
	buf, err := inet.AppendUDP((*pb)[:outOffset], s.local, netip.AddrPortFrom(dst, addr.Port()), b)
	if err != nil {
		return 0, s.opError("write", err)
	}
	n := len(buf) - outOffset
	buf = buf[:cap(buf)]
	if err := s.p.injectBuf(peer, buf, n); err != nil {
		return 0, s.opError("write", err)
	}
	return len(b), nil
}

// WriteTo is WriteToUDPAddrPort with a *net.UDPAddr.
func (s *Socket) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, s.opError("write", errors.New("not a UDP address"))
	}
	return s.WriteToUDPAddrPort(b, ua.AddrPort())
}

// Close closes the Socket: a blocked read returns, and the Pump gives its
// datagrams to the Device again. Idempotent.
func (s *Socket) Close() error {
	s.once.Do(func() {
		close(s.done)
		p := s.p
		p.socketsMu.Lock()
		defer p.socketsMu.Unlock()
		if cur := p.sockets.Load(); cur != nil {
			next := slices.DeleteFunc(slices.Clone(*cur), func(o *Socket) bool { return o == s })
			p.sockets.Store(&next)
		}
	})
	return nil
}

// LocalAddr is the Socket's address.
func (s *Socket) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(s.local) }

// SetDeadline sets the read deadline: writes never wait.
func (s *Socket) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline makes reads fail with os.ErrDeadlineExceeded from t on
// (the zero time: never), a read already blocked included.
func (s *Socket) SetReadDeadline(t time.Time) error {
	var v int64
	if !t.IsZero() {
		v = max(t.UnixNano(), 1)
	}
	s.deadline.Store(v)
	select {
	case s.rewake <- struct{}{}:
	default:
	}
	return nil
}

// SetWriteDeadline does nothing: a write seals and sends without waiting
// for a reader.
func (s *Socket) SetWriteDeadline(time.Time) error { return nil }

// SocketCounters are a Socket's datagrams: handed to the reader, and
// dropped (a full queue, a bad checksum or length).
type SocketCounters struct{ Delivered, Dropped uint64 }

// Counters returns the Socket's counters.
func (s *Socket) Counters() SocketCounters {
	return SocketCounters{Delivered: s.delivered.Load(), Dropped: s.dropped.Load()}
}

func (s *Socket) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: net.UDPAddrFromAddrPort(s.local), Err: err}
}
