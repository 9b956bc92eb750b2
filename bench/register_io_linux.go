package bench

import (
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"
)

// A load-generator UE's datagrams leave and arrive through raw sendto and
// recvfrom on its socket (still non-blocking, still waited on by the
// runtime's poller through syscall.RawConn), not through the net
// package's system calls. Those tell the scheduler that the thread may
// block, and a worker makes so many of them, each with other UEs ready to
// run, that its monitor thread kept waking every 20 µs to hand the
// processor to another thread: that, not the UEs, was most of a worker's
// CPU. A UDP send or receive on a non-blocking socket does not block.

// ueSocket is a UE's socket and its raw I/O (nil where the socket offers
// none: it then uses the net package's calls).
type ueSocket struct {
	conn *net.UDPConn
	io   *ueIO
}

func newUESocket(conn *net.UDPConn) ueSocket {
	s := ueSocket{conn: conn}
	if rc, err := conn.SyscallConn(); err == nil {
		s.io = newUEIO(rc)
	}
	return s
}

// ueIO is one UE socket's raw I/O. A UE reads from one goroutine at a
// time, but a held UE's keepalives (the holder) and its re-registration
// (its own goroutine) both send: the send side has its own state, under
// sendMu.
type ueIO struct {
	rc syscall.RawConn

	sendMu sync.Mutex
	// The send in progress, under sendMu: what send reads and writes.
	out       []byte
	to        syscall.RawSockaddrInet4
	sendErrno syscall.Errno

	// The receive in progress (one reader at a time): what recv reads
	// and writes.
	in        []byte
	n         int
	from      syscall.RawSockaddrInet4
	recvErrno syscall.Errno

	// send and recv are made once: a closure passed to RawConn escapes.
	send, recv func(fd uintptr) bool
}

func newUEIO(rc syscall.RawConn) *ueIO {
	io := &ueIO{rc: rc}
	io.send = func(fd uintptr) bool {
		_, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(io.out))), uintptr(len(io.out)),
			0, uintptr(unsafe.Pointer(&io.to)), syscall.SizeofSockaddrInet4)
		io.sendErrno = e
		return e != syscall.EAGAIN
	}
	io.recv = func(fd uintptr) bool {
		salen := uint32(syscall.SizeofSockaddrInet4)
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(io.in))), uintptr(len(io.in)),
			0, uintptr(unsafe.Pointer(&io.from)), uintptr(unsafe.Pointer(&salen)))
		io.n, io.recvErrno = int(n), e
		return e != syscall.EAGAIN
	}
	return io
}

// writeTo sends b to an IPv4 peer. Safe for concurrent use.
func (u *regUE) writeTo(b []byte, to netip.AddrPort) error {
	io := u.io
	if io == nil || !to.Addr().Is4() {
		_, err := u.conn.WriteToUDPAddrPort(b, to)
		return err
	}
	io.sendMu.Lock()
	defer io.sendMu.Unlock()
	io.out, io.to = b, syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: to.Addr().As4()}
	p := (*[2]byte)(unsafe.Pointer(&io.to.Port))
	p[0], p[1] = byte(to.Port()>>8), byte(to.Port())
	err := io.rc.Write(io.send)
	io.out = nil
	if err != nil {
		return err
	}
	if io.sendErrno != 0 {
		return io.sendErrno
	}
	return nil
}

// readFrom reads one datagram into b, waiting until the read deadline.
// One reader at a time.
func (u *regUE) readFrom(b []byte) (int, netip.AddrPort, error) {
	io := u.io
	if io == nil {
		return u.conn.ReadFromUDPAddrPort(b)
	}
	io.in = b
	err := io.rc.Read(io.recv)
	io.in = nil
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	if io.recvErrno != 0 {
		return 0, netip.AddrPort{}, io.recvErrno
	}
	var from netip.AddrPort
	if io.from.Family == syscall.AF_INET {
		p := (*[2]byte)(unsafe.Pointer(&io.from.Port))
		from = netip.AddrPortFrom(netip.AddrFrom4(io.from.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return io.n, from, nil
}
