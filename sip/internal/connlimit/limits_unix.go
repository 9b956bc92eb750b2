//go:build unix

package connlimit

import "syscall"

// fdLimit is the process's soft limit on open files, 0 if unknown. (Go
// raises the soft limit to the hard one at start-up on Linux.)
func fdLimit() uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return uint64(r.Cur)
}
