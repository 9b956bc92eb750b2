package cx

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"
)

// rawPeer is a hand-driven TCP peer of the server.
type rawPeer struct {
	nc net.Conn
	r  *bufio.Reader
}

func dialRaw(t *testing.T, e *env) *rawPeer {
	t.Helper()
	nc, err := net.Dial("tcp", e.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	return &rawPeer{nc: nc, r: bufio.NewReader(nc)}
}

func (p *rawPeer) send(t *testing.T, m *diam.Message) {
	t.Helper()
	b, err := m.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	p.nc.Write(b)
}

func (p *rawPeer) recv(t *testing.T) *diam.Message {
	t.Helper()
	raw, err := readRaw(p.r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := diam.ReadMessage(bytes.NewReader(raw), dict.Default)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (p *rawPeer) handshake(t *testing.T, e *env) {
	cer := e.cli.newRequest(cmdCapabilitiesExch, 0, false)
	cer.AddAVP(base(257, datatype.Address(net.IPv4(127, 0, 0, 1))))
	cer.AddAVP(base(avpVendorID, datatype.Unsigned32(Vendor3GPP)))
	cer.AddAVP(diam.NewAVP(269, 0, 0, datatype.UTF8String("test")))
	cer.AddAVP(vendorSpecificApp())
	p.send(t, cer)
	if c, _, _ := resultOf(p.recv(t).AVP); c != DiameterSuccess {
		t.Fatalf("CEA %d", c)
	}
}

func TestMalformedAndDPR(t *testing.T) {
	e := start(t, nil)
	p := dialRaw(t, e)
	// A Cx request before CER.
	mar := e.cli.newRequest(CmdMultimediaAuth, AppID, true)
	p.send(t, mar)
	if c, _, _ := resultOf(p.recv(t).AVP); c != DiameterUnableToComply {
		t.Fatalf("before CER: %d", c)
	}
	p.handshake(t, e)
	// Unknown command: 3001 with the E bit.
	u, _ := e.cli.newRequest(cmdDeviceWatchdog, 0, false).Serialize()
	u[5], u[6], u[7] = 0, 0x03, 0xe7 // command code 999
	binary.BigEndian.PutUint32(u[8:12], AppID)
	p.nc.Write(u)
	raw, err := readRaw(p.r)
	if err != nil {
		t.Fatal(err)
	}
	a, err := diam.ReadMessage(bytes.NewReader(append(raw[:4:4], append([]byte{raw[4], 0, 1, 0x18, 0, 0, 0, 0}, raw[12:]...)...)), dict.Default) // decode as a DWA
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := resultOf(a.AVP); c != DiameterCommandUnsupported || a.Header.CommandFlags&diam.ErrorFlag == 0 {
		t.Fatalf("unknown command: %d flags %x", c, a.Header.CommandFlags)
	}
	// An AVP whose length runs past the message: 5014.
	b, _ := e.cli.newRequest(CmdServerAssignment, AppID, true).Serialize()
	b = append(b, 0, 0, 1, 1, 0x40, 0, 0, 0x40, 0, 0, 0, 0)
	b[3] = byte(len(b))
	b[2] = byte(len(b) >> 8)
	p.nc.Write(b)
	if c, _, _ := resultOf(p.recv(t).AVP); c != DiameterInvalidAVPLength {
		t.Fatalf("bad AVP: %d", c)
	}
	// DWR, then DPR: DPA and the connection closes.
	p.send(t, e.cli.newRequest(cmdDeviceWatchdog, 0, false))
	if c, _, _ := resultOf(p.recv(t).AVP); c != DiameterSuccess {
		t.Fatalf("DWA %d", c)
	}
	dpr := e.cli.newRequest(cmdDisconnectPeer, 0, false)
	dpr.AddAVP(base(avpDisconnectCause, datatype.Enumerated(0)))
	p.send(t, dpr)
	if c, _, _ := resultOf(p.recv(t).AVP); c != DiameterSuccess {
		t.Fatalf("DPA %d", c)
	}
	if _, err := p.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after DPA: %v", err)
	}
	// Garbage on another connection: closed, counted; the server still serves.
	g := dialRaw(t, e)
	g.nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := g.r.ReadByte(); err == nil {
		t.Fatal("garbage answered")
	}
	if _, err := e.cli.Vector(context.Background(), "alice@ims.example"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for e.srv.Counters().Framing == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c := e.srv.Counters()
	if c.BeforeCER != 1 || c.Unsupported != 1 || c.Malformed != 1 || c.DPR != 1 || c.Framing != 1 {
		t.Fatalf("counters %+v", c)
	}
}

func TestClientHSSDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: connection refused
	cli, err := NewClient(ClientConfig{Addr: addr, OriginHost: "s", OriginRealm: "r", DestinationRealm: "r", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := cli.Vector(ctx, "alice@ims.example"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("HSS down: %v", err)
	}
}

// FuzzServerHandle feeds raw Diameter messages to the server's message
// handling on a connection that has passed CER.
func FuzzServerHandle(f *testing.F) {
	cli := &Client{cfg: ClientConfig{OriginHost: "s", OriginRealm: "r", DestinationRealm: "r", ServerName: "sip:s"}}
	add := func(m *diam.Message) {
		b, _ := m.Serialize()
		f.Add(b)
	}
	mar := cli.newRequest(CmdMultimediaAuth, AppID, true)
	mar.AddAVP(base(avpUserName, datatype.UTF8String("alice@ims.example")))
	mar.AddAVP(tgpp(avpPublicIdentity, datatype.UTF8String("sip:alice@ims.example")))
	mar.AddAVP(sipItem(tgpp(avpSIPAuthorization, datatype.OctetString(make([]byte, 30)))))
	add(mar)
	sar := cli.newRequest(CmdServerAssignment, AppID, true)
	sar.AddAVP(tgpp(avpPublicIdentity, datatype.UTF8String("sip:alice@ims.example")))
	sar.AddAVP(tgpp(avpServerAssignmentType, datatype.Enumerated(Registration)))
	sar.AddAVP(tgpp(avpServerName, datatype.UTF8String("sip:s")))
	add(sar)
	add(cli.newRequest(CmdLocationInfo, AppID, true))
	add(cli.newRequest(cmdDeviceWatchdog, 0, false))
	store := hssForFuzz(f)
	srv, err := NewServer(ServerConfig{Listener: nopListener{}, OriginHost: "h", OriginRealm: "r", HSS: store})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		pc := &peerConn{srv: srv, nc: discardConn{}, sem: make(chan struct{}, maxInFlight)}
		pc.ctx = handshakenCtx()
		if len(raw) >= diam.HeaderLength {
			srv.handle(pc, raw)
		}
		readRaw(bufio.NewReader(bytes.NewReader(raw)))
		pc.wg.Wait()
	})
}
