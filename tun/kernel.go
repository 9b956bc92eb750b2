package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Kernel is a Device on an operating-system TUN interface (Linux
// /dev/net/tun, macOS utun, Windows Wintun, the BSDs), opened through
// golang.zx2c4.com/wireguard/tun. It needs the privilege to create
// interfaces (CAP_NET_ADMIN on Linux, root on macOS, Administrator and
// wintun.dll on Windows).
//
// On Linux the interface is opened with IFF_VNET_HDR and TCP (and, from
// kernel 6.2, UDP) segmentation offload, as wireguard-go does: Read splits a
// large segment from the kernel into up to BatchSize() packets, so pass
// BatchSize() buffers; Write coalesces consecutive TCP/UDP packets of a flow
// (GRO) before handing them to the kernel, rewriting the packets in place.
// Elsewhere BatchSize is 1.
//
// Configuration. On Linux, SetUp, SetMTU, AddAddress, RemoveAddress and
// AddRoute configure the interface over a netlink socket opened when the Kernel is
// created, so they act in the network namespace the Kernel was created in
// whatever thread calls them (see doc.go). On other systems they return an
// error wrapping errors.ErrUnsupported: configure the interface with the
// system's tools.
type Kernel struct {
	dev  wgtun.Device
	name string
	mtu  atomic.Int64

	cfg kernelConfig // platform part (netlink on Linux)

	ready      atomic.Bool // name and cfg are set; watch may query the MTU
	closed     atomic.Bool
	closeOnce  sync.Once
	closeErr   error
	eventsDone chan struct{}

	wmu     sync.Mutex // serialises Write (which keeps wbufs)
	wbufs   [][]byte
	dropped atomic.Uint64
}

var _ Device = (*Kernel)(nil)

// CreateKernel creates (or, where the system allows, opens) the TUN
// interface name with the given MTU. On Linux name may be a pattern such as
// "imsec%d"; Name reports the result. On macOS name must be "utun" or
// "utunN".
func CreateKernel(name string, mtu int) (*Kernel, error) {
	if mtu < 576 || mtu > 65535 {
		return nil, fmt.Errorf("tun: kernel MTU %d outside [576, 65535]", mtu)
	}
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("tun: create %q: %w", name, err)
	}
	k := &Kernel{dev: dev, eventsDone: make(chan struct{})}
	go k.watch() // before anything can fail: it drains Events until Close
	if k.name, err = dev.Name(); err != nil {
		k.Close()
		return nil, fmt.Errorf("tun: name of %q: %w", name, err)
	}
	if err := k.cfg.open(k.name); err != nil {
		k.Close()
		return nil, err
	}
	m, err := k.queryMTU()
	if err != nil {
		k.Close()
		return nil, err
	}
	k.mtu.Store(int64(m))
	k.ready.Store(true)
	return k, nil
}

// watch drains the wireguard device's events (its listeners block if
// nobody does) and follows MTU changes. It ends when Close closes the
// channel.
func (k *Kernel) watch() {
	defer close(k.eventsDone)
	for e := range k.dev.Events() {
		if e&wgtun.EventMTUUpdate != 0 && k.ready.Load() && !k.closed.Load() {
			if m, err := k.queryMTU(); err == nil {
				k.mtu.Store(int64(m))
			}
		}
	}
}

// Read implements Device.
func (k *Kernel) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < MinOffset || len(sizes) < len(bufs) {
		return 0, ErrOffset
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	if k.closed.Load() {
		return 0, ErrClosed
	}
	n, err := k.dev.Read(bufs, sizes, offset)
	if err != nil && (k.closed.Load() || errors.Is(err, os.ErrClosed)) {
		return 0, ErrClosed
	}
	return n, err
}

// Write implements Device. Packets that are empty or neither IPv4 nor IPv6
// are dropped and counted (Dropped) before the rest go to the kernel.
func (k *Kernel) Write(bufs [][]byte, offset int) (int, error) {
	if offset < MinOffset {
		return 0, ErrOffset
	}
	if k.closed.Load() {
		return 0, ErrClosed
	}
	k.wmu.Lock()
	defer k.wmu.Unlock()
	k.wbufs = k.wbufs[:0]
	for _, b := range bufs {
		if len(b) < offset {
			return 0, ErrOffset
		}
		p := b[offset:]
		if len(p) < 20 || (p[0]>>4 != 4 && p[0]>>4 != 6) {
			k.dropped.Add(1)
			continue
		}
		k.wbufs = append(k.wbufs, b)
	}
	if len(k.wbufs) == 0 {
		return len(bufs), nil
	}
	_, err := k.dev.Write(k.wbufs, offset)
	clear(k.wbufs) // do not keep the caller's buffers alive
	if err != nil {
		if k.closed.Load() || errors.Is(err, os.ErrClosed) {
			return 0, ErrClosed
		}
		return 0, err
	}
	return len(bufs), nil
}

// MTU implements Device. It follows changes made to the interface after
// creation.
func (k *Kernel) MTU() int { return int(k.mtu.Load()) }

// BatchSize implements Device.
func (k *Kernel) BatchSize() int { return k.dev.BatchSize() }

// Name implements Device: the interface name.
func (k *Kernel) Name() string { return k.name }

// Dropped counts packets Write refused as neither IPv4 nor IPv6.
func (k *Kernel) Dropped() uint64 { return k.dropped.Load() }

// Close implements Device: it closes the interface (a Linux TUN created by
// CreateKernel disappears) and waits for wireguard's listener goroutines.
func (k *Kernel) Close() error {
	k.closeOnce.Do(func() {
		k.closed.Store(true)
		k.closeErr = k.dev.Close()
		<-k.eventsDone
		k.cfg.close()
	})
	return k.closeErr
}
