package cx

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam/sm/smpeer"

	"github.com/imsec/imsec/akakeys/hss"
)

func hssForFuzz(f *testing.F) *hss.HSS {
	s := hss.NewMemStore()
	_ = s.Add(context.Background(), alice())
	h, err := hss.New(s, hss.Config{})
	if err != nil {
		f.Fatal(err)
	}
	return h
}

func handshakenCtx() context.Context {
	return smpeer.NewContext(context.Background(), &smpeer.Metadata{OriginHost: "s", OriginRealm: "r"})
}

type nopListener struct{}

func (nopListener) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (nopListener) Close() error              { return nil }
func (nopListener) Addr() net.Addr            { return &net.TCPAddr{} }

// discardConn is a net.Conn that swallows writes.
type discardConn struct{}

func (discardConn) Read([]byte) (int, error)         { return 0, net.ErrClosed }
func (discardConn) Write(b []byte) (int, error)      { return len(b), nil }
func (discardConn) Close() error                     { return nil }
func (discardConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (discardConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (discardConn) SetDeadline(time.Time) error      { return nil }
func (discardConn) SetReadDeadline(time.Time) error  { return nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
