package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"
)

// kernelConfig configures a Linux interface over rtnetlink (RFC 3549,
// rtnetlink(7)): the messages `ip link set up`, `ip addr add` and
// `ip route add` send, without running ip. The socket is opened by
// CreateKernel, on the creating thread, so it stays in the interface's
// network namespace.
type kernelConfig struct {
	mu     sync.Mutex
	fd     int
	seq    uint32
	index  int32 // set once by open, before the Kernel is returned
	isOpen bool
}

func (c *kernelConfig) open(name string) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("tun: netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("tun: netlink bind: %w", err)
	}
	c.mu.Lock()
	c.fd, c.isOpen = fd, true
	c.mu.Unlock()
	idx, _, err := c.getLink(name)
	if err != nil {
		c.close()
		return err
	}
	c.index = idx
	return nil
}

func (c *kernelConfig) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isOpen {
		unix.Close(c.fd)
		c.isOpen = false
	}
}

func (k *Kernel) queryMTU() (int, error) {
	_, mtu, err := k.cfg.getLink(k.name)
	return mtu, err
}

// SetUp sets the interface administratively up (RTM_NEWLINK, IFF_UP).
func (k *Kernel) SetUp() error {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(k.cfg.index))
	binary.NativeEndian.PutUint32(b[8:], unix.IFF_UP)  // flags
	binary.NativeEndian.PutUint32(b[12:], unix.IFF_UP) // change mask
	_, err := k.cfg.request(unix.RTM_NEWLINK, 0, b)
	if err != nil {
		return fmt.Errorf("tun: set %s up: %w", k.name, err)
	}
	return nil
}

// SetMTU changes the interface MTU (RTM_NEWLINK, IFLA_MTU); MTU follows
// once the kernel announces the change.
func (k *Kernel) SetMTU(mtu int) error {
	if mtu < 576 || mtu > 65535 {
		return fmt.Errorf("tun: MTU %d outside [576, 65535]", mtu)
	}
	b := make([]byte, unix.SizeofIfInfomsg, 32)
	b[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(b[4:], uint32(k.cfg.index))
	var v [4]byte
	binary.NativeEndian.PutUint32(v[:], uint32(mtu))
	b = appendAttr(b, unix.IFLA_MTU, v[:])
	if _, err := k.cfg.request(unix.RTM_NEWLINK, 0, b); err != nil {
		return fmt.Errorf("tun: set MTU of %s: %w", k.name, err)
	}
	return nil
}

// AddAddress assigns p to the interface (RTM_NEWADDR, like
// `ip addr add p dev name`). p.Bits() gives the on-link prefix, for which
// the kernel adds a route.
func (k *Kernel) AddAddress(p netip.Prefix) error {
	return k.addr(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_EXCL, p)
}

// RemoveAddress removes an address added with AddAddress (RTM_DELADDR).
func (k *Kernel) RemoveAddress(p netip.Prefix) error {
	return k.addr(unix.RTM_DELADDR, 0, p)
}

func (k *Kernel) addr(typ uint16, flags uint16, p netip.Prefix) error {
	a := p.Addr().Unmap()
	if !p.IsValid() || a.Zone() != "" || (a.Is4() && p.Bits() > 32) {
		return fmt.Errorf("tun: address %v invalid", p)
	}
	b := make([]byte, unix.SizeofIfAddrmsg, 64)
	b[0] = family(a)
	b[1] = byte(p.Bits())
	if a.Is6() {
		// No duplicate address detection: the tunnel is a link with one
		// other end, which handed the address out; a tentative address
		// could not be bound for a second or more.
		b[2] = unix.IFA_F_NODAD
	}
	b[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(b[4:], uint32(k.cfg.index))
	b = appendAttr(b, unix.IFA_LOCAL, a.AsSlice())
	b = appendAttr(b, unix.IFA_ADDRESS, a.AsSlice())
	if _, err := k.cfg.request(typ, flags, b); err != nil {
		return fmt.Errorf("tun: address %v on %s: %w", p, k.name, err)
	}
	return nil
}

// AddRoute routes dst through the interface (RTM_NEWROUTE in the main
// table, scope link, like `ip route add dst dev name`).
func (k *Kernel) AddRoute(dst netip.Prefix) error {
	dst = dst.Masked()
	a := dst.Addr()
	if !dst.IsValid() {
		return fmt.Errorf("tun: route %v invalid", dst)
	}
	b := make([]byte, unix.SizeofRtMsg, 64)
	b[0] = family(a)
	b[1] = byte(dst.Bits())
	b[4] = unix.RT_TABLE_MAIN
	b[5] = unix.RTPROT_BOOT
	b[6] = unix.RT_SCOPE_LINK
	b[7] = unix.RTN_UNICAST
	if dst.Bits() > 0 {
		b = appendAttr(b, unix.RTA_DST, a.AsSlice())
	}
	var oif [4]byte
	binary.NativeEndian.PutUint32(oif[:], uint32(k.cfg.index))
	b = appendAttr(b, unix.RTA_OIF, oif[:])
	if _, err := k.cfg.request(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, b); err != nil {
		return fmt.Errorf("tun: route %v via %s: %w", dst, k.name, err)
	}
	return nil
}

func family(a netip.Addr) byte {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// getLink asks for the link called name and returns its index and MTU.
func (c *kernelConfig) getLink(name string) (int32, int, error) {
	b := make([]byte, unix.SizeofIfInfomsg, 64)
	b[0] = unix.AF_UNSPEC
	b = appendAttr(b, unix.IFLA_IFNAME, append([]byte(name), 0))
	resp, err := c.request(unix.RTM_GETLINK, 0, b)
	if err != nil {
		return 0, 0, fmt.Errorf("tun: netlink get link %s: %w", name, err)
	}
	if len(resp) < unix.SizeofIfInfomsg {
		return 0, 0, errNetlinkShort
	}
	index := int32(binary.NativeEndian.Uint32(resp[4:]))
	mtu := -1
	for attrs := resp[unix.SizeofIfInfomsg:]; len(attrs) >= unix.SizeofRtAttr; {
		l := int(binary.NativeEndian.Uint16(attrs))
		t := binary.NativeEndian.Uint16(attrs[2:])
		if l < unix.SizeofRtAttr || l > len(attrs) {
			return 0, 0, errNetlinkShort
		}
		if t == unix.IFLA_MTU && l >= unix.SizeofRtAttr+4 {
			mtu = int(binary.NativeEndian.Uint32(attrs[unix.SizeofRtAttr:]))
		}
		attrs = attrs[min(align4(l), len(attrs)):]
	}
	if mtu < 0 {
		return 0, 0, fmt.Errorf("tun: netlink get link %s: no MTU", name)
	}
	return index, mtu, nil
}

var errNetlinkShort = errors.New("tun: malformed netlink message")

func align4(n int) int { return (n + 3) &^ 3 }

// appendAttr appends one rtattr (length, type, value, padding).
func appendAttr(b []byte, typ uint16, v []byte) []byte {
	b = b[:align4(len(b))]
	l := unix.SizeofRtAttr + len(v)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// request sends one message with NLM_F_REQUEST|NLM_F_ACK and waits for
// the kernel's answer. It returns the body of the first data message (for
// a GET) or nil, or the errno of an NLMSG_ERROR.
func (c *kernelConfig) request(typ uint16, flags uint16, body []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.isOpen {
		return nil, ErrClosed
	}
	c.seq++
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], c.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(c.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	var data []byte
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		for m := buf[:n]; len(m) >= unix.SizeofNlMsghdr; {
			l := int(binary.NativeEndian.Uint32(m))
			t := binary.NativeEndian.Uint16(m[4:])
			seq := binary.NativeEndian.Uint32(m[8:])
			if l < unix.SizeofNlMsghdr || l > len(m) {
				return nil, errNetlinkShort
			}
			payload := m[unix.SizeofNlMsghdr:l]
			m = m[min(align4(l), len(m)):]
			if seq != c.seq {
				continue // a stale answer
			}
			switch t {
			case unix.NLMSG_ERROR:
				if len(payload) < 4 {
					return nil, errNetlinkShort
				}
				if code := int32(binary.NativeEndian.Uint32(payload)); code != 0 {
					return nil, unix.Errno(-code)
				}
				return data, nil // the ACK ends the exchange
			case unix.NLMSG_DONE:
				return data, nil
			default:
				if data == nil {
					data = append([]byte(nil), payload...)
				}
			}
		}
	}
}
