package sip

import (
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawUDP is the unprotected SIP socket with its reads and writes made as
// raw system calls (RawSyscall6), still non-blocking and still waited on
// by the runtime's poller through syscall.RawConn. The net package's calls
// tell the scheduler the thread may block, which keeps the runtime's
// monitor polling every 20 µs and handing Ps between threads while a
// registration burst runs; a UDP send or receive on a non-blocking socket
// never blocks. tun/udp's recvmmsg and sendmmsg do the same.
type rawUDP struct {
	*net.UDPConn
	rc syscall.RawConn
	// six: the socket is AF_INET6 (dual stack when bound to ::), so IPv4
	// peers are written v4-mapped.
	six bool
}

// newRawUDP wraps c, or returns c itself where the socket cannot be had.
func newRawUDP(c *net.UDPConn) net.PacketConn {
	rc, err := c.SyscallConn()
	if err != nil {
		return c
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
		return c
	}
	return &rawUDP{UDPConn: c, rc: rc, six: family == unix.AF_INET6}
}

// rawCall is one read or write in progress; rawCalls recycles them with
// their two functions, which would otherwise be a closure per call.
type rawCall struct {
	buf   []byte
	sa    unix.RawSockaddrAny
	salen uint32
	n     int
	errno syscall.Errno

	read, write func(fd uintptr) bool
}

var rawCalls = sync.Pool{New: func() any {
	c := &rawCall{}
	c.read = func(fd uintptr) bool {
		for {
			c.salen = unix.SizeofSockaddrAny
			n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(unsafe.SliceData(c.buf))), uintptr(len(c.buf)),
				unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&c.sa)), uintptr(unsafe.Pointer(&c.salen)))
			if e == unix.EINTR {
				continue
			}
			c.n, c.errno = int(n), e
			return e != unix.EAGAIN
		}
	}
	c.write = func(fd uintptr) bool {
		for {
			n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(c.buf))), uintptr(len(c.buf)),
				unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&c.sa)), uintptr(c.salen))
			if e == unix.EINTR {
				continue
			}
			c.n, c.errno = int(n), e
			return e != unix.EAGAIN
		}
	}
	return c
}}

// ReadFrom reads one datagram, as net.UDPConn's does.
func (u *rawUDP) ReadFrom(b []byte) (int, net.Addr, error) {
	c := rawCalls.Get().(*rawCall)
	defer rawCalls.Put(c)
	c.buf = b
	err := u.rc.Read(c.read)
	c.buf = nil
	if err == nil && c.errno != 0 {
		err = os.NewSyscallError("recvfrom", c.errno)
	}
	if err != nil {
		return 0, nil, &net.OpError{Op: "read", Net: "udp", Source: u.LocalAddr(), Err: err}
	}
	return c.n, c.from(), nil
}

// from is the source address recvfrom wrote.
func (c *rawCall) from() *net.UDPAddr {
	switch c.sa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&c.sa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return &net.UDPAddr{IP: net.IPv4(sa.Addr[0], sa.Addr[1], sa.Addr[2], sa.Addr[3]), Port: int(p[0])<<8 | int(p[1])}
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&c.sa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		a := &net.UDPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: int(p[0])<<8 | int(p[1])}
		if sa.Scope_id != 0 {
			a.Zone = strconv.Itoa(int(sa.Scope_id))
		}
		return a
	}
	return &net.UDPAddr{}
}

// WriteTo sends one datagram to addr, a *net.UDPAddr.
func (u *rawUDP) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return u.UDPConn.WriteTo(b, addr)
	}
	c := rawCalls.Get().(*rawCall)
	defer rawCalls.Put(c)
	if !c.to(ua, u.six) {
		// A zone by name, or an IPv6 peer of an IPv4 socket: the net
		// package's call has the answer.
		return u.UDPConn.WriteTo(b, addr)
	}
	c.buf = b
	err := u.rc.Write(c.write)
	c.buf = nil
	if err == nil && c.errno != 0 {
		err = os.NewSyscallError("sendto", c.errno)
	}
	if err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: u.LocalAddr(), Addr: addr, Err: err}
	}
	return c.n, nil
}

// to fills c's address with a; false when it cannot.
func (c *rawCall) to(a *net.UDPAddr, six bool) bool {
	ip4 := a.IP.To4()
	switch {
	case !six && ip4 != nil:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&c.sa))
		*sa = unix.RawSockaddrInet4{Family: unix.AF_INET}
		copy(sa.Addr[:], ip4)
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(a.Port>>8), byte(a.Port)
		c.salen = unix.SizeofSockaddrInet4
	case six && len(a.IP) == net.IPv6len || six && ip4 != nil:
		if a.Zone != "" {
			return false
		}
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&c.sa))
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6}
		copy(sa.Addr[:], a.IP.To16())
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		p[0], p[1] = byte(a.Port>>8), byte(a.Port)
		c.salen = unix.SizeofSockaddrInet6
	default:
		return false
	}
	return true
}
