package sip

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Glue between sipgo and our sockets (see shared/docs/sipgo-over-netstack.md).

// errKernelDial is what a protected user agent's TCP dialer returns: every
// TCP connection on the protected side is dialed on the netstack and handed
// to sipgo, never dialed by sipgo on the host (that would leave the tunnel).
var errKernelDial = errors.New("sip: refusing a host socket on the protected side")

// newUA makes a sipgo user agent with our logger and a read filter. For the
// protected side, kernel TCP dials are refused.
func newUA(name string, log *slog.Logger, filter sip.TransportReadFilter, protected bool) (*sipgo.UserAgent, error) {
	tl := []sip.TransportLayerOption{sip.WithTransportLayerLogger(log)}
	if filter != nil {
		tl = append(tl, sip.WithTransportLayerReadFilter(filter))
	}
	if protected {
		tcp := &sip.TransportTCP{DialerCreate: func(net.Addr) net.Dialer {
			return net.Dialer{ControlContext: func(context.Context, string, string, syscall.RawConn) error {
				return errKernelDial
			}}
		}}
		tl = append(tl, sip.WithTransportLayerTransports(sip.TransportsConfig{TCP: tcp}))
	}
	return sipgo.NewUA(sipgo.WithUserAgent(name), sipgo.WithUserAgentTransportLayerOptions(tl...))
}

// waitPool waits until a served listener is in sipgo's connection pool
// (Serve* registers it from its own goroutine).
func waitPool(ctx context.Context, ua *sipgo.UserAgent, network, addr string) error {
	for {
		if c, err := ua.TransportLayer().GetConnection(network, addr); err == nil && c != nil {
			c.TryClose() // GetConnection took a reference
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("sip: listener " + network + " " + addr + " did not come up")
		case <-time.After(time.Millisecond):
		}
	}
}

// connInjector is a net.Listener whose Accept yields connections we dialed
// ourselves (on the netstack, from a chosen port-c), so sipgo's TCP
// transport takes them into its pool (probe §2).
type connInjector struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newConnInjector(addr net.Addr) *connInjector {
	return &connInjector{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connInjector) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connInjector) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *connInjector) Addr() net.Addr { return l.addr }

// inject hands c to sipgo; false if the injector is closed.
func (l *connInjector) inject(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}
