package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/imsec/imsec/tun/udp"
)

// EndpointConfig describes one end of a tunnel for NewEndpoint: the
// ESP-in-UDP socket, an optional wrapper around it, the device, the Pump
// between them and, if Peer is set, the Pump's first peer.
type EndpointConfig struct {
	// The socket. Conn, if set, is a ready one (an in-memory socket in
	// tests). Otherwise NewEndpoint binds a udp.Conn to Listen (port 0: a
	// free port) and, if Connect is valid, connects it there (udp.Dial;
	// Listen may then be the zero value): the kernel routes once and drops
	// datagrams from anyone else, which suits a peer at a fixed address.
	Listen  netip.AddrPort
	Connect netip.AddrPort
	Conn    PacketConn

	// Wrap, if set, wraps the socket (a pcap tap, a fault injector); the
	// Pump sends and receives through what it returns. The wrapper's Close
	// should close the socket it wraps, but need not: the Endpoint closes
	// the socket after the wrapper either way.
	Wrap func(PacketConn) PacketConn

	// The device, exactly one of: Netstack, a new gVisor netstack with
	// these options; Kernel, a new kernel TUN interface; Device, a ready
	// one.
	Netstack *NetstackOptions
	Kernel   *KernelOptions
	Device   Device

	// Pump configures the Pump. Its Device and Conn must be nil: NewEndpoint
	// sets them.
	Pump Config

	// Peer, if set, is added to the Pump (Endpoint.Peer). SAs are the
	// caller's to install: Pump.AddInbound, Peer.SetOutbound.
	Peer *PeerConfig
}

// KernelOptions describes the kernel TUN interface of an endpoint:
// CreateKernel(Name, MTU), then each of Addresses (AddAddress), SetUp if
// Up, then each of Routes (AddRoute; a route needs the interface up). On
// Linux it is created in the network namespace of the calling thread (see
// Kernel); elsewhere only Name and MTU are supported.
type KernelOptions struct {
	Name      string // as CreateKernel takes it; on Linux a pattern such as "imsec%d"
	MTU       int    // required: 576..65535
	Addresses []netip.Prefix
	Up        bool
	Routes    []netip.Prefix
}

// Endpoint is one end of a tunnel, as NewEndpoint assembled it: socket ->
// optional wrapper -> Pump <- device, with the Pump's first peer. The
// exported fields are set by NewEndpoint and are not to be changed; the
// Pump and Peer are used as usual (AddInbound, SetOutbound, AddPeer, ...).
//
// The Endpoint owns the socket, the wrapper, the device and the Pump:
// Close closes them all, and is how they are to be closed (the device and
// the socket are the Pump's to use while it runs).
type Endpoint struct {
	Pump     *Pump
	Peer     *Peer     // nil without EndpointConfig.Peer
	Device   Device    // what the Pump reads and writes
	Netstack *Netstack // Device, if it is a Netstack; else nil
	Kernel   *Kernel   // Device, if it is a Kernel; else nil

	raw     PacketConn // the socket under any wrapper
	wrapped bool       // Pump.conn is a wrapper around raw, not raw itself
}

// EndpointStep is a step of NewEndpoint. An EndpointError names the one
// that failed, so that a caller can say, for instance, which flag was
// wrong.
type EndpointStep uint8

// The steps of NewEndpoint, in order.
const (
	StepConfig      EndpointStep = iota + 1 // checking the EndpointConfig; calling Wrap
	StepSocket                              // binding (and connecting) the socket
	StepDevice                              // creating the Netstack or kernel TUN
	StepKernelSetup                         // the TUN's addresses, link up and routes
	StepPump                                // starting the Pump
	StepPeer                                // adding the peer
)

var stepNames = [...]string{StepConfig: "config", StepSocket: "socket", StepDevice: "device",
	StepKernelSetup: "kernel setup", StepPump: "pump", StepPeer: "peer"}

func (s EndpointStep) String() string {
	if int(s) < len(stepNames) && stepNames[s] != "" {
		return stepNames[s]
	}
	return fmt.Sprintf("EndpointStep(%d)", uint8(s))
}

// EndpointError is every error NewEndpoint returns: the step that failed
// and why. Err is the cause as the step reported it (a *net.OpError for
// the socket, CreateKernel's error for a TUN, ...).
type EndpointError struct {
	Step EndpointStep
	Err  error
}

func (e *EndpointError) Error() string {
	// "tun: endpoint device: netstack MTU ...", not "...: tun: netstack".
	return "tun: endpoint " + e.Step.String() + ": " + strings.TrimPrefix(e.Err.Error(), "tun: ")
}
func (e *EndpointError) Unwrap() error { return e.Err }

// NewEndpoint builds one end of a tunnel: it binds the socket (or takes
// cfg.Conn), wraps it, creates the device (or takes cfg.Device), starts a
// Pump between them and adds cfg.Peer. The steps run in that order.
//
// Ownership: cfg.Conn and cfg.Device belong to the Endpoint from the call
// on. If NewEndpoint fails it has released everything it was given or
// made (the socket and its wrapper, the device, the Pump's goroutines)
// before it returns, and the error is an *EndpointError.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	e := &Endpoint{}
	var pc PacketConn // what the Pump uses: the wrapper, else the socket
	fail := func(step EndpointStep, err error) (*Endpoint, error) {
		if e.Pump != nil {
			e.close()
		} else {
			if e.Device != nil {
				e.Device.Close()
			}
			if pc != nil {
				pc.Close()
			}
			if e.wrapped {
				e.raw.Close()
			}
		}
		return nil, &EndpointError{Step: step, Err: err}
	}
	// Take what we were given first, so that a bad config releases it too.
	e.raw, e.Device, pc = cfg.Conn, cfg.Device, cfg.Conn
	if err := cfg.check(); err != nil {
		return fail(StepConfig, err)
	}

	if e.raw == nil {
		var c *udp.Conn
		var err error
		if cfg.Connect.IsValid() {
			c, err = udp.Dial(cfg.Listen, cfg.Connect)
		} else {
			c, err = udp.Listen(cfg.Listen)
		}
		if err != nil {
			return fail(StepSocket, err)
		}
		e.raw = c
	}
	pc = e.raw
	if cfg.Wrap != nil {
		w := cfg.Wrap(e.raw)
		if w == nil {
			return fail(StepConfig, errors.New("the Wrap func returned nil"))
		}
		pc, e.wrapped = w, true
	}

	switch {
	case cfg.Netstack != nil:
		ns, err := NewNetstack(*cfg.Netstack)
		if err != nil {
			return fail(StepDevice, err)
		}
		e.Device = ns
	case cfg.Kernel != nil:
		k, err := CreateKernel(cfg.Kernel.Name, cfg.Kernel.MTU)
		if err != nil {
			return fail(StepDevice, err)
		}
		e.Device = k
		if err := cfg.Kernel.setup(k); err != nil {
			return fail(StepKernelSetup, err)
		}
	}
	e.Netstack, _ = e.Device.(*Netstack)
	e.Kernel, _ = e.Device.(*Kernel)

	pcfg := cfg.Pump
	pcfg.Device, pcfg.Conn = e.Device, pc
	p, err := NewPump(pcfg)
	if err != nil {
		return fail(StepPump, err)
	}
	e.Pump = p
	if cfg.Peer != nil {
		if e.Peer, err = p.AddPeer(*cfg.Peer); err != nil {
			return fail(StepPeer, err)
		}
	}
	return e, nil
}

// check reports a config NewEndpoint cannot build.
func (cfg *EndpointConfig) check() error {
	devices := 0
	for _, set := range []bool{cfg.Netstack != nil, cfg.Kernel != nil, cfg.Device != nil} {
		if set {
			devices++
		}
	}
	switch {
	case devices != 1:
		return fmt.Errorf("want exactly one of Netstack, Kernel and Device; %d given", devices)
	case cfg.Conn != nil && (cfg.Listen.IsValid() || cfg.Connect.IsValid()):
		return errors.New("both Conn and Listen or Connect given: want a ready socket or an address to bind")
	case cfg.Conn == nil && !cfg.Listen.IsValid() && !cfg.Connect.IsValid():
		return errors.New("no socket: set Listen (or Connect, or Conn)")
	case cfg.Pump.Device != nil || cfg.Pump.Conn != nil:
		return errors.New("the Device and Conn of the Pump config must be nil: NewEndpoint sets them")
	}
	return nil
}

// setup configures a new kernel TUN as o says.
func (o *KernelOptions) setup(k *Kernel) error {
	for _, a := range o.Addresses {
		if err := k.AddAddress(a); err != nil {
			return err
		}
	}
	if o.Up {
		if err := k.SetUp(); err != nil {
			return err
		}
	}
	for _, r := range o.Routes {
		if err := k.AddRoute(r); err != nil {
			return err
		}
	}
	return nil
}

// LocalAddr is the socket's bound address.
func (e *Endpoint) LocalAddr() netip.AddrPort { return e.Pump.LocalAddr() }

// Close closes everything the Endpoint owns, the way Pump.Close does
// (the device, then the wrapper or the socket), closes the socket under
// the wrapper too, and then waits for the Pump's goroutines and timers to
// stop. It is idempotent and returns nil.
//
// Calling Pump.Close instead is enough when the wrapper's Close closes
// the socket it wraps (as pcap.Tap's does); otherwise the Pump waits for
// a socket read that never ends.
func (e *Endpoint) Close() error { return e.close() }

// SocketDrops is how many datagrams the kernel dropped at the socket, its
// receive buffer full (udp.Conn.Drops); ok is false where the socket
// cannot say (not a udp.Conn, or not Linux).
func (e *Endpoint) SocketDrops() (n uint64, ok bool) {
	if d, is := e.raw.(interface{ Drops() (uint64, bool) }); is {
		return d.Drops()
	}
	return 0, false
}

func (e *Endpoint) close() error {
	return e.Pump.closeWith(func() {
		if e.wrapped {
			e.raw.Close()
		}
	})
}
