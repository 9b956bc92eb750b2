//go:build linux

package udp

import (
	"encoding/binary"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sock is a UDP socket the runtime's poller does not watch. A socket in
// the runtime's epoll set wakes a poller thread at every datagram that
// arrives, even while no goroutine waits to read it; a P-CSCF holding
// 100,000 UEs gets 5,000 NAT keepalives a second, and the socket reader's
// coalescing (tun, inbound.go) could bound its reads but not those
// wakeups (docs/architecture.md, "Keepalives"). Here a reader or writer
// that finds the socket empty (or full) waits in ppoll(2) on it and on an
// eventfd that Close signals, and nobody waits while the reader
// coalesces, so datagrams gather without waking anyone.
//
// sock is the syscall.RawConn of the Linux platform: Read and Write call
// f until it returns true, waiting for the socket in between, as the
// runtime's RawConn does. One goroutine at a time may Read, and one at a
// time may Write (platform.wm); Control may be called by any.
type sock struct {
	fd   int // non-blocking
	wake int // eventfd, non-blocking: readable once Close began

	// mu is held shared by each Control, Read and Write for as long as it
	// uses the descriptors (waits included), and exclusively by Close to
	// close them, so that no system call runs on a closed (or reused)
	// descriptor. Close signals wake before it locks.
	mu     sync.RWMutex
	closed atomic.Bool

	deadline atomic.Int64 // read deadline, Unix ns; 0 for none
}

// newSock takes c's socket out of the runtime's poller: it duplicates the
// descriptor and closes c, whose close removes the socket from the
// runtime's epoll set (EPOLL_CTL_DEL) while the duplicate keeps it open.
// The duplicate shares c's non-blocking flag.
func newSock(c *net.UDPConn) (*sock, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	c.Close()
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	return &sock{fd: fd, wake: wake}, nil
}

// SyscallConn makes sock a syscall.Conn (for sockdrops).
func (s *sock) SyscallConn() (syscall.RawConn, error) { return s, nil }

// Control runs f on the descriptor.
func (s *sock) Control(f func(fd uintptr)) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed.Load() {
		return net.ErrClosed
	}
	f(uintptr(s.fd))
	return nil
}

// Read calls f until it returns true, waiting for a datagram in between.
// It fails with net.ErrClosed once Close began, and with
// os.ErrDeadlineExceeded past the read deadline.
func (s *sock) Read(f func(fd uintptr) bool) error { return s.loop(f, unix.POLLIN) }

// Write calls f until it returns true, waiting for buffer space in
// between. It fails with net.ErrClosed once Close began.
func (s *sock) Write(f func(fd uintptr) bool) error { return s.loop(f, unix.POLLOUT) }

func (s *sock) loop(f func(fd uintptr) bool, ev int16) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for {
		if s.closed.Load() {
			return net.ErrClosed
		}
		if f(uintptr(s.fd)) {
			return nil
		}
		if err := s.wait(ev); err != nil {
			return err
		}
	}
}

// wait blocks until the socket is ready for ev, Close began, or (for
// reads) the deadline passed. It is a blocking system call: the runtime
// hands the goroutine's P to another thread while it waits.
func (s *sock) wait(ev int16) error {
	var ts unix.Timespec
	tp := uintptr(0) // no timeout
	if ev == unix.POLLIN {
		if d := s.deadline.Load(); d != 0 {
			left := d - time.Now().UnixNano()
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			ts = unix.NsecToTimespec(left)
			tp = uintptr(unsafe.Pointer(&ts))
		}
	}
	fds := [2]unix.PollFd{{Fd: int32(s.fd), Events: ev}, {Fd: int32(s.wake), Events: unix.POLLIN}}
	for {
		_, _, e := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, tp, 0, 0, 0)
		switch e {
		case 0:
			return nil // ready, closing, or timed out: loop looks again
		case unix.EINTR:
			continue
		}
		return os.NewSyscallError("ppoll", e)
	}
}

// setReadDeadline sets the time after which Read fails; the zero time
// means none. A Read already waiting keeps the deadline it started its
// wait with.
func (s *sock) setReadDeadline(t time.Time) {
	var d int64
	if !t.IsZero() {
		d = t.UnixNano()
	}
	s.deadline.Store(d)
}

// Close wakes every waiting Read and Write, waits for them to return and
// closes the descriptors.
func (s *sock) Close() error {
	if s.closed.Swap(true) {
		return net.ErrClosed
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(s.wake, one[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	err := unix.Close(s.fd)
	unix.Close(s.wake)
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}
