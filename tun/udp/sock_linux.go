//go:build linux

package udp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sock is the Linux platform's UDP socket, which can leave the runtime's
// poller. A socket in the runtime's epoll set wakes a poller thread at
// every datagram that arrives, even while no goroutine waits to read it:
// a P-CSCF holding 100,000 UEs gets 5,000 NAT keepalives a second, and
// the socket reader's coalescing (tun, inbound.go) could bound its reads
// but not those wakeups (docs/architecture.md, "Keepalives").
//
// Polled (the default), the socket is also open as a descriptor the
// runtime watches, and a Read that finds it empty parks its goroutine in
// the runtime's poller, which costs nothing while other goroutines run
// (the data path's throughput depends on that). Quiet (setQuiet), that
// descriptor is closed, which takes the socket out of the runtime's epoll
// set; a Read that finds it empty then waits in ppoll(2), on it and on an
// eventfd Close signals, holding its thread. A reader that sleeps between
// reads lets datagrams gather without waking anyone. Writes wait in
// ppoll in both modes, only when the send buffer is full.
//
// A sock holds three descriptors while polled (the socket, its polled
// duplicate and the eventfd) and two while quiet; a process makes a few
// (a P-CSCF two, one per ESP port), not one per peer.
//
// sock is the platform's syscall.RawConn: Read and Write call f until it
// returns true, waiting for the socket in between, as the runtime's
// RawConn does. One goroutine at a time may Read (and setQuiet, and
// setReadDeadline), one at a time may Write (platform.wm); Control may be
// called by any.
type sock struct {
	fd   int // non-blocking; the duplicates share the flag
	wake int // eventfd, non-blocking: readable once Close began

	// mu is held shared by each Control, Read and Write for as long as it
	// uses fd or wake (waits included), and exclusively by Close to close
	// them, so that no system call runs on a closed (or reused)
	// descriptor. Close signals wake and closes polled before it locks.
	mu     sync.RWMutex
	closed atomic.Bool

	// pm guards polled and prc, which the reader replaces (setQuiet) and
	// Close closes. A Read uses the prc it found; if Close closes it
	// meanwhile, the Read returns.
	pm     sync.Mutex
	polled *os.File        // a duplicate of fd in the runtime's poller; nil while quiet or closed
	prc    syscall.RawConn // polled's

	// The read deadline, set by the reader (setReadDeadline): on the
	// monotonic clock, as time since base; hasDeadline false for none.
	base        time.Time
	deadline    atomic.Int64
	hasDeadline atomic.Bool

	cleanup runtime.Cleanup // closes fd and wake if the sock is dropped unclosed; Close stops it
}

// newSock takes c's socket from the net package: it duplicates the
// descriptor and closes c, whose close removes the socket from the
// runtime's epoll set (EPOLL_CTL_DEL) while the duplicate keeps it open.
// The duplicate shares c's non-blocking flag. The socket starts polled,
// through a second duplicate the runtime registers.
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
	sk := &sock{fd: fd, wake: wake, base: time.Now()}
	if err := sk.setQuiet(false); err != nil {
		closeFDs([2]int{fd, wake})
		return nil, err
	}
	// A Conn dropped without Close gives its descriptors back, as a
	// net.UDPConn's finalizer does.
	sk.cleanup = runtime.AddCleanup(sk, closeFDs, [2]int{fd, wake})
	return sk, nil
}

// closeFDs closes a sock's socket and eventfd where no Close will.
func closeFDs(fds [2]int) {
	unix.Close(fds[0])
	unix.Close(fds[1])
}

// setQuiet takes the socket out of the runtime's poller (quiet) or puts
// it back. Quiet, it closes the polled duplicate (the runtime removes a
// descriptor from its epoll set when it closes it); polled, it opens a new
// duplicate, which os.NewFile registers because it is non-blocking.
func (s *sock) setQuiet(quiet bool) error {
	s.pm.Lock()
	defer s.pm.Unlock()
	if s.closed.Load() {
		return net.ErrClosed
	}
	if quiet == (s.polled == nil) {
		return nil
	}
	if quiet {
		err := s.polled.Close()
		s.polled, s.prc = nil, nil
		return err
	}
	fd, err := unix.FcntlInt(uintptr(s.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(fd), "udp")
	// NewFile returns a file the poller does not watch if the runtime
	// could not register it (epoll's max_user_watches): deadlines tell.
	if err := f.SetReadDeadline(s.deadlineTime()); err != nil {
		f.Close()
		return fmt.Errorf("udp: the runtime's poller refused the socket: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return err
	}
	s.polled, s.prc = f, rc
	return nil
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

// Read calls f until it returns true, waiting for a datagram in between
// (in the runtime's poller, or quiet in ppoll). It fails with
// net.ErrClosed once Close began, and with os.ErrDeadlineExceeded past the
// read deadline.
func (s *sock) Read(f func(fd uintptr) bool) error {
	for {
		s.pm.Lock()
		prc := s.prc
		s.pm.Unlock()
		if prc == nil {
			return s.loop(f, unix.POLLIN)
		}
		err := prc.Read(f)
		switch {
		case err == nil:
			return nil
		case s.closed.Load():
			return net.ErrClosed
		case errors.Is(err, os.ErrDeadlineExceeded):
			return os.ErrDeadlineExceeded
		case errors.Is(err, os.ErrClosed):
			continue // setQuiet closed the duplicate under us: read quiet
		}
		return err
	}
}

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
		if ev == unix.POLLIN && s.expired() {
			return os.ErrDeadlineExceeded
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
// reads) the deadline passed. It is an ordinary (blocking) system call:
// the runtime's monitor hands the thread's P to another thread if the wait
// lasts (docs/architecture.md, "Keepalives").
func (s *sock) wait(ev int16) error {
	var ts unix.Timespec
	var tsp *unix.Timespec // nil: no timeout
	if ev == unix.POLLIN && s.hasDeadline.Load() {
		left := time.Duration(s.deadline.Load()) - time.Since(s.base)
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		ts = unix.NsecToTimespec(int64(left))
		tsp = &ts
	}
	fds := [2]unix.PollFd{{Fd: int32(s.fd), Events: ev}, {Fd: int32(s.wake), Events: unix.POLLIN}}
	for {
		_, _, e := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 2, uintptr(unsafe.Pointer(tsp)), 0, 0, 0)
		switch e {
		case 0:
			return nil // ready, closing, or timed out: loop looks again
		case unix.EINTR:
			continue
		}
		return os.NewSyscallError("ppoll", e)
	}
}

// expired reports whether the read deadline passed.
func (s *sock) expired() bool {
	return s.hasDeadline.Load() && time.Since(s.base) >= time.Duration(s.deadline.Load())
}

// deadlineTime is the read deadline as a time, zero for none.
func (s *sock) deadlineTime() time.Time {
	if !s.hasDeadline.Load() {
		return time.Time{}
	}
	return s.base.Add(time.Duration(s.deadline.Load()))
}

// setReadDeadline sets the time after which Read fails; the zero time
// means none. Only the reader calls it (as it does setQuiet). A polled
// Read already waiting sees the new deadline, a quiet one keeps the
// deadline it started its wait with.
func (s *sock) setReadDeadline(t time.Time) {
	if t.IsZero() {
		s.hasDeadline.Store(false)
	} else {
		s.deadline.Store(int64(t.Sub(s.base)))
		s.hasDeadline.Store(true)
	}
	s.pm.Lock()
	if s.polled != nil {
		s.polled.SetReadDeadline(t)
	}
	s.pm.Unlock()
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
	s.pm.Lock()
	if s.polled != nil {
		s.polled.Close() // wakes a Read parked in the runtime's poller
		s.polled, s.prc = nil, nil
	}
	s.pm.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanup.Stop()
	err := unix.Close(s.fd)
	unix.Close(s.wake)
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}
