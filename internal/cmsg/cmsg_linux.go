package cmsg

import (
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Find returns the data of ctrl's first control message of level and typ,
// or nil.
func Find(ctrl []byte, level, typ int32) []byte {
	for len(ctrl) >= unix.SizeofCmsghdr {
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		l := int(cm.Len)
		if l < unix.SizeofCmsghdr || l > len(ctrl) {
			return nil
		}
		if cm.Level == level && cm.Type == typ {
			return ctrl[unix.CmsgLen(0):l]
		}
		ctrl = ctrl[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(ctrl)):]
	}
	return nil
}

// StampReceived turns on rc's socket's SO_TIMESTAMPNS: each datagram read
// with recvmsg or recvmmsg then carries the time the kernel received it,
// which ReceiveTime reads. False if the socket refused.
func StampReceived(rc syscall.RawConn) bool {
	ok := false
	rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) == nil
	})
	return ok
}

// ReceiveTime returns the SCM_TIMESTAMPNS receive time in ctrl, or zero.
func ReceiveTime(ctrl []byte) time.Time {
	data := Find(ctrl, unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS)
	if len(data) < int(unsafe.Sizeof(unix.Timespec{})) {
		return time.Time{}
	}
	ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
	return time.Unix(int64(ts.Sec), int64(ts.Nsec))
}
