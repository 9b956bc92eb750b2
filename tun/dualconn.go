package tun

import (
	"net"
	"net/netip"
	"sync"

	"github.com/imsec/imsec/tun/udp"
)

// DualConn is one PacketConn over two sockets: ESP in UDP (RFC 3948) and
// plain ESP in IP (tun/ipesp), so that one Pump serves peers of both kinds.
// A peer whose endpoint has port 0 is reached through the plain socket,
// any other through the UDP one; packets read from the plain socket carry
// port 0. NAT-keepalives (RFC 3948 §2.3) mean nothing on plain ESP and are
// not sent there.
//
// Each socket has a reader goroutine that fills a batch of its own and
// hands it to ReadBatch, which copies it out: a copy per packet that the
// single-socket path does not pay, so use a DualConn only where plain ESP
// is wanted. Close closes both sockets and waits for the readers. The UDP
// socket stays in the runtime's poller: a DualConn has no SetQuiet (its
// own readers, not the Pump's, wait on the sockets).
type DualConn struct {
	udp, raw PacketConn

	batches chan *dualBatch // written by the readers, read by ReadBatch
	stop    chan struct{}   // closed by Close
	wg      sync.WaitGroup  // the two readers
	once    sync.Once

	// The batch ReadBatch is copying out; only the ReadBatch goroutine
	// touches them.
	cur  *dualBatch
	next int
}

var _ PacketConn = (*DualConn)(nil)

// dualBatch is one read of one socket. The reader waits on done before
// it reuses msgs.
type dualBatch struct {
	msgs []udp.Message
	n    int
	err  error
	done chan struct{}
}

// NewDualConn combines a UDP socket and a plain ESP socket. It owns both
// from now on.
func NewDualConn(udpConn, rawConn PacketConn) *DualConn {
	d := &DualConn{udp: udpConn, raw: rawConn, batches: make(chan *dualBatch), stop: make(chan struct{})}
	d.wg.Add(2)
	go d.reader(udpConn)
	go d.reader(rawConn)
	return d
}

func (d *DualConn) reader(c PacketConn) {
	defer d.wg.Done()
	n := c.BatchSize()
	b := &dualBatch{msgs: make([]udp.Message, n), done: make(chan struct{})}
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, maxPacket)
	}
	for {
		for i := range b.msgs {
			b.msgs[i] = udp.Message{Buf: bufs[i]}
		}
		b.n, b.err = c.ReadBatch(b.msgs)
		select {
		case d.batches <- b:
		case <-d.stop:
			return
		}
		select {
		case <-b.done:
		case <-d.stop:
			return
		}
		if b.err != nil {
			select {
			case <-d.stop:
				return
			default: // transient: the Pump counts it and reads on
			}
		}
	}
}

// ReadBatch returns packets from either socket, at most a batch of one
// socket per call.
func (d *DualConn) ReadBatch(msgs []udp.Message) (int, error) {
	if d.cur == nil {
		select {
		case b := <-d.batches:
			d.cur, d.next = b, 0
		case <-d.stop:
			return 0, net.ErrClosed
		}
		if d.cur.err != nil {
			err := d.cur.err
			d.release()
			return 0, err
		}
	}
	k := 0
	for ; k < len(msgs) && d.next < d.cur.n; k++ {
		src := &d.cur.msgs[d.next]
		msgs[k].N = copy(msgs[k].Buf, src.Buf[:src.N])
		msgs[k].Addr = src.Addr
		d.next++
	}
	if d.next >= d.cur.n {
		d.release()
	}
	return k, nil
}

func (d *DualConn) release() {
	d.cur.done <- struct{}{}
	d.cur = nil
}

// WriteBatch sends each message through the socket its address picks
// (port 0: plain ESP), in runs that keep the order of each socket's
// messages.
func (d *DualConn) WriteBatch(msgs []udp.Message) (int, error) {
	sent := 0
	var first error
	for lo := 0; lo < len(msgs); {
		plain := msgs[lo].Addr.Port() == 0
		hi := lo + 1
		for hi < len(msgs) && (msgs[hi].Addr.Port() == 0) == plain {
			hi++
		}
		run := msgs[lo:hi]
		c := d.udp
		if plain {
			c = d.raw
			if len(run) == 1 && run[0].N == 1 && run[0].Buf[0] == 0xff {
				// A NAT-keepalive: not for plain ESP.
				sent++
				lo = hi
				continue
			}
		}
		n, err := c.WriteBatch(run)
		sent += n
		if err != nil && first == nil {
			first = err
		}
		lo = hi
	}
	return sent, first
}

// BatchSize is the UDP socket's.
func (d *DualConn) BatchSize() int { return max(d.udp.BatchSize(), d.raw.BatchSize()) }

// LocalAddr is the UDP socket's address.
func (d *DualConn) LocalAddr() netip.AddrPort { return d.udp.LocalAddr() }

// PlainAddr is the plain ESP socket's address (port 0).
func (d *DualConn) PlainAddr() netip.AddrPort { return d.raw.LocalAddr() }

// Close closes both sockets and waits for the readers.
func (d *DualConn) Close() error {
	var err error
	d.once.Do(func() {
		close(d.stop)
		err = d.udp.Close()
		if e := d.raw.Close(); err == nil {
			err = e
		}
		d.wg.Wait()
	})
	return err
}
