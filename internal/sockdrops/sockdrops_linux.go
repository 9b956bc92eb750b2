package sockdrops

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// skMeminfoDrops is SK_MEMINFO_DROPS, the last of SK_MEMINFO_VARS
// (include/uapi/linux/sock_diag.h).
const skMeminfoDrops = 8

func drops(fd uintptr) (uint64, bool) {
	var v [skMeminfoDrops + 1]uint32
	l := uint32(unsafe.Sizeof(v))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO, uintptr(unsafe.Pointer(&v[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 || l < uint32(unsafe.Sizeof(v)) {
		return 0, false
	}
	return uint64(v[skMeminfoDrops]), true
}
