package sip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Glue between sipgo and our sockets (docs/sipgo.md says what needs care).

// errKernelDial is what a protected user agent's TCP dialer returns: every
// TCP connection on the protected side is dialed on the netstack and handed
// to sipgo, never dialed by sipgo on the host (that would leave the tunnel).
var errKernelDial = errors.New("sip: refusing a host socket on the protected side")

// newUA makes a sipgo user agent with our logger and a read filter. For the
// protected side, kernel TCP dials are refused.
func newUA(name string, log *slog.Logger, filter sip.TransportReadFilter, protected bool) (*sipgo.UserAgent, error) {
	// Answer only on our own sockets: never a new host socket towards a Via
	// address (a reflection, and on the protected side a leak out of the
	// tunnel; docs/sipgo.md, item 11).
	tl := []sip.TransportLayerOption{sip.WithTransportLayerLogger(log), sip.WithTransportLayerNoServerConnections()}
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

// poolBackoff is how waitPool and ensureTCP poll sipgo's pool, which
// tells nobody when a connection enters it: 100 µs doubling to 10 ms.
func poolBackoff(ctx context.Context, cond func() bool) error {
	wait := 100 * time.Microsecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 10*time.Millisecond)
		t.Reset(wait)
	}
	return nil
}

// waitPool waits until a served listener is in sipgo's connection pool
// (Serve* registers it from its own goroutine).
func waitPool(ctx context.Context, ua *sipgo.UserAgent, network, addr string) error {
	err := poolBackoff(ctx, func() bool {
		c, err := ua.TransportLayer().GetConnection(network, addr)
		if err == nil && c != nil {
			c.TryClose() // GetConnection took a reference
			return true
		}
		return false
	})
	if err != nil {
		return errors.New("sip: listener " + network + " " + addr + " did not come up")
	}
	return nil
}

// connInjector is a net.Listener whose Accept yields connections we dialed
// ourselves (on the netstack, from a chosen port-c), so sipgo's TCP
// transport takes them into its pool (docs/sipgo.md, item 2).
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

// maxUDPMessage is the size above which a request goes over TCP (RFC 3261
// §18.1.1: 1300 bytes when the path MTU is unknown).
const maxUDPMessage = 1300

// udpSlack is what sipgo may still add to a request after prepareRequest
// measured it (a Via parameter such as rport): its UDP transport refuses
// anything over maxUDPMessage as it writes, so a request within this much
// of the limit goes over TCP too. A re-REGISTER offering two modes was
// measured at 1,297 bytes here and refused by sipgo.
const udpSlack = 64

// sendRequest sends req from laddr to raddr and waits for its final
// response (see prepareRequest for the transport).
func sendRequest(ctx context.Context, cli *sipgo.Client, ua *sipgo.UserAgent, inet innerNet, inj *connInjector,
	req *sip.Request, laddr, raddr netip.AddrPort) (*sip.Response, error) {
	return requester{cli: cli, prep: func(ctx context.Context, req *sip.Request) error {
		return prepareRequest(ctx, cli, ua, inet, inj, req, laddr, raddr)
	}}.send(ctx, req)
}

// requester sends requests along one path: prep completes a request for it
// (Via, transport, source address), cli carries it.
type requester struct {
	cli  *sipgo.Client
	prep func(ctx context.Context, req *sip.Request) error
}

// send sends req and waits for its final response.
func (r requester) send(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	if err := r.prep(ctx, req); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, defaultSIPTimeout)
	defer cancel()
	return r.cli.Do(ctx, req, noBuild)
}

// write sends req with no transaction (ACK).
func (r requester) write(req *sip.Request) error {
	if err := r.prep(context.Background(), req); err != nil {
		return err
	}
	return r.cli.WriteRequest(req, noBuild)
}

// noBuild is the ClientRequestOption that tells sipgo the request is built
// (and keeps it from applying its own defaults).
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// prepareRequest completes req (Via, Max-Forwards, ...) for sending from
// laddr to raddr. A message larger than maxUDPMessage goes over TCP: the
// connection is dialed on inet from laddr (the protected client port) if
// sipgo has none from there yet, and handed to sipgo through inj. Without
// inet (the host side) sipgo dials TCP itself.
func prepareRequest(ctx context.Context, cli *sipgo.Client, ua *sipgo.UserAgent, inet innerNet, inj *connInjector,
	req *sip.Request, laddr, raddr netip.AddrPort) error {
	req.SetDestination(raddr.String())
	if err := sipgo.ClientRequestBuild(cli, req); err != nil {
		return err
	}
	req.Laddr = sip.Addr{IP: laddr.Addr().AsSlice(), Port: int(laddr.Port())}
	if len(req.String())+udpSlack <= maxUDPMessage {
		return nil
	}
	req.RemoveHeader("Via")
	req.SetTransport("TCP")
	if err := sipgo.ClientRequestAddVia(cli, req); err != nil {
		return err
	}
	req.Via().Transport = "TCP"
	// Looked up by the remote address (docs/sipgo.md, item 4): no Laddr for TCP.
	req.Laddr = sip.Addr{}
	if inet != nil && inj != nil {
		return ensureTCP(ctx, ua, inet, inj, laddr, raddr)
	}
	return nil
}

// ensureTCP makes sure sipgo's pool holds a TCP connection to raddr from
// laddr, dialing it on inet when it does not.
func ensureTCP(ctx context.Context, ua *sipgo.UserAgent, inet innerNet, inj *connInjector, laddr, raddr netip.AddrPort) error {
	// Reuse a pooled connection only if it leaves from the right port-c:
	// after a rekey the new SA set has a new port-c, and the old connection
	// must not carry the new set's messages.
	if pooledFrom(ua, raddr) == laddr {
		return nil
	}
	conn, err := inet.DialTCP(ctx, laddr, raddr)
	if err != nil {
		return fmt.Errorf("sip: TCP from %v to %v: %w", laddr, raddr, err)
	}
	if !inj.inject(conn) {
		conn.Close()
		return net.ErrClosed
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := poolBackoff(pctx, func() bool { return pooledFrom(ua, raddr) == laddr }); err != nil {
		return fmt.Errorf("sip: TCP connection %v -> %v did not reach the pool", laddr, raddr)
	}
	return nil
}

// pooledFrom returns the local address of sipgo's pooled TCP connection to
// raddr, or the zero value.
func pooledFrom(ua *sipgo.UserAgent, raddr netip.AddrPort) netip.AddrPort {
	c, err := ua.TransportLayer().GetConnection("tcp", raddr.String())
	if err != nil || c == nil {
		return netip.AddrPort{}
	}
	defer c.TryClose()
	if lc, ok := c.(interface{ LocalAddr() net.Addr }); ok {
		return addrPortOf(lc.LocalAddr())
	}
	return netip.AddrPort{}
}
