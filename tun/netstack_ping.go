package tun

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// errPingMismatch never leaves Ping: a reply for another sequence number or
// with other data is skipped.
var errPingMismatch = errors.New("tun: ping reply mismatch")

// Ping sends one ICMP (or ICMPv6) echo request to dst with the given
// sequence number and payload, and waits until ctx is done for the matching
// reply. It returns the round-trip time. The request leaves even if no
// reply comes, so Ping with a short deadline is also how a UE sends a
// "pinhole" echo to open a NAT binding.
//
// The stack itself answers echo requests sent to its addresses; nothing
// needs to be set up for that.
func (d *Netstack) Ping(ctx context.Context, dst netip.Addr, seq int, payload []byte) (time.Duration, error) {
	dst = dst.Unmap()
	if !dst.IsValid() || dst.IsUnspecified() {
		return 0, &net.OpError{Op: "ping", Net: "ip", Err: errInvalidAddr}
	}
	opErr := func(err error) error {
		if d.closed.Load() {
			err = net.ErrClosed
		}
		return &net.OpError{Op: "ping", Net: "ip", Addr: &net.IPAddr{IP: dst.AsSlice()}, Err: err}
	}
	proto := protoOf(dst)
	tproto := icmp.ProtocolNumber6
	msg := make([]byte, header.ICMPv4MinimumSize+len(payload)) // v4 and v6 echo headers are both 8 bytes
	if proto == ipv4.ProtocolNumber {
		tproto = icmp.ProtocolNumber4
		h := header.ICMPv4(msg)
		h.SetType(header.ICMPv4Echo)
		h.SetSequence(uint16(seq))
	} else {
		h := header.ICMPv6(msg)
		h.SetType(header.ICMPv6EchoRequest)
		h.SetSequence(uint16(seq))
	}
	copy(msg[header.ICMPv4MinimumSize:], payload)

	var wq waiter.Queue
	ep, terr := d.s.NewEndpoint(tproto, proto, &wq)
	if terr != nil {
		return 0, opErr(tcpipError(terr))
	}
	defer ep.Close()
	if terr := ep.Connect(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(dst.AsSlice())}); terr != nil {
		return 0, opErr(tcpipError(terr))
	}
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents | waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)

	start := time.Now()
	for {
		var r bytes.Reader
		r.Reset(msg)
		_, terr := ep.Write(&r, tcpip.WriteOptions{})
		if terr == nil {
			break
		}
		if _, block := terr.(*tcpip.ErrWouldBlock); !block {
			return 0, opErr(tcpipError(terr))
		}
		select {
		case <-ctx.Done():
			return 0, opErr(ctx.Err())
		case <-notify:
		}
	}

	buf := make([]byte, len(msg)+header.ICMPv4MinimumSize)
	for {
		w := tcpip.SliceWriter(buf)
		res, terr := ep.Read(&w, tcpip.ReadOptions{})
		switch terr.(type) {
		case nil:
			if err := checkEchoReply(proto, buf[:res.Count], uint16(seq), payload); err == nil {
				return time.Since(start), nil
			}
			continue
		case *tcpip.ErrWouldBlock:
		default:
			return 0, opErr(tcpipError(terr))
		}
		if d.closed.Load() {
			return 0, opErr(net.ErrClosed)
		}
		select {
		case <-ctx.Done():
			return 0, opErr(ctx.Err())
		case <-notify:
		}
	}
}

func checkEchoReply(proto tcpip.NetworkProtocolNumber, b []byte, seq uint16, payload []byte) error {
	if len(b) < header.ICMPv4MinimumSize || !bytes.Equal(b[header.ICMPv4MinimumSize:], payload) {
		return errPingMismatch
	}
	if proto == ipv4.ProtocolNumber {
		h := header.ICMPv4(b)
		if h.Type() != header.ICMPv4EchoReply || h.Sequence() != seq {
			return errPingMismatch
		}
		return nil
	}
	h := header.ICMPv6(b)
	if h.Type() != header.ICMPv6EchoReply || h.Sequence() != seq {
		return errPingMismatch
	}
	return nil
}
