package sip

import (
	"context"
	"errors"
	"net"
	"testing"
)

// imsec: with WithTransportLayerNoServerConnections a request with no
// pooled connection to answer on gets ErrNoServerConnection and no socket
// is opened; without it (upstream behaviour) a new host socket is.
func TestImsecNoServerConnections(t *testing.T) {
	req := func() *Request {
		r := NewRequest(OPTIONS, Uri{Scheme: "sip", Host: "127.0.0.1", Port: 5060})
		via := &ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: 9, Params: NewParams()}
		via.Params.Add("branch", GenerateBranch())
		r.AppendHeader(via)
		r.SetTransport("UDP")
		r.SetSource("127.0.0.1:9")
		return r
	}
	l := NewTransportLayer(net.DefaultResolver, NewParser(), nil, WithTransportLayerNoServerConnections())
	defer l.Close()
	if c, err := l.serverRequestConnection(context.Background(), req()); !errors.Is(err, ErrNoServerConnection) || c != nil {
		t.Fatalf("conn %v, err %v; want ErrNoServerConnection", c, err)
	}
	if n := l.udp.pool.Size(); n != 0 {
		t.Fatalf("%d pooled connections, want 0", n)
	}

	up := NewTransportLayer(net.DefaultResolver, NewParser(), nil)
	defer up.Close()
	c, err := up.serverRequestConnection(context.Background(), req())
	if err != nil || c == nil {
		t.Fatalf("upstream behaviour: conn %v, err %v; want a new connection", c, err)
	}
	c.Close()
}
