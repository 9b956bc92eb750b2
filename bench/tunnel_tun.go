package bench

import (
	"errors"
	"net/netip"

	"github.com/imsec/imsec/tun"
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
	a, b *tun.Endpoint
	mtu  int
}

func (t *ourTunnel) RxBytes() uint64 {
	return t.a.Pump.Counters().RxBytes + t.b.Pump.Counters().RxBytes
}
func (t *ourTunnel) MTU() int                       { return t.mtu }
func (t *ourTunnel) Padding() (pad, packets uint64) { return padding(t.a.Pump, t.b.Pump) }
func (t *ourTunnel) Close() error {
	t.a.Close()
	t.b.Close()
	return nil
}

// ourTUN builds imsec's tunnel: in each namespace an endpoint with a
// tun.Kernel and a udp.Conn, joined by two Pumps (configured as pc) with
// the SAs of s.
func ourTUN(s Suite, pc tun.Config) TUNBuilder {
	return func(a, b *Netns, plan TUNPlan) (TUNTunnel, error) {
		mtu, err := innerMTU(s)
		if err != nil {
			return nil, err
		}
		var ends [2]*tun.Endpoint
		closeAll := func() {
			for _, e := range ends {
				if e != nil {
					e.Close()
				}
			}
		}
		outer := [2]netip.AddrPort{plan.OuterA, plan.OuterB}
		for i, ns := range []*Netns{a, b} {
			cfg := ourEndpoint(pc, [2]string{"b", "a"}[i])
			// Connected to the other end, as a UE's socket to its
			// P-CSCF is: the kernel routes once, not per datagram.
			cfg.Listen, cfg.Connect = outer[i], outer[1-i]
			cfg.Kernel = &tun.KernelOptions{Name: plan.Name, MTU: mtu}
			// In the namespace: the socket and the TUN are created there.
			err := ns.Do(func() (err error) {
				ends[i], err = tun.NewEndpoint(cfg)
				return err
			})
			if err != nil {
				closeAll()
				return nil, err
			}
		}
		if err := joinEndpoints(s, ends[0], ends[1]); err != nil {
			closeAll()
			return nil, err
		}
		return &ourTunnel{a: ends[0], b: ends[1], mtu: mtu}, nil
	}
}
