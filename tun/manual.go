package tun

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/ipesp"
)

// ManualConfig is one manually keyed tunnel (`imsec tunnel`): a pair of SAs
// given by hand, ESP in UDP to a fixed or NAT-following peer, and an inner
// side on a netstack or a kernel TUN.
type ManualConfig struct {
	// Mode is how ESP travels (ManualModes); "" is ManualUDPEncTun. The
	// SAs' own Mode is set from it: transport for the trans modes, tunnel
	// for the others.
	Mode    string
	Out, In esp.Config
	// Listen is the local ESP-in-UDP address; Peer the far end's. With
	// Follow the peer's address follows its authenticated packets (it is
	// behind a NAT); else the socket is connected to Peer.
	Listen, Peer netip.AddrPort
	Follow       bool
	Keepalive    time.Duration // RFC 3948 keepalives; 0: none
	Inner        netip.Prefix  // our inner address and its prefix
	// MTU of the inner side; 0: what a 1500-byte path leaves after the
	// outbound SA's overhead.
	MTU int
	// TUN, if set, names a kernel TUN to create (needs CAP_NET_ADMIN),
	// with Routes through it; else the inner side is a netstack.
	TUN    string
	Routes []netip.Prefix
	// KeyLog, if set, gets both SAs in Wireshark's esp_sa format.
	KeyLog       io.Writer
	ParallelSeal bool
	BatchPad     int
	Logger       *slog.Logger
}

// The modes of a manual tunnel: ESP in UDP (RFC 3948) or plain in IP
// protocol 50 (a raw socket: CAP_NET_RAW), in tunnel or transport mode.
// They are sec-agree's mod values (TS 33.203 Annex H) in lower case, and
// udp-enc-trans, RFC 3948's transport mode, which sec-agree has no value
// for.
const (
	ManualUDPEncTun   = "udp-enc-tun"
	ManualUDPEncTrans = "udp-enc-trans"
	ManualTun         = "tun"
	ManualTrans       = "trans"
)

// ManualModes lists them, the default first.
var ManualModes = []string{ManualUDPEncTun, ManualUDPEncTrans, ManualTun, ManualTrans}

// manualPlain and manualTransport tell a mode's carriage and SA mode.
func manualPlain(mode string) bool     { return mode == ManualTun || mode == ManualTrans }
func manualTransport(mode string) bool { return mode == ManualTrans || mode == ManualUDPEncTrans }

// Manual is a running manual tunnel. Close stops it.
type Manual struct {
	*Endpoint
	inner netip.Prefix
	id    uint16 // ICMP identifier of Ping on a kernel TUN
}

// ManualError is every error of StartManual: the setting at fault
// ("out", "in", "keylog", "listen", "netstack", "tun", "route") and why.
type ManualError struct {
	Setting string
	Err     error
}

func (e *ManualError) Error() string { return e.Setting + ": " + e.Err.Error() }
func (e *ManualError) Unwrap() error { return e.Err }

// ErrNeedsNetAdmin is wrapped by StartManual's error when a kernel TUN
// cannot be created for lack of privilege.
var ErrNeedsNetAdmin = errors.New("creating a kernel TUN needs CAP_NET_ADMIN")

// StartManual brings a manual tunnel up. Its errors are *ManualError.
func StartManual(cfg ManualConfig) (*Manual, error) {
	if cfg.Mode == "" {
		cfg.Mode = ManualUDPEncTun
	}
	if !slices.Contains(ManualModes, cfg.Mode) {
		return nil, &ManualError{"mode", fmt.Errorf("%q: want one of %v", cfg.Mode, ManualModes)}
	}
	espMode := esp.Tunnel
	if manualTransport(cfg.Mode) {
		espMode = esp.Transport
		if cfg.TUN != "" {
			return nil, &ManualError{"mode", fmt.Errorf("%s hands segments on as from the peer's outer address: use the netstack, not a kernel TUN", cfg.Mode)}
		}
	}
	cfg.Out.Mode, cfg.In.Mode = espMode, espMode
	out, err := esp.NewOutbound(cfg.Out)
	if err != nil {
		return nil, &ManualError{"out", err}
	}
	in, err := esp.NewInbound(cfg.In)
	if err != nil {
		return nil, &ManualError{"in", err}
	}
	mtu := cfg.MTU
	if mtu == 0 {
		path := 1500
		if cfg.Peer.Addr().Is6() {
			path -= 20 // InnerMTUFor assumes a 20-byte outer IPv4 header
		}
		mtu = InnerMTUFor(path, out)
	}
	if cfg.KeyLog != nil {
		kl := esp.NewKeyLog(cfg.KeyLog)
		local := cfg.Listen.Addr()
		if local.IsUnspecified() {
			local = netip.Addr{} // the wildcard "*"
		}
		if err := kl.Log(cfg.Out, local, cfg.Peer.Addr()); err != nil {
			return nil, &ManualError{"keylog", err}
		}
		if err := kl.Log(cfg.In, cfg.Peer.Addr(), local); err != nil {
			return nil, &ManualError{"keylog", err}
		}
	}
	everything := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	ecfg := EndpointConfig{
		Listen: cfg.Listen,
		Pump:   Config{ParallelSeal: cfg.ParallelSeal, BatchPad: cfg.BatchPad, Logger: cfg.Logger},
		Peer: &PeerConfig{Name: "peer", Endpoint: cfg.Peer, FollowSource: cfg.Follow,
			Allowed: everything, Routes: everything, Keepalive: cfg.Keepalive},
	}
	if manualTransport(cfg.Mode) {
		// Inbound segments go to the inner address; outbound checksums
		// are made for the address we send from.
		outer := cfg.Listen.Addr()
		if !outer.IsValid() || outer.IsUnspecified() {
			outer = cfg.Inner.Addr()
		}
		tc := &ecfg.Pump.Transport
		if cfg.Inner.Addr().Is4() {
			tc.Local4 = cfg.Inner.Addr()
		} else {
			tc.Local6 = cfg.Inner.Addr()
		}
		if outer.Is4() {
			tc.Outer4 = outer
		} else {
			tc.Outer6 = outer
		}
	}
	switch {
	case manualPlain(cfg.Mode):
		// Plain ESP: a raw socket on the listen address; the peer is its
		// address, port 0 (see ipesp), and keepalives mean nothing.
		raw, err := ipesp.Listen(cfg.Listen.Addr())
		if err != nil {
			return nil, &ManualError{"listen", err}
		}
		ecfg.Listen, ecfg.Conn = netip.AddrPort{}, raw
		ecfg.Peer.Endpoint = netip.AddrPortFrom(cfg.Peer.Addr(), 0)
		ecfg.Peer.Keepalive = 0
	case !cfg.Follow:
		// A peer that cannot move gets a connected socket: the kernel
		// routes once instead of per datagram, and drops datagrams from
		// anyone else.
		ecfg.Connect = cfg.Peer
	}
	if cfg.TUN == "" {
		ecfg.Netstack = &NetstackOptions{MTU: mtu, Addresses: []netip.Prefix{cfg.Inner}, Name: "imsec-tunnel", Loopback: manualTransport(cfg.Mode)}
	} else if ecfg.Device, err = openManualTUN(cfg, mtu); err != nil {
		return nil, err
	}
	ep, err := NewEndpoint(ecfg)
	if err != nil {
		var ee *EndpointError
		switch {
		case errors.As(err, &ee) && ee.Step == StepSocket:
			return nil, &ManualError{"listen", ee.Err}
		case errors.As(err, &ee) && ee.Step == StepDevice:
			return nil, &ManualError{"netstack", ee.Err}
		case errors.As(err, &ee):
			return nil, &ManualError{ee.Step.String(), ee.Err}
		}
		return nil, err
	}
	if err := ep.Pump.AddInbound(ep.Peer, in); err != nil {
		ep.Close()
		return nil, err
	}
	ep.Peer.SetOutbound(out)
	var b [2]byte
	rand.Read(b[:])
	return &Manual{Endpoint: ep, inner: cfg.Inner, id: binary.BigEndian.Uint16(b[:])}, nil
}

// openManualTUN creates the TUN interface, gives it the inner address and
// routes, and brings it up (each failure naming what failed).
func openManualTUN(cfg ManualConfig, mtu int) (*Kernel, error) {
	k, err := CreateKernel(cfg.TUN, mtu)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, &ManualError{"tun", fmt.Errorf("%s: %w (%v)", cfg.TUN, ErrNeedsNetAdmin, err)}
		}
		return nil, &ManualError{"tun", fmt.Errorf("%s: %w", cfg.TUN, err)}
	}
	if err := k.AddAddress(cfg.Inner); err != nil {
		k.Close()
		return nil, &ManualError{"tun", fmt.Errorf("%s: %w", k.Name(), err)}
	}
	if err := k.SetUp(); err != nil {
		k.Close()
		return nil, &ManualError{"tun", fmt.Errorf("%s: %w", k.Name(), err)}
	}
	for _, r := range cfg.Routes {
		if err := k.AddRoute(r); err != nil {
			k.Close()
			return nil, &ManualError{"route", err}
		}
	}
	return k, nil
}

// pingPayload is ping(8)'s default payload length.
const pingPayload = 56

// Ping sends one ICMP echo request to dst through the tunnel and returns
// the round trip and the size of the ICMP message: from the netstack, or,
// on a kernel TUN, by the Pump from our inner address (taking the reply
// before the kernel sees it: the kernel's own ping would need a raw
// socket).
func (m *Manual) Ping(ctx context.Context, dst netip.Addr, seq int) (time.Duration, int, error) {
	if m.Netstack != nil {
		payload := make([]byte, pingPayload)
		for i := range payload {
			payload[i] = byte(i)
		}
		rtt, err := m.Netstack.Ping(ctx, dst, seq, payload)
		return rtt, 8 + len(payload), err
	}
	rtt, err := m.Pump.Ping(ctx, m.Peer, m.inner.Addr(), dst, m.id, uint16(seq))
	return rtt, 8 + len("imsec pinhole"), err
}

// DeviceName says what the inner side is: "netstack" or "TUN name".
func (m *Manual) DeviceName() string {
	if m.Kernel != nil {
		return "TUN " + m.Kernel.Name()
	}
	return "netstack"
}
