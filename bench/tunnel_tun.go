package bench

import (
	"errors"
	"net/netip"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/udp"
)

// ErrNeedRoot is returned by the tun mode when the process is not root:
// it creates network namespaces, a veth pair and TUN interfaces.
var ErrNeedRoot = errors.New("bench: --mode tun needs root (CAP_SYS_ADMIN for network namespaces, CAP_NET_ADMIN for the veth and TUN interfaces); run it as root or use --mode netstack")

// TUNPlan tells a TUNBuilder what to build: in each namespace a TUN
// interface called Name, and the tunnel's UDP socket bound to OuterA (in
// namespace A) or OuterB (in B). The harness then gives the interfaces
// InnerA and InnerB (a point-to-point /32 pair) and sets them up.
type TUNPlan struct {
	Name           string
	OuterA, OuterB netip.AddrPort
	InnerA, InnerB netip.Addr
}

// TUNTunnel is a running tun-mode tunnel.
type TUNTunnel interface {
	// RxBytes is the inner bytes both ends have delivered so far (for the
	// progress line; 0 if unknown).
	RxBytes() uint64
	// MTU is the inner MTU of the interfaces.
	MTU() int
	// Close stops the tunnel and closes its interfaces and sockets.
	Close() error
}

// TUNBuilder builds the tunnel under test between namespaces a and b.
type TUNBuilder func(a, b *Netns, plan TUNPlan) (TUNTunnel, error)

// ourTunnel is two Pumps on kernel TUNs.
type ourTunnel struct {
	a, b *tun.Pump
	mtu  int
}

func (t *ourTunnel) RxBytes() uint64                { return t.a.Counters().RxBytes + t.b.Counters().RxBytes }
func (t *ourTunnel) MTU() int                       { return t.mtu }
func (t *ourTunnel) Padding() (pad, packets uint64) { return padding(t.a, t.b) }
func (t *ourTunnel) Close() error {
	t.a.Close()
	t.b.Close()
	return nil
}

// ourTUN builds imsec's tunnel: in each namespace a tun.Kernel and a
// udp.Conn, joined by two Pumps (configured as pc) with the SAs of s.
func ourTUN(s Suite, pc tun.Config) TUNBuilder {
	return func(a, b *Netns, plan TUNPlan) (TUNTunnel, error) {
		mtu, err := innerMTU(s)
		if err != nil {
			return nil, err
		}
		var devs [2]*tun.Kernel
		var conns [2]*udp.Conn
		closeAll := func() {
			for i := range devs {
				if devs[i] != nil {
					devs[i].Close()
				}
				if conns[i] != nil {
					conns[i].Close()
				}
			}
		}
		for i, ns := range []*Netns{a, b} {
			outer := [2]netip.AddrPort{plan.OuterA, plan.OuterB}
			err := ns.Do(func() error {
				k, err := tun.CreateKernel(plan.Name, mtu)
				if err != nil {
					return err
				}
				// Connected to the other end, as a UE's socket to its
				// P-CSCF is: the kernel routes once, not per datagram.
				c, err := udp.Dial(outer[i], outer[1-i])
				if err != nil {
					k.Close()
					return err
				}
				devs[i], conns[i] = k, c
				return nil
			})
			if err != nil {
				closeAll()
				return nil, err
			}
		}
		pa, pb, err := ourPumps(s, pc, devs[0], devs[1], conns[0], conns[1])
		if err != nil {
			return nil, err
		}
		return &ourTunnel{a: pa, b: pb, mtu: mtu}, nil
	}
}
