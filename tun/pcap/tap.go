package pcap

import (
	"net/netip"
	"sync/atomic"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/udp"
)

// TapConn is a tun.PacketConn that records every datagram of the one it
// wraps. Make one with Tap.
type TapConn struct {
	conn   tun.PacketConn
	w      *Writer
	local  netip.AddrPort
	failed atomic.Uint64
}

var _ tun.PacketConn = (*TapConn)(nil)

// Tap wraps conn so that every datagram it sends or receives is also
// written to w (as sip.ServerConfig.WrapESP or UEConfig.WrapESP wants):
//
//   - sent: from conn.LocalAddr() to the message's Addr, recorded when
//     handed to WriteBatch, before the socket sends it (so a request is
//     always in the file before its answer). A datagram the socket then
//     refuses is in the capture all the same.
//   - received: from the message's Addr to conn.LocalAddr(), recorded after
//     ReadBatch returns it.
//
// The local address is read once, now. A socket bound to a wildcard
// (0.0.0.0 or ::) does not know which of the host's addresses a datagram
// used: the capture then shows the unspecified address with the real local
// port on our side of every packet, and the peer's address as the socket
// saw it. Tshark dissects such packets normally (the ESP key log uses "*"
// addresses); only the IP conversation is unknown.
//
// Recording never fails the socket: a record the Writer refuses (closed,
// or its file failed) is counted in Failed and the datagram goes through.
// Close closes conn, not w.
func Tap(conn tun.PacketConn, w *Writer) *TapConn {
	return &TapConn{conn: conn, w: w, local: conn.LocalAddr()}
}

// ReadBatch reads from the wrapped socket and records what it returns.
func (t *TapConn) ReadBatch(msgs []udp.Message) (int, error) {
	n, err := t.conn.ReadBatch(msgs)
	for i := range msgs[:max(n, 0)] {
		m := &msgs[i]
		t.record(m.Addr, t.local, m.Buf[:m.N])
	}
	return n, err
}

// WriteBatch records msgs and sends them on the wrapped socket.
func (t *TapConn) WriteBatch(msgs []udp.Message) (int, error) {
	for i := range msgs {
		m := &msgs[i]
		t.record(t.local, m.Addr, m.Buf[:m.N])
	}
	return t.conn.WriteBatch(msgs)
}

func (t *TapConn) record(src, dst netip.AddrPort, b []byte) {
	if t.w.WriteUDP(src, dst, b) != nil {
		t.failed.Add(1)
	}
}

// BatchSize is the wrapped socket's.
func (t *TapConn) BatchSize() int { return t.conn.BatchSize() }

// Offload is the wrapped socket's (udp.Conn.Offload), or no offload if it
// cannot tell: the pump pads packets to one length only for a socket that
// segments (tun.Config.BatchPad).
func (t *TapConn) Offload() (gso, gro bool) {
	if o, ok := t.conn.(interface{ Offload() (gso, gro bool) }); ok {
		return o.Offload()
	}
	return false, false
}

// LocalAddr is the wrapped socket's.
func (t *TapConn) LocalAddr() netip.AddrPort { return t.conn.LocalAddr() }

// SetQuiet is the wrapped socket's (udp.Conn.SetQuiet), or nothing if it
// has none: the Pump's reader, which reads through the tap, asks it while
// it coalesces keepalives.
func (t *TapConn) SetQuiet(quiet bool) error {
	if q, ok := t.conn.(interface{ SetQuiet(bool) error }); ok {
		return q.SetQuiet(quiet)
	}
	return nil
}

// Close closes the wrapped socket; the Writer stays open.
func (t *TapConn) Close() error { return t.conn.Close() }

// Failed is how many datagrams went through but could not be recorded.
func (t *TapConn) Failed() uint64 { return t.failed.Load() }

// TapFunc returns a wrapper that taps a socket into w, in the shape of the
// WrapESP hooks of sip.ServerConfig and sip.UEConfig.
func TapFunc(w *Writer) func(tun.PacketConn) tun.PacketConn {
	return func(c tun.PacketConn) tun.PacketConn { return Tap(c, w) }
}
