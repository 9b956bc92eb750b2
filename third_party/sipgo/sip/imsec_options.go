package sip

import "errors"

// imsec: options the fork adds (third_party/sipgo/IMSEC.md).

// ErrNoServerConnection is returned, and the response dropped, when a
// server transaction has no pooled connection to answer on and the
// transport layer may not create one (WithTransportLayerNoServerConnections).
var ErrNoServerConnection = errors.New("sip: no connection to answer on, and creating one is disabled")

// WithTransportLayerNoServerConnections makes a server answer requests only
// on connections it already has (the listener the request came in on, or
// a connection in the pool). Upstream, a request whose listener has gone
// (closed while the request was being handled) or whose source is not in
// the pool is answered through a new host socket towards its Via address:
// a socket nobody closes, a reflection towards an address the sender
// chose, and, for imsec's protected side, a packet that leaves the tunnel.
func WithTransportLayerNoServerConnections() TransportLayerOption {
	return func(l *TransportLayer) { l.noServerConnections = true }
}
