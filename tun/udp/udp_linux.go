//go:build linux

package udp

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/imsec/imsec/internal/cmsg"
)

// Linux: recvmmsg(2) and sendmmsg(2) called directly on a socket that can
// leave the runtime's poller (sock, sock_linux.go); nothing is allocated per
// datagram (no *net.UDPAddr: addresses are written and read as raw
// sockaddrs in buffers made once).
//
// Segmentation offload (udp(7), Linux 4.18 and 5.0): WriteBatch sends a run
// of consecutive datagrams to one address, all of one size but the last
// (which may be shorter), as one super-datagram with a UDP_SEGMENT control
// message; the kernel cuts it into the original datagrams, at the device
// or not at all when the path is loopback or a veth whose receiver takes
// the run whole. No bytes are copied: each datagram is one iovec. With
// UDP_GRO set, the kernel may hand ReadBatch such a run (from GSO, or
// coalesced by GRO) as one buffer with its segment size in a control
// message; ReadBatch splits it back. If the kernel refuses segmentation
// (EIO: the device cannot checksum), the socket stops using it and sends
// the datagrams one by one; a run it refuses for another reason (EINVAL:
// a segment above the path MTU) is sent again one datagram at a time, so
// each datagram meets the fate it would have met alone.

// Kernel limits of UDP segmentation (include/linux/udp.h, net/ipv4/udp.c).
const (
	maxSegments   = 64                 // UDP_MAX_SEGMENTS
	maxUDPPayload = 1<<16 - 1 - 20 - 8 // one IPv4 datagram
	maxUDP6Pay    = 1<<16 - 1 - 8      // one IPv6 datagram (payload length excludes the header)
	maxDatagram   = 1<<16 - 1          // receive buffer of one (coalesced) datagram
	segCtrlLen    = 2                  // UDP_SEGMENT carries a __u16
	groCtrlLen    = 4                  // UDP_GRO delivers an int
	sockaddrLen   = unix.SizeofSockaddrInet6
)

// groBuffers is how many (coalesced) datagrams one receive takes with GRO
// on: 2 MiB of buffers, made on the first ReadBatch.
const groBuffers = 32

// mmsghdr is struct mmsghdr: the C padding after msg_len matches Go's.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// platform is the Linux batch path.
type platform struct {
	rc     *sock
	is6    bool           // AF_INET6 socket
	remote netip.AddrPort // of a connected socket: sent to without an address

	gso     atomic.Bool // UDP_SEGMENT on send; cleared if the kernel refuses it
	gro     bool        // UDP_GRO on receive
	stamped bool        // SO_TIMESTAMPNS: the first message of each receive carries its time

	r  reader
	wm sync.Mutex // WriteBatch may be called from several goroutines
	w  writer
}

// reader is the state of ReadBatch (one goroutine at a time).
type reader struct {
	hs    []mmsghdr
	iov   []unix.Iovec
	names []byte // sockaddrLen per message
	ctrl  []byte // control space per message (GRO)

	// With GRO, datagrams land in bufs (ours) and are handed out one
	// segment at a time; pending ones survive until the next ReadBatch.
	bufs [][]byte
	m    int       // messages from the last recvmmsg
	next int       // next message to hand out
	off  int       // bytes of message next already handed out
	at   time.Time // kernel receive time of the last recvmmsg's first message

	// the syscall's in- and outputs, for the method value below
	vlen  int
	got   int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// writer is the state of WriteBatch (under platform.wm).
type writer struct {
	hs    []mmsghdr
	iov   []unix.Iovec
	names []byte
	ctrl  []byte
	first []int // first message of each mmsghdr; first[k+1] ends it

	at, vlen int
	sent     int
	errno    syscall.Errno
	fn       func(fd uintptr) bool
}

// ctrlSpace is one received message's control space: a UDP_GRO segment
// size and a receive time (≥ CmsgSpace(segCtrlLen) for sends).
var ctrlSpace = unix.CmsgSpace(groCtrlLen) + unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))

func (p *platform) init(c *net.UDPConn, remote netip.AddrPort) error {
	p.remote = remote
	p.is6 = c.LocalAddr().(*net.UDPAddr).IP.To4() == nil
	s, err := newSock(c)
	if err != nil {
		return err
	}
	p.rc = s
	p.rc.Control(func(fd uintptr) {
		// Beyond net.core.[rw]mem_max when we may (CAP_NET_ADMIN);
		// Listen has already asked for the same within the limit.
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketBuffer)
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer)
		if _, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
			p.gso.Store(true)
		}
		p.gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})

	r := &p.r
	r.hs = make([]mmsghdr, DefaultBatch)
	r.iov = make([]unix.Iovec, DefaultBatch)
	r.names = make([]byte, DefaultBatch*sockaddrLen)
	r.ctrl = make([]byte, max(groBuffers, DefaultBatch)*ctrlSpace)
	r.fn = r.recvmmsg

	w := &p.w
	w.hs = make([]mmsghdr, DefaultBatch)
	w.iov = make([]unix.Iovec, DefaultBatch)
	w.names = make([]byte, DefaultBatch*sockaddrLen)
	w.ctrl = make([]byte, DefaultBatch*ctrlSpace)
	w.first = make([]int, DefaultBatch+1)
	w.fn = w.sendmmsg
	return nil
}

func (p *platform) close() error { return p.rc.Close() }

func (p *platform) conn() syscall.Conn { return p.rc }

func (p *platform) setQuiet(quiet bool) error { return p.rc.setQuiet(quiet) }

func (p *platform) setReadDeadline(t time.Time) error {
	p.rc.setReadDeadline(t)
	return nil
}

func (p *platform) batchSize() int { return DefaultBatch }

func (p *platform) stamp() bool {
	p.stamped = cmsg.StampReceived(p.rc)
	return p.stamped
}

func (p *platform) received() time.Time { return p.r.at }

func (p *platform) offload() (gso, gro bool) { return p.gso.Load(), p.gro }

// ---- receive ----

// recvmmsg and sendmmsg call the kernel with RawSyscall6: with
// MSG_DONTWAIT they never block, so the runtime need not be told
// (entersyscall). Told, its monitor thread polls while such calls run and
// hands their P to another thread, a wakeup per call at thousands of calls
// a second (docs/architecture.md, "System calls and request goroutines").
func (r *reader) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])), uintptr(r.vlen), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait in ppoll
		}
		r.got, r.errno = int(n), e
		return true
	}
}

// prepare points message i at buf (and at control space if ctrl).
func (r *reader) prepare(i int, buf []byte, ctrl bool) {
	h := &r.hs[i].hdr
	*h = unix.Msghdr{}
	if len(buf) > 0 {
		r.iov[i].Base = &buf[0]
		r.iov[i].SetLen(len(buf))
		h.Iov = &r.iov[i]
		h.SetIovlen(1)
	}
	h.Name = &r.names[i*sockaddrLen]
	h.Namelen = sockaddrLen
	if ctrl {
		h.Control = &r.ctrl[i*ctrlSpace]
		h.SetControllen(ctrlSpace)
	}
	r.hs[i].n = 0
}

// recv runs recvmmsg on the first vlen prepared messages.
func (p *platform) recv(vlen int) (int, error) {
	r := &p.r
	r.vlen = vlen
	if err := p.rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	return r.got, nil
}

func (p *platform) readBatch(msgs []Message) (int, error) {
	if !p.gro {
		k := min(len(msgs), len(p.r.hs))
		for i := range k {
			// The first message's control space takes the batch's time.
			p.r.prepare(i, msgs[i].Buf, i == 0 && p.stamped)
		}
		n, err := p.recv(k)
		if err != nil {
			return 0, err
		}
		if p.stamped && n > 0 {
			p.r.at = p.r.time(0)
		}
		for i := range n {
			msgs[i].N = int(p.r.hs[i].n)
			msgs[i].Addr = p.r.addr(i)
		}
		return n, nil
	}
	r := &p.r
	if r.bufs == nil {
		r.bufs = make([][]byte, groBuffers)
		for i := range r.bufs {
			r.bufs[i] = make([]byte, maxDatagram)
		}
	}
	if r.next >= r.m {
		for i := range r.bufs {
			r.prepare(i, r.bufs[i], true)
		}
		n, err := p.recv(len(r.bufs))
		if err != nil {
			return 0, err
		}
		r.m, r.next, r.off = n, 0, 0
		if p.stamped && n > 0 {
			r.at = r.time(0)
		}
	}
	k := 0
	for k < len(msgs) && r.next < r.m {
		i := r.next
		total := int(r.hs[i].n)
		seg := r.segment(i)
		if seg <= 0 || seg > total {
			seg = total
		}
		end := min(r.off+seg, total)
		msgs[k].N = copy(msgs[k].Buf, r.bufs[i][r.off:end])
		msgs[k].Addr = r.addr(i)
		k++
		if r.off = end; r.off >= total {
			r.next, r.off = r.next+1, 0
		}
	}
	return k, nil
}

// segment returns the UDP_GRO segment size of message i, or 0.
func (r *reader) segment(i int) int {
	data := cmsg.Find(r.ctrlOf(i), unix.SOL_UDP, unix.UDP_GRO)
	switch {
	case len(data) >= 4:
		return int(binary.NativeEndian.Uint32(data))
	case len(data) >= 2:
		return int(binary.NativeEndian.Uint16(data))
	}
	return 0
}

// time returns the SO_TIMESTAMPNS receive time of message i, or zero.
func (r *reader) time(i int) time.Time { return cmsg.ReceiveTime(r.ctrlOf(i)) }

// ctrlOf is message i's control data as the kernel filled it (nil
// without control space).
func (r *reader) ctrlOf(i int) []byte {
	h := &r.hs[i].hdr
	if h.Control == nil {
		return nil
	}
	return r.ctrl[i*ctrlSpace : i*ctrlSpace+min(int(h.Controllen), ctrlSpace)]
}

// addr decodes the source sockaddr of message i.
func (r *reader) addr(i int) netip.AddrPort {
	b := r.names[i*sockaddrLen : (i+1)*sockaddrLen]
	port := binary.BigEndian.Uint16(b[2:4])
	switch binary.NativeEndian.Uint16(b[0:2]) {
	case unix.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
	case unix.AF_INET6:
		return unmap(netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), port))
	}
	return netip.AddrPort{}
}

// ---- send ----

func (w *writer) sendmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hs[w.at])), uintptr(w.vlen), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		w.sent, w.errno = int(n), e
		return true
	}
}

var errAddrFamily = errors.New("udp: destination address family does not match the socket")

// putAddr writes ap as the socket family's sockaddr at b and returns its
// length, or 0 if the socket cannot send there.
func (p *platform) putAddr(b []byte, ap netip.AddrPort) int {
	a := ap.Addr()
	if !p.is6 {
		a = a.Unmap()
		if !a.Is4() {
			return 0
		}
		binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:4], ap.Port())
		a4 := a.As4()
		copy(b[4:8], a4[:])
		clear(b[8:16])
		return unix.SizeofSockaddrInet4
	}
	if !a.IsValid() || a.Zone() != "" {
		return 0
	}
	binary.NativeEndian.PutUint16(b[0:2], unix.AF_INET6)
	binary.BigEndian.PutUint16(b[2:4], ap.Port())
	clear(b[4:8])
	a16 := a.As16()
	copy(b[8:24], a16[:])
	clear(b[24:28])
	return unix.SizeofSockaddrInet6
}

// pack fills w with mmsghdrs for msgs, at most len(w.hs) of them, merging
// runs into segmented sends if gso. It returns the number of mmsghdrs and
// of messages they cover; bad means that the message after those has an
// address the socket cannot send to.
func (p *platform) pack(msgs []Message, gso bool) (vlen, covered int, bad bool) {
	w := &p.w
	i := 0
	for vlen < len(w.hs) && i < len(msgs) && i < len(w.iov) {
		m := &msgs[i]
		h := &w.hs[vlen].hdr
		*h = unix.Msghdr{Iov: &w.iov[i]}
		if !p.remote.IsValid() || m.Addr != p.remote {
			name := w.names[vlen*sockaddrLen : (vlen+1)*sockaddrLen]
			nl := p.putAddr(name, m.Addr)
			if nl == 0 {
				bad = true
				break
			}
			h.Name, h.Namelen = &name[0], uint32(nl)
		}
		w.hs[vlen].n = 0
		w.first[vlen] = i
		limit := maxUDPPayload // an IPv4 destination, also on a dual-stack socket
		if p.is6 && !m.Addr.Addr().Unmap().Is4() {
			limit = maxUDP6Pay
		}
		seg, total, count := m.N, m.N, 1
		w.setIov(i, m)
		i++
		// Merge the run that follows: same address, same size (the last
		// may be shorter), within the kernel's limits.
		for gso && seg > 0 && i < len(msgs) && i < len(w.iov) && count < maxSegments {
			n := &msgs[i]
			if n.Addr != m.Addr || n.N > seg || n.N == 0 || total+n.N > limit {
				break
			}
			w.setIov(i, n)
			total += n.N
			count++
			i++
			if n.N < seg {
				break
			}
		}
		h.SetIovlen(count)
		if count > 1 {
			c := w.ctrl[vlen*ctrlSpace : (vlen+1)*ctrlSpace]
			cm := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			cm.SetLen(unix.CmsgLen(segCtrlLen))
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(seg))
			h.Control = &c[0]
			h.SetControllen(unix.CmsgSpace(segCtrlLen))
		}
		vlen++
	}
	w.first[vlen] = i
	return vlen, i, bad
}

func (w *writer) setIov(i int, m *Message) {
	w.iov[i] = unix.Iovec{}
	if m.N > 0 {
		w.iov[i].Base = &m.Buf[0]
		w.iov[i].SetLen(m.N)
	}
}

// send runs sendmmsg on the packed mmsghdrs [at, vlen); it returns how
// many went and, if that is none, the error of the first.
func (p *platform) send(at, vlen int) (int, error) {
	w := &p.w
	w.at, w.vlen = at, vlen-at
	if err := p.rc.Write(w.fn); err != nil {
		return 0, err
	}
	if w.errno != 0 {
		return 0, os.NewSyscallError("sendmmsg", w.errno)
	}
	return w.sent, nil
}

func (p *platform) writeBatch(msgs []Message) (int, error) {
	p.wm.Lock()
	defer p.wm.Unlock()
	w := &p.w
	sent := 0
	var first error
	fail := func(err error) {
		if first == nil {
			first = err
		}
	}
	for len(msgs) > 0 {
		vlen, covered, bad := p.pack(msgs, p.gso.Load())
		for at := 0; at < vlen; {
			n, err := p.send(at, vlen)
			sent += w.first[at+n] - w.first[at]
			at += n
			if err == nil {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return sent, err
			}
			// mmsghdr at was refused. A run goes again one datagram at a
			// time (and never as a run again if the kernel cannot segment:
			// EIO); a single datagram is dropped and reported.
			lo, hi := w.first[at], w.first[at+1]
			if hi-lo == 1 {
				fail(err)
			} else {
				if errors.Is(err, unix.EIO) {
					p.gso.Store(false)
				}
				for j := lo; j < hi; j++ {
					if err := p.sendAlone(&msgs[j]); err != nil {
						if errors.Is(err, net.ErrClosed) {
							return sent, err
						}
						fail(err)
						continue
					}
					sent++
				}
			}
			at++
		}
		msgs = msgs[covered:]
		if bad {
			fail(&net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(msgs[0].Addr), Err: errAddrFamily})
			msgs = msgs[1:]
		}
	}
	return sent, first
}

// sendAlone sends m as one datagram with sendmsg(2): a datagram of a run
// the kernel refused to segment. It allocates (a unix.Sockaddr), which
// this rare path may.
func (p *platform) sendAlone(m *Message) error {
	var to unix.Sockaddr
	if !p.remote.IsValid() || m.Addr != p.remote {
		if to = p.sockaddr(m.Addr); to == nil {
			return &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(m.Addr), Err: errAddrFamily}
		}
	}
	var errno error
	if err := p.rc.Write(func(fd uintptr) bool {
		for {
			_, errno = unix.SendmsgN(int(fd), m.Buf[:m.N], nil, to, unix.MSG_DONTWAIT)
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	}); err != nil {
		return err
	}
	if errno != nil {
		return &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(m.Addr), Err: os.NewSyscallError("sendmsg", errno)}
	}
	return nil
}

// sockaddr is ap as the socket family's unix.Sockaddr, or nil if the
// socket cannot send there (the rules of putAddr).
func (p *platform) sockaddr(ap netip.AddrPort) unix.Sockaddr {
	var b [sockaddrLen]byte
	switch p.putAddr(b[:], ap) {
	case unix.SizeofSockaddrInet4:
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: [4]byte(b[4:8])}
	case unix.SizeofSockaddrInet6:
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: [16]byte(b[8:24])}
	}
	return nil
}
