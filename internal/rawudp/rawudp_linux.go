package rawudp

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/imsec/imsec/internal/cmsg"
)

// raw is a socket's raw recvfrom and sendto.
type raw struct {
	rc syscall.RawConn
	// six: the socket is AF_INET6 (dual stack when bound to ::), so IPv4
	// peers are written v4-mapped.
	six bool
	// stamped: SO_TIMESTAMPNS is on, and reads are recvmsg calls that
	// take the kernel's receive time (set before the first read).
	stamped bool
}

// stamp turns on kernel receive times: the socket's SO_TIMESTAMPNS.
func (r *raw) stamp() bool {
	r.stamped = cmsg.StampReceived(r.rc)
	return r.stamped
}

// newRaw returns nil when the socket or its family cannot be had.
func newRaw(c *net.UDPConn) *raw {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	family := -1
	if err := rc.Control(func(fd uintptr) {
		if sa, err := unix.Getsockname(int(fd)); err == nil {
			switch sa.(type) {
			case *unix.SockaddrInet4:
				family = unix.AF_INET
			case *unix.SockaddrInet6:
				family = unix.AF_INET6
			}
		}
	}); err != nil || family < 0 {
		return nil
	}
	return &raw{rc: rc, six: family == unix.AF_INET6}
}

// call is one read or write in progress; calls recycles them with their
// two functions, which would otherwise be a closure per call.
type call struct {
	buf   []byte
	sa    unix.RawSockaddrAny
	salen uint32
	n     int
	errno syscall.Errno

	// recvmsg's header, buffer and control space, for stamped reads
	msg  unix.Msghdr
	iov  unix.Iovec
	ctrl [stampSpace]byte

	read, readMsg, write func(fd uintptr) bool
}

// stampSpace holds one SCM_TIMESTAMPNS control message.
// (unix.CmsgSpace of a unix.Timespec is 32 on 64-bit Linux; a test checks).
const stampSpace = 64

var calls = sync.Pool{New: func() any {
	c := &call{}
	c.read = func(fd uintptr) bool {
		c.salen = unix.SizeofSockaddrAny
		return c.syscall(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.salen)))
	}
	c.readMsg = func(fd uintptr) bool {
		for {
			n, _, e := unix.RawSyscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&c.msg)), unix.MSG_DONTWAIT)
			if e == unix.EINTR {
				continue
			}
			c.n, c.errno = int(n), e
			return e != unix.EAGAIN
		}
	}
	c.write = func(fd uintptr) bool { return c.syscall(unix.SYS_SENDTO, fd, uintptr(c.salen)) }
	return c
}}

// syscall makes recvfrom or sendto on c.buf and c.sa (salen is the
// address length's argument: a pointer for recvfrom, the length for
// sendto), again when interrupted; false asks the poller to wait (EAGAIN).
func (c *call) syscall(trap, fd, salen uintptr) bool {
	for {
		n, _, e := unix.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(unsafe.SliceData(c.buf))), uintptr(len(c.buf)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&c.sa)), salen)
		if e == unix.EINTR {
			continue
		}
		c.n, c.errno = int(n), e
		return e != unix.EAGAIN
	}
}

// read receives one datagram into b; at is the kernel's receive time when
// the socket is stamped (zero otherwise, or when the kernel gave none).
func (r *raw) read(b []byte) (n int, from netip.AddrPort, at time.Time, err error) {
	c := calls.Get().(*call)
	defer calls.Put(c)
	c.buf = b
	fn, name := c.read, "recvfrom"
	if r.stamped {
		fn, name = c.readMsg, "recvmsg"
		c.msg = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&c.sa)), Namelen: unix.SizeofSockaddrAny, Iov: &c.iov}
		c.msg.SetIovlen(1)
		if len(b) > 0 {
			c.iov.Base = &b[0]
		}
		c.iov.SetLen(len(b))
		c.msg.Control = &c.ctrl[0]
		c.msg.SetControllen(len(c.ctrl))
	}
	err = r.rc.Read(fn)
	c.buf, c.iov.Base = nil, nil
	if err == nil && c.errno != 0 {
		err = os.NewSyscallError(name, c.errno)
	}
	if err != nil {
		return 0, netip.AddrPort{}, time.Time{}, err
	}
	if r.stamped {
		at = cmsg.ReceiveTime(c.ctrl[:min(int(c.msg.Controllen), len(c.ctrl))])
	}
	return c.n, c.from(), at, nil
}

// write sends b to to; false (and nothing sent) when the address does not
// fit a raw call.
func (r *raw) write(b []byte, to netip.AddrPort) (int, bool, error) {
	c := calls.Get().(*call)
	defer calls.Put(c)
	if !c.to(to, r.six) {
		return 0, false, nil
	}
	c.buf = b
	err := r.rc.Write(c.write)
	c.buf = nil
	if err == nil && c.errno != 0 {
		err = os.NewSyscallError("sendto", c.errno)
	}
	return c.n, true, err
}

// from is the source address recvfrom wrote.
func (c *call) from() netip.AddrPort {
	switch c.sa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&c.sa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&c.sa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			a = a.WithZone(strconv.Itoa(int(sa.Scope_id)))
		}
		return netip.AddrPortFrom(a, uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// to fills c's address with a; false when it cannot.
func (c *call) to(a netip.AddrPort, six bool) bool {
	ip := a.Addr()
	switch {
	case !six && ip.Unmap().Is4():
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&c.sa))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip.Unmap().As4()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(a.Port()>>8), byte(a.Port())
		c.salen = unix.SizeofSockaddrInet4
	case six && ip.IsValid() && ip.Zone() == "":
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&c.sa))
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ip.As16()}
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(a.Port()>>8), byte(a.Port())
		c.salen = unix.SizeofSockaddrInet6
	default:
		return false
	}
	return true
}
