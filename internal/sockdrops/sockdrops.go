// Package sockdrops reads how many datagrams the kernel dropped at a
// socket (Linux: SK_MEMINFO_DROPS of SO_MEMINFO): mostly those that found
// its receive buffer full. A reader that falls behind loses datagrams here
// and nowhere else, and the count is the socket's own: the machine's
// RcvbufErrors mix every socket, the load generator's among them.
package sockdrops

import "syscall"

// Of returns the drop count of c's socket since it was opened; ok is
// false where the system does not say.
func Of(c syscall.Conn) (n uint64, ok bool) {
	if c == nil {
		return 0, false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	if err := rc.Control(func(fd uintptr) { n, ok = drops(fd) }); err != nil {
		return 0, false
	}
	return n, ok
}
