package tun

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// linkEndpoint is the gVisor link layer under a Netstack: a point-to-point
// link with no link header and no address resolution. Packets the stack
// sends are queued (one reference each) on out until Netstack.Read copies
// them into the caller's buffers; packets from Netstack.Write go straight to
// the attached dispatcher.
//
// It is written for this package rather than taken from link/channel so that
// an outbound packet costs a reference count instead of a Clone, and so that
// Read can block on a channel that Close also unblocks. When out is full the
// packet is dropped and counted, as a real NIC's ring would: blocking here
// would stall gVisor's TCP processor goroutines.
type linkEndpoint struct {
	out  chan *stack.PacketBuffer
	done chan struct{} // closed by close(); unblocks Read

	mtu atomic.Uint32

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher // nil when detached

	closeOnce sync.Once
	queueDrop atomic.Uint64
}

var _ stack.LinkEndpoint = (*linkEndpoint)(nil)

func newLinkEndpoint(queueLen int, mtu uint32) *linkEndpoint {
	l := &linkEndpoint{
		out:  make(chan *stack.PacketBuffer, queueLen),
		done: make(chan struct{}),
	}
	l.mtu.Store(mtu)
	return l
}

// deliver hands one inbound packet to the stack. It reports false when no
// stack is attached (the Netstack is closing).
func (l *linkEndpoint) deliver(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) bool {
	l.mu.RLock()
	d := l.dispatcher
	l.mu.RUnlock()
	if d == nil {
		return false
	}
	d.DeliverNetworkPacket(proto, pkt)
	return true
}

// close unblocks readers and releases queued packets. Safe to call twice.
func (l *linkEndpoint) close() {
	l.closeOnce.Do(func() { close(l.done) })
	l.drain()
}

func (l *linkEndpoint) drain() {
	for {
		select {
		case pkt := <-l.out:
			pkt.DecRef()
		default:
			return
		}
	}
}

// WritePackets implements stack.LinkWriter.
func (l *linkEndpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	select {
	case <-l.done:
		return 0, &tcpip.ErrClosedForSend{}
	default:
	}
	n := 0
	for _, pkt := range pkts.AsSlice() {
		select {
		case l.out <- pkt.IncRef():
			n++
		default:
			// The send expression (IncRef) was evaluated on entering the
			// select, so give that reference back.
			pkt.DecRef()
			l.queueDrop.Add(1)
			// Report the rest as not written; the stack counts them
			// and TCP recovers them as losses.
			if n == 0 {
				return 0, &tcpip.ErrNoBufferSpace{}
			}
			return n, nil
		}
	}
	return n, nil
}

// MTU implements stack.NetworkLinkEndpoint.
func (l *linkEndpoint) MTU() uint32 { return l.mtu.Load() }

// SetMTU implements stack.NetworkLinkEndpoint.
func (l *linkEndpoint) SetMTU(mtu uint32) { l.mtu.Store(mtu) }

// MaxHeaderLength implements stack.NetworkLinkEndpoint: no link header.
func (*linkEndpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.NetworkLinkEndpoint: a tunnel has none.
func (*linkEndpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.NetworkLinkEndpoint; ignored.
func (*linkEndpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.NetworkLinkEndpoint. No resolution, no
// checksum offload: every packet leaving the stack carries valid checksums,
// because it leaves the process (inside ESP) and meets a real stack.
func (*linkEndpoint) Capabilities() stack.LinkEndpointCapabilities { return 0 }

// Attach implements stack.NetworkLinkEndpoint.
func (l *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	l.mu.Lock()
	l.dispatcher = d
	l.mu.Unlock()
}

// IsAttached implements stack.NetworkLinkEndpoint.
func (l *linkEndpoint) IsAttached() bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.dispatcher != nil
}

// Wait implements stack.NetworkLinkEndpoint: the endpoint starts no
// goroutines.
func (*linkEndpoint) Wait() {}

// ARPHardwareType implements stack.NetworkLinkEndpoint.
func (*linkEndpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.NetworkLinkEndpoint: no link header.
func (*linkEndpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.NetworkLinkEndpoint: no link header.
func (*linkEndpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.NetworkLinkEndpoint; the stack calls it when the
// NIC is removed.
func (l *linkEndpoint) Close() { l.close() }

// SetOnCloseAction implements stack.NetworkLinkEndpoint; unused.
func (*linkEndpoint) SetOnCloseAction(func()) {}

// copyPacket copies the bytes of pkt (headers and payload) to dst, which
// must hold pkt.Size() bytes, without allocating.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) int {
	vl, skip := pkt.AsViewList()
	size := pkt.Size()
	n := 0
	for v := vl.Front(); v != nil && n < size; v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		s = s[skip:]
		skip = 0
		if rem := size - n; len(s) > rem {
			s = s[:rem]
		}
		n += copy(dst[n:], s)
	}
	return n
}
