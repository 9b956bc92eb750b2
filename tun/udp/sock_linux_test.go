//go:build linux

package udp

import (
	"bufio"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// polledInodes returns the inodes of every file this process's epoll
// instances watch (the runtime's among them), read from
// /proc/self/fdinfo.
func polledInodes(t *testing.T) map[uint64]bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[uint64]bool{}
	for _, e := range fds {
		if l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); l != "anon_inode:[eventpoll]" {
			continue
		}
		f, err := os.Open(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// tfd:        7 events:       19 data: ... pos:0 ino:2f3c sdev:8
			for _, field := range strings.Fields(sc.Text()) {
				if v, ok := strings.CutPrefix(field, "ino:"); ok {
					if ino, err := strconv.ParseUint(v, 16, 64); err == nil {
						inodes[ino] = true
					}
				}
			}
		}
		f.Close()
	}
	return inodes
}

func inodeOf(t *testing.T, fd uintptr) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(fd), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestNotInRuntimePoller: a Conn's socket is in no epoll set, so that
// datagrams arriving while nobody reads wake no thread; a net.UDPConn's,
// for contrast, is in the runtime's.
func TestNotInRuntimePoller(t *testing.T) {
	ref, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	rc, _ := ref.SyscallConn()
	var refIno uint64
	rc.Control(func(fd uintptr) { refIno = inodeOf(t, fd) })

	c := listen(t)
	var ino uint64
	c.plat.rc.Control(func(fd uintptr) { ino = inodeOf(t, fd) })

	polled := polledInodes(t)
	if !polled[refIno] {
		t.Fatalf("a net.UDPConn's socket (inode %d) is not in the runtime's epoll set: the test cannot see it", refIno)
	}
	if polled[ino] {
		t.Fatalf("the Conn's socket (inode %d) is in an epoll set", ino)
	}
}

// TestReadDeadline: a ReadBatch on an empty socket fails at its deadline
// with os.ErrDeadlineExceeded, and reads again once the deadline is
// cleared.
func TestReadDeadline(t *testing.T) {
	a, b := listen(t), listen(t)
	in := []Message{{Buf: make([]byte, 100)}}
	start := time.Now()
	b.SetReadDeadline(start.Add(50 * time.Millisecond))
	if _, err := b.ReadBatch(in); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on an empty socket past its deadline: %v", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("the read gave up after %v, before its deadline", d)
	}
	b.SetReadDeadline(time.Time{})
	if _, err := a.WriteBatch([]Message{{Buf: []byte("x"), N: 1, Addr: b.LocalAddr()}}); err != nil {
		t.Fatal(err)
	}
	if n, err := b.ReadBatch(in); n != 1 || err != nil || in[0].N != 1 {
		t.Fatalf("read after the deadline was cleared: %d, %v", n, err)
	}
}

// TestCloseWithWaiters: Close returns only after a waiting ReadBatch has
// returned net.ErrClosed, a second Close fails, and a Conn's operations
// fail after it.
func TestCloseWithWaiters(t *testing.T) {
	c := listen(t)
	done := make(chan error, 1)
	waiting := make(chan struct{})
	go func() {
		c.plat.rc.Control(func(uintptr) { close(waiting) })
		_, err := c.ReadBatch([]Message{{Buf: make([]byte, 100)}})
		done <- err
	}()
	<-waiting
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("the waiting read returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close returned before the read it woke")
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.WriteBatch([]Message{{Buf: []byte("x"), N: 1, Addr: c.LocalAddr()}}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if _, ok := c.Drops(); ok {
		t.Fatal("Drops after Close reported a count")
	}
}
