//go:build linux

package tun_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/imsec/imsec/tun"
)

// TestEndpointKernel: an endpoint on a kernel TUN in a fresh network
// namespace gets its address, link and route from KernelOptions, and Close
// removes the interface; a setup step that fails removes it too.
func TestEndpointKernel(t *testing.T) {
	noLeaks(t)
	ns := newNetns(t)
	any4 := netip.MustParseAddrPort("0.0.0.0:0") // the fresh namespace's loopback is down

	var e *tun.Endpoint
	var err error
	var ifc *net.Interface
	ns.do(func() {
		e, err = tun.NewEndpoint(tun.EndpointConfig{
			Listen: any4,
			Kernel: &tun.KernelOptions{Name: "imsecep%d", MTU: 1400, Addresses: []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24")},
				Up: true, Routes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
		})
		if err == nil {
			ifc, err = net.InterfaceByName(e.Kernel.Name())
		}
	})
	fakeMust(t, err)
	if e.Kernel == nil || e.Netstack != nil || e.Device != tun.Device(e.Kernel) || e.Kernel.MTU() != 1400 || ifc.Flags&net.FlagUp == 0 {
		t.Fatalf("endpoint %+v, interface %+v", e, ifc)
	}
	name := e.Kernel.Name()
	fakeMust(t, e.Close())
	ns.do(func() { _, err = net.InterfaceByName(name) })
	if err == nil {
		t.Errorf("%s still exists after Close", name)
	}

	// A bad address: the TUN is made, then removed with the socket.
	ns.do(func() {
		_, err = tun.NewEndpoint(tun.EndpointConfig{Listen: any4, Kernel: &tun.KernelOptions{Name: "imsecbad0", MTU: 1400, Addresses: []netip.Prefix{{}}}})
	})
	var ee *tun.EndpointError
	if !errors.As(err, &ee) || ee.Step != tun.StepKernelSetup {
		t.Fatalf("bad address: %v, want an error at step %v", err, tun.StepKernelSetup)
	}
	ns.do(func() { _, err = net.InterfaceByName("imsecbad0") })
	if err == nil {
		t.Error("imsecbad0 left behind by a failed NewEndpoint")
	}
}
