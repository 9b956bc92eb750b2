package bench

import (
	"net"
	"net/netip"
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

// ueSocket is a UE's socket and, once made, its raw I/O.
type ueSocket struct {
	conn *net.UDPConn
	io   *ueIO
}

// ueIO is one UE socket's raw I/O. Not safe for concurrent use (a UE is
// one goroutine at a time).
type ueIO struct {
	rc syscall.RawConn
	// The call in progress: what send and recv read and write.
	buf   []byte
	to    syscall.RawSockaddrInet4
	n     int
	from  syscall.RawSockaddrInet4
	errno syscall.Errno
	// send and recv are made once: a closure passed to RawConn escapes.
	send, recv func(fd uintptr) bool
}

func newUEIO(rc syscall.RawConn) *ueIO {
	io := &ueIO{rc: rc}
	io.send = func(fd uintptr) bool {
		_, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(io.buf))), uintptr(len(io.buf)),
			0, uintptr(unsafe.Pointer(&io.to)), syscall.SizeofSockaddrInet4)
		io.errno = e
		return e != syscall.EAGAIN
	}
	io.recv = func(fd uintptr) bool {
		salen := uint32(syscall.SizeofSockaddrInet4)
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(io.buf))), uintptr(len(io.buf)),
			0, uintptr(unsafe.Pointer(&io.from)), uintptr(unsafe.Pointer(&salen)))
		io.n, io.errno = int(n), e
		return e != syscall.EAGAIN
	}
	return io
}

// rawIO returns the UE's raw I/O, nil when the socket offers none (it
// then uses the net package's calls).
func (u *regUE) rawIO() *ueIO {
	if u.io == nil {
		rc, err := u.conn.SyscallConn()
		if err != nil {
			return nil
		}
		u.io = newUEIO(rc)
	}
	return u.io
}

// writeTo sends b to an IPv4 peer.
func (u *regUE) writeTo(b []byte, to netip.AddrPort) error {
	io := u.rawIO()
	if io == nil || !to.Addr().Is4() {
		_, err := u.conn.WriteToUDPAddrPort(b, to)
		return err
	}
	io.buf, io.to = b, syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: to.Addr().As4()}
	p := (*[2]byte)(unsafe.Pointer(&io.to.Port))
	p[0], p[1] = byte(to.Port()>>8), byte(to.Port())
	err := io.rc.Write(io.send)
	io.buf = nil
	if err != nil {
		return err
	}
	if io.errno != 0 {
		return io.errno
	}
	return nil
}

// readFrom reads one datagram into b, waiting until the read deadline.
func (u *regUE) readFrom(b []byte) (int, netip.AddrPort, error) {
	io := u.rawIO()
	if io == nil {
		return u.conn.ReadFromUDPAddrPort(b)
	}
	io.buf = b
	err := io.rc.Read(io.recv)
	io.buf = nil
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	if io.errno != 0 {
		return 0, netip.AddrPort{}, io.errno
	}
	var from netip.AddrPort
	if io.from.Family == syscall.AF_INET {
		p := (*[2]byte)(unsafe.Pointer(&io.from.Port))
		from = netip.AddrPortFrom(netip.AddrFrom4(io.from.Addr), uint16(p[0])<<8|uint16(p[1]))
	}
	return io.n, from, nil
}
