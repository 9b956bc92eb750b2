package cx

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"
	"github.com/fiorix/go-diameter/v4/diam/sm"
	"github.com/fiorix/go-diameter/v4/diam/sm/smpeer"

	"github.com/imsec/imsec/akakeys"
)

// Backend is what the Cx server asks of an HSS: *hss.HSS has this method
// set. Errors wrapping hss.ErrUnknownSubscriber / hss.ErrUnknownIMPU are
// answered DIAMETER_ERROR_USER_UNKNOWN, akakeys.ErrAUTSMAC
// DIAMETER_AUTHENTICATION_REJECTED, anything else DIAMETER_UNABLE_TO_COMPLY.
type Backend interface {
	Vector(ctx context.Context, impi string) (akakeys.Vector, error)
	Resync(ctx context.Context, impi string, rand akakeys.RAND, auts akakeys.AUTS) (akakeys.Vector, error)
	LookupIMPU(ctx context.Context, impu string) (string, error)
	IMPUs(ctx context.Context, impi string) ([]string, error)
}

// MaxAuthItems caps SIP-Number-Auth-Items: a MAR asking for more gets this
// many vectors (each one spends a durable SQN).
const MaxAuthItems = 5

// maxMessage bounds a Diameter message the server reads; a longer length
// field is garbage (or an attack) and the connection is closed.
const maxMessage = 64 << 10

// maxInFlight bounds the requests one connection has in progress.
const maxInFlight = 32

// ServerConfig configures a Server.
type ServerConfig struct {
	// Listener, if set, is served (and closed by Close); else Listen is
	// the TCP address to listen on (default ":3868").
	Listener net.Listener
	Listen   string
	// OriginHost and OriginRealm identify the HSS (required).
	OriginHost, OriginRealm string
	// HSS answers for the subscribers (required).
	HSS Backend
	// ServerName, if set, is the S-CSCF (a SIP URI) a UAA for a first
	// registration names; else the UAA carries empty Server-Capabilities
	// and the I-CSCF picks an S-CSCF itself.
	ServerName string
	// Logger gets one line per connection event, never per bad message;
	// nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Counters are the server's counts by disposition. Drops and error answers
// are counted here, not logged.
type Counters struct {
	Connections, CER, DWR, DPR    uint64
	MAR, UAR, SAR, LIR            uint64
	Framing                       uint64 // garbage on the connection: closed
	Malformed                     uint64 // AVPs that do not decode: 5014
	Unsupported                   uint64 // unknown command or application: 3001/3007
	BeforeCER                     uint64 // Cx request before the handshake: 5012
	MissingAVP, InvalidAVP        uint64 // 5005, 5004
	UserUnknown, IdentityMismatch uint64 // 5001, 5002
	AuthRejected, Failed          uint64 // 4001, 5012 from the backend
	Answers                       uint64 // answers written
}

type counters struct {
	conns, cer, dwr, dpr, mar, uar, sar, lir                 atomic.Uint64
	framing, malformed, unsupported, beforeCER, missing      atomic.Uint64
	invalid, userUnknown, mismatch, authRejected, failed, ok atomic.Uint64
}

// Server is a Diameter Cx HSS (TS 29.228/29.229) over TCP.
type Server struct {
	cfg ServerConfig
	ln  net.Listener
	sm  *sm.StateMachine
	log *slog.Logger
	now func() time.Time
	c   counters

	reg registrations

	mu     sync.Mutex
	conns  map[*peerConn]struct{}
	closed bool
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

// NewServer checks cfg and binds the listener (unless one is given).
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.OriginHost == "" || cfg.OriginRealm == "" {
		return nil, errors.New("cx: OriginHost and OriginRealm are required")
	}
	if cfg.HSS == nil {
		return nil, errors.New("cx: no HSS backend")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, now: cfg.Now, conns: map[*peerConn]struct{}{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.reg.m = map[string]assignment{}
	s.sm = sm.New(&sm.Settings{
		OriginHost:  datatype.DiameterIdentity(cfg.OriginHost),
		OriginRealm: datatype.DiameterIdentity(cfg.OriginRealm),
		VendorID:    datatype.Unsigned32(Vendor3GPP),
		ProductName: "imsec-hss",
	})
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.ln = cfg.Listener
	if s.ln == nil {
		addr := cfg.Listen
		if addr == "" {
			addr = ":3868"
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("cx: listen on %s: %w", addr, err)
		}
		s.ln = ln
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Counters returns a snapshot of the counters.
func (s *Server) Counters() Counters {
	c := &s.c
	return Counters{
		Connections: c.conns.Load(), CER: c.cer.Load(), DWR: c.dwr.Load(), DPR: c.dpr.Load(),
		MAR: c.mar.Load(), UAR: c.uar.Load(), SAR: c.sar.Load(), LIR: c.lir.Load(),
		Framing: c.framing.Load(), Malformed: c.malformed.Load(), Unsupported: c.unsupported.Load(),
		BeforeCER: c.beforeCER.Load(), MissingAVP: c.missing.Load(), InvalidAVP: c.invalid.Load(),
		UserUnknown: c.userUnknown.Load(), IdentityMismatch: c.mismatch.Load(),
		AuthRejected: c.authRejected.Load(), Failed: c.failed.Load(), Answers: c.ok.Load(),
	}
}

// Serve accepts connections until ctx ends or Close is called; then it
// closes every connection and returns after all its goroutines have
// exited. It returns nil on a clean stop.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			s.Close()
			s.wg.Wait()
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("cx: accept: %w", err)
		}
		pc := &peerConn{srv: s, nc: nc, ctx: context.Background(), sem: make(chan struct{}, maxInFlight)}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns[pc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.c.conns.Add(1)
		go func() {
			defer s.wg.Done()
			pc.serve()
		}()
	}
}

// Close stops the listener and closes every connection. Serve returns
// after the connection goroutines have exited.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.cancel()
	err := s.ln.Close()
	for pc := range s.conns {
		pc.nc.Close()
	}
	return err
}

// peerConn is one Diameter peer connection. It implements diam.Conn so the
// base state machine (CER/CEA, DWR/DWA) of go-diameter's sm package can
// answer on it; its one reader goroutine and the request goroutines it
// starts are owned by the server.
type peerConn struct {
	srv *Server
	nc  net.Conn
	wmu sync.Mutex
	cmu sync.Mutex
	ctx context.Context
	sem chan struct{}
	wg  sync.WaitGroup
}

func (pc *peerConn) serve() {
	defer func() {
		pc.nc.Close()
		pc.wg.Wait()
		pc.srv.mu.Lock()
		delete(pc.srv.conns, pc)
		pc.srv.mu.Unlock()
	}()
	r := bufio.NewReader(pc.nc)
	for {
		raw, err := readRaw(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrUnexpectedEOF) {
				pc.srv.c.framing.Add(1)
			}
			return
		}
		if pc.srv.handle(pc, raw) {
			return
		}
	}
}

var errFraming = errors.New("cx: not a Diameter message")

// readRaw reads one Diameter message (RFC 6733 §3): version 1, a length of
// at least the header, a multiple of 4, at most maxMessage.
func readRaw(r *bufio.Reader) ([]byte, error) {
	var hdr [diam.HeaderLength]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[0:4]) & 0xffffff)
	if hdr[0] != 1 || n < diam.HeaderLength || n > maxMessage || n%4 != 0 {
		return nil, errFraming
	}
	raw := make([]byte, n)
	copy(raw, hdr[:])
	if _, err := io.ReadFull(r, raw[diam.HeaderLength:]); err != nil {
		return nil, err
	}
	return raw, nil
}

// handle processes one framed message and reports whether the connection
// must close (after DPA, or a failed CER).
func (s *Server) handle(pc *peerConn, raw []byte) (closeConn bool) {
	h, err := diam.DecodeHeader(raw)
	if err != nil || int(h.MessageLength) != len(raw) {
		s.c.framing.Add(1)
		return true
	}
	isReq := h.CommandFlags&diam.RequestFlag != 0
	if !isReq {
		return false // answers to nothing we sent (we send no requests): ignored
	}
	if h.ApplicationID != 0 && h.ApplicationID != AppID {
		s.c.unsupported.Add(1)
		s.writeError(pc, h, DiameterApplicationUnsupported, true)
		return false
	}
	if _, err := dict.Default.FindCommand(h.ApplicationID, h.CommandCode); err != nil || !knownCommand(h.ApplicationID, h.CommandCode) {
		s.c.unsupported.Add(1)
		s.writeError(pc, h, DiameterCommandUnsupported, true)
		return false
	}
	m, err := decode(raw)
	if err != nil {
		s.c.malformed.Add(1)
		s.writeError(pc, h, DiameterInvalidAVPLength, false)
		return false
	}
	switch h.CommandCode {
	case cmdCapabilitiesExch:
		s.c.cer.Add(1)
		s.sm.ServeDIAM(pc, m)
		_, ok := smpeer.FromContext(pc.Context())
		return !ok
	case cmdDeviceWatchdog:
		s.c.dwr.Add(1)
		s.sm.ServeDIAM(pc, m)
		return false
	case cmdDisconnectPeer:
		s.c.dpr.Add(1)
		a := m.Answer(DiameterSuccess)
		s.origin(a)
		s.write(pc, a)
		return true
	}
	if _, ok := smpeer.FromContext(pc.Context()); !ok {
		s.c.beforeCER.Add(1)
		s.writeError(pc, h, DiameterUnableToComply, false)
		return false
	}
	pc.sem <- struct{}{}
	pc.wg.Add(1)
	go func() {
		defer func() { <-pc.sem; pc.wg.Done() }()
		a := s.serveCx(s.ctx, m)
		s.write(pc, a)
	}()
	return false
}

func knownCommand(app, code uint32) bool {
	switch code {
	case cmdCapabilitiesExch, cmdDeviceWatchdog, cmdDisconnectPeer:
		return app == 0
	case CmdUserAuthorization, CmdServerAssignment, CmdLocationInfo, CmdMultimediaAuth:
		return app == AppID
	}
	return false
}

func (s *Server) origin(a *diam.Message) {
	a.AddAVP(base(avpOriginHost, datatype.DiameterIdentity(s.cfg.OriginHost)))
	a.AddAVP(base(avpOriginRealm, datatype.DiameterIdentity(s.cfg.OriginRealm)))
}

// writeError answers a request that could not be decoded, from its header
// alone (RFC 6733 §7.2: protocol errors carry the E bit).
func (s *Server) writeError(pc *peerConn, h *diam.Header, code uint32, protocol bool) {
	flags := h.CommandFlags &^ diam.RequestFlag
	if protocol {
		flags |= diam.ErrorFlag
	}
	a := diam.NewMessage(h.CommandCode, flags, h.ApplicationID, h.HopByHopID, h.EndToEndID, dict.Default)
	a.AddAVP(base(avpResultCode, datatype.Unsigned32(code)))
	s.origin(a)
	s.write(pc, a)
}

func (s *Server) write(pc *peerConn, a *diam.Message) {
	b, err := a.Serialize()
	if err != nil {
		s.c.failed.Add(1)
		return
	}
	if _, err := pc.Write(b); err == nil {
		s.c.ok.Add(1)
	}
}

// diam.Conn for the state machine.

func (pc *peerConn) Write(b []byte) (int, error) {
	pc.wmu.Lock()
	defer pc.wmu.Unlock()
	pc.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return pc.nc.Write(b)
}
func (pc *peerConn) WriteStream(b []byte, _ uint) (int, error) { return pc.Write(b) }
func (pc *peerConn) Close()                                    { pc.nc.Close() }
func (pc *peerConn) LocalAddr() net.Addr                       { return pc.nc.LocalAddr() }
func (pc *peerConn) RemoteAddr() net.Addr                      { return pc.nc.RemoteAddr() }
func (pc *peerConn) TLS() *tls.ConnectionState                 { return nil }
func (pc *peerConn) Dictionary() *dict.Parser                  { return dict.Default }
func (pc *peerConn) Connection() net.Conn                      { return pc.nc }
func (pc *peerConn) Context() context.Context {
	pc.cmu.Lock()
	defer pc.cmu.Unlock()
	return pc.ctx
}
func (pc *peerConn) SetContext(ctx context.Context) {
	pc.cmu.Lock()
	defer pc.cmu.Unlock()
	pc.ctx = ctx
}

var _ diam.Conn = (*peerConn)(nil)

var errDecode = errors.New("cx: malformed AVPs")

// decode decodes one framed message. go-diameter v4.0.4 panics on some
// malformed AVPs (a V-bit AVP shorter than its 12-byte header: slice
// bounds out of range in AVP.DecodeFromBytes, found by FuzzServerHandle),
// so a panic of the decoder is turned into an error here: the input is the
// peer's, the crash must not be ours.
func decode(raw []byte) (m *diam.Message, err error) {
	defer func() {
		if recover() != nil {
			m, err = nil, errDecode
		}
	}()
	return diam.ReadMessage(bytes.NewReader(raw), dict.Default)
}

// Assignment tells what the HSS holds for impu after the S-CSCFs' SARs
// (TS 29.228 §6.1.2): the S-CSCF assigned to it ("" for none) and whether
// it is registered.
func (s *Server) Assignment(impu string) (server string, registered bool) {
	a := s.reg.get(impu)
	return a.server, a.registered
}
