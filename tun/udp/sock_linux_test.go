//go:build linux

package udp

import (
	"bufio"
	"errors"
	"fmt"
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

// TestQuietLeavesRuntimePoller: a quiet Conn's socket is in no epoll
// set, so that datagrams arriving while nobody reads wake no thread; a
// polled one's (the default) is in the runtime's, and so is it again after
// SetQuiet(false). A quiet Conn reads what arrived, and waits for more.
func TestQuietLeavesRuntimePoller(t *testing.T) {
	a, c := listen(t), listen(t)
	var ino uint64
	c.plat.rc.Control(func(fd uintptr) { ino = inodeOf(t, fd) })
	if !polledInodes(t)[ino] {
		t.Fatalf("a new Conn's socket (inode %d) is not in the runtime's epoll set: the test cannot see it", ino)
	}
	if err := c.SetQuiet(true); err != nil {
		t.Fatal(err)
	}
	if polledInodes(t)[ino] {
		t.Fatalf("the quiet Conn's socket (inode %d) is in an epoll set", ino)
	}
	in := []Message{{Buf: make([]byte, 100)}}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i, payload := range []string{"sent first", "sent while the reader waits"} {
		if i == 1 {
			// The reader waits in ppoll on an empty socket before this
			// datagram goes.
			go func() {
				time.Sleep(20 * time.Millisecond)
				a.WriteBatch([]Message{{Buf: []byte(payload), N: len(payload), Addr: c.LocalAddr()}})
			}()
		} else if _, err := a.WriteBatch([]Message{{Buf: []byte(payload), N: len(payload), Addr: c.LocalAddr()}}); err != nil {
			t.Fatal(err)
		}
		if n, err := c.ReadBatch(in); n != 1 || err != nil || string(in[0].Buf[:in[0].N]) != payload {
			t.Fatalf("quiet read %d: %d, %v", i, n, err)
		}
	}
	if err := c.SetQuiet(false); err != nil {
		t.Fatal(err)
	}
	if !polledInodes(t)[ino] {
		t.Fatalf("the socket (inode %d) is not back in the runtime's epoll set", ino)
	}
}

// TestReadDeadline: a ReadBatch on an empty socket fails at its deadline
// with os.ErrDeadlineExceeded, and reads again once the deadline is
// cleared.
func TestReadDeadline(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		t.Run(fmt.Sprintf("quiet=%v", quiet), func(t *testing.T) { testReadDeadline(t, quiet) })
	}
}

func testReadDeadline(t *testing.T, quiet bool) {
	a, b := listen(t), listen(t)
	b.SetQuiet(quiet)
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

// TestCloseWithWaiters: a ReadBatch on an empty socket, polled or quiet,
// returns net.ErrClosed when another goroutine closes the Conn (whether it
// already waits or is about to); a second Close fails, and so do a Conn's
// operations after it.
func TestCloseWithWaiters(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		t.Run(fmt.Sprintf("quiet=%v", quiet), func(t *testing.T) { testCloseWithWaiters(t, quiet) })
	}
}

func testCloseWithWaiters(t *testing.T, quiet bool) {
	c := listen(t)
	c.SetQuiet(quiet)
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		_, err := c.ReadBatch([]Message{{Buf: make([]byte, 100)}})
		done <- err
	}()
	<-started
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("the waiting read returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake the read")
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
