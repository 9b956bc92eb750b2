package cx

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/datatype"
	"github.com/fiorix/go-diameter/v4/diam/dict"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Addr is the HSS's TCP address, host:port (required).
	Addr string
	// OriginHost and OriginRealm identify this S-CSCF (required).
	OriginHost, OriginRealm string
	// DestinationRealm is the HSS's realm (required); DestinationHost is
	// added when set (Kamailio sends only the realm).
	DestinationRealm, DestinationHost string
	// ServerName is the S-CSCF's SIP URI put in MAR and SAR; default
	// "sip:" + OriginHost.
	ServerName string
	// Timeout bounds a request whose context has no deadline, and the
	// handshake (default 5s).
	Timeout time.Duration
	// Watchdog is the DWR interval (RFC 3539 Tw; default 30s).
	Watchdog time.Duration
	// Logger gets connection events (connected, lost); nil discards.
	Logger *slog.Logger
}

// Errors of the client. Results of the HSS map onto the errors of package
// hss where one fits (DIAMETER_ERROR_USER_UNKNOWN wraps
// hss.ErrUnknownSubscriber or hss.ErrUnknownIMPU,
// DIAMETER_AUTHENTICATION_REJECTED on a resync wraps akakeys.ErrAUTSMAC).
var (
	// ErrUnavailable: no connection to the HSS (down, refused, handshake
	// failed, or lost while the request was outstanding).
	ErrUnavailable = errors.New("cx: HSS unavailable")
	// ErrIdentitiesDontMatch: DIAMETER_ERROR_IDENTITIES_DONT_MATCH (5002).
	ErrIdentitiesDontMatch = errors.New("cx: IMPI and IMPU do not belong together")
	// ErrBadAnswer: the answer lacks what the request asked for.
	ErrBadAnswer = errors.New("cx: malformed answer from the HSS")
	// ErrClientClosed: Close was called.
	ErrClientClosed = errors.New("cx: client closed")
)

// ResultError is a request the HSS answered with a failure.
type ResultError struct {
	Command      string
	Code         uint32
	Experimental bool
}

func (e *ResultError) Error() string {
	kind := "Result-Code"
	if e.Experimental {
		kind = "Experimental-Result-Code"
	}
	return fmt.Sprintf("cx: %s answered %s %d", e.Command, kind, e.Code)
}

// Client is a Cx client of an HSS, for a registrar acting as S-CSCF. It
// has the method set of the registrar's HSS interface (sip.HSS):
//
//   - Vector and Resync send a MAR (User-Name = IMPI, Public-Identity = the
//     IMPI's first IMPU, learnt with IMPUs and cached); the vector's SQN is
//     not carried over Cx and is left zero, its AMF is read from AUTN;
//   - IMPUs sends an SAR with Server-Assignment-Type NO_ASSIGNMENT and the
//     User-Name only, and reads the IMPUs from the User-Data XML;
//   - LookupIMPU sends the same SAR with the Public-Identity only and reads
//     the IMPI from the answer's User-Name (or the User-Data PrivateID).
//
// NO_ASSIGNMENT leaves the registration state in the HSS as it is
// (TS 29.228 §6.1.2), so these look-ups are safe to repeat.
//
// A Client owns one goroutine that keeps the connection up: it connects
// with CER/CEA, sends DWR every Watchdog, and reconnects with back-off
// (100 ms doubling to 10 s) when the connection fails. A request while
// disconnected waits for the connection attempt in progress and then fails
// with ErrUnavailable. Close stops and joins it.
type Client struct {
	cfg    ClientConfig
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sid    atomic.Uint64
	hbh    atomic.Uint32
	// closing is set by Close before its DPR: the HSS then closes the
	// connection, and the client must not dial it again.
	closing atomic.Bool

	mu      sync.Mutex
	cur     *clientConn
	lastErr error
	tries   uint64        // failed connection attempts so far
	changed chan struct{} // closed and replaced when cur/lastErr change
	impus   map[string][]string
}

type clientConn struct {
	nc      net.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	pending map[uint32]chan *diam.Message
	dead    bool
}

// NewClient checks cfg and starts connecting in the background.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Addr == "" || cfg.OriginHost == "" || cfg.OriginRealm == "" || cfg.DestinationRealm == "" {
		return nil, errors.New("cx: client needs Addr, OriginHost, OriginRealm and DestinationRealm")
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "sip:" + cfg.OriginHost
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Watchdog <= 0 {
		cfg.Watchdog = 30 * time.Second
	}
	c := &Client{cfg: cfg, log: cfg.Logger, changed: make(chan struct{}), impus: map[string][]string{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.hbh.Store(uint32(time.Now().UnixNano()))
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run()
	}()
	return c, nil
}

// Close disconnects (with DPR when connected) and waits for the client's
// goroutines.
func (c *Client) Close() error {
	c.closing.Store(true)
	c.mu.Lock()
	cur := c.cur
	c.mu.Unlock()
	if cur != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		m := c.newRequest(cmdDisconnectPeer, 0, false)
		m.AddAVP(base(avpDisconnectCause, datatype.Enumerated(0))) // REBOOTING
		c.roundTrip(ctx, cur, m)                                   // best effort
		cancel()
	}
	c.cancel()
	c.wg.Wait()
	return nil
}

func (c *Client) setState(cur *clientConn, err error) {
	c.mu.Lock()
	c.cur, c.lastErr = cur, err
	if err != nil {
		c.tries++
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *Client) run() {
	backoff := 100 * time.Millisecond
	for c.ctx.Err() == nil && !c.closing.Load() {
		cc, err := c.connect()
		if err != nil {
			c.setState(nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, c.cfg.Addr, err))
			select {
			case <-c.ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		c.log.Info("cx: connected to HSS", "addr", c.cfg.Addr)
		c.setState(cc, nil)
		err = c.serveConn(cc)
		c.setState(nil, fmt.Errorf("%w: %s: connection lost: %v", ErrUnavailable, c.cfg.Addr, err))
		c.log.Warn("cx: HSS connection lost", "addr", c.cfg.Addr, "err", err)
	}
	c.setState(nil, ErrClientClosed)
}

// connect dials and exchanges capabilities (RFC 6733 §5.3).
func (c *Client) connect() (*clientConn, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.cfg.Addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	cer := c.newRequest(cmdCapabilitiesExch, 0, false)
	if ta, ok := nc.LocalAddr().(*net.TCPAddr); ok {
		cer.AddAVP(base(257, datatype.Address(ta.IP))) // Host-IP-Address
	}
	cer.AddAVP(base(avpVendorID, datatype.Unsigned32(Vendor3GPP)))
	cer.AddAVP(diam.NewAVP(269, 0, 0, datatype.UTF8String("imsec"))) // Product-Name
	cer.AddAVP(base(265, datatype.Unsigned32(Vendor3GPP)))           // Supported-Vendor-Id
	cer.AddAVP(base(avpAuthApplicationID, datatype.Unsigned32(AppID)))
	cer.AddAVP(vendorSpecificApp())
	b, err := cer.Serialize()
	if err == nil {
		_, err = nc.Write(b)
	}
	var cea *diam.Message
	if err == nil {
		var raw []byte
		if raw, err = readRaw(bufio.NewReader(nc)); err == nil {
			cea, err = decode(raw)
		}
	}
	if err == nil {
		if code, _, _ := resultOf(cea.AVP); code != DiameterSuccess {
			err = fmt.Errorf("CEA Result-Code %d", code)
		}
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return &clientConn{nc: nc, pending: map[uint32]chan *diam.Message{}}, nil
}

// serveConn reads answers (and the HSS's DWR/DPR) until the connection
// fails, while a watchdog goroutine sends DWR.
func (c *Client) serveConn(cc *clientConn) error {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(c.cfg.Watchdog)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-c.ctx.Done():
				cc.nc.Close()
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
				_, err := c.roundTrip(ctx, cc, c.newRequest(cmdDeviceWatchdog, 0, false))
				cancel()
				if err != nil {
					cc.nc.Close()
					return
				}
			}
		}
	}()
	err := c.readLoop(cc)
	close(done)
	cc.nc.Close()
	wg.Wait()
	cc.mu.Lock()
	cc.dead = true
	for id, ch := range cc.pending {
		close(ch)
		delete(cc.pending, id)
	}
	cc.mu.Unlock()
	return err
}

func (c *Client) readLoop(cc *clientConn) error {
	r := bufio.NewReader(cc.nc)
	for {
		raw, err := readRaw(r)
		if err != nil {
			return err
		}
		m, err := decode(raw)
		if err != nil {
			continue // an answer we cannot decode: its request times out
		}
		if m.Header.CommandFlags&diam.RequestFlag != 0 {
			// The HSS's DWR or DPR (RFC 6733 §5.4, §5.5).
			a := m.Answer(DiameterSuccess)
			a.AddAVP(base(avpOriginHost, datatype.DiameterIdentity(c.cfg.OriginHost)))
			a.AddAVP(base(avpOriginRealm, datatype.DiameterIdentity(c.cfg.OriginRealm)))
			if b, err := a.Serialize(); err == nil {
				cc.write(b)
			}
			if m.Header.CommandCode == cmdDisconnectPeer {
				return errors.New("HSS sent DPR")
			}
			continue
		}
		cc.mu.Lock()
		ch := cc.pending[m.Header.HopByHopID]
		delete(cc.pending, m.Header.HopByHopID)
		cc.mu.Unlock()
		if ch != nil {
			ch <- m // buffered
		}
	}
}

func (cc *clientConn) write(b []byte) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := cc.nc.Write(b)
	return err
}

func (c *Client) newRequest(code, app uint32, cx bool) *diam.Message {
	m := diam.NewMessage(code, diam.RequestFlag|diam.ProxiableFlag, app, c.hbh.Add(1), c.hbh.Add(1)^0x5a5a5a5a, dict.Default)
	if !cx {
		m.Header.CommandFlags &^= diam.ProxiableFlag
		m.AddAVP(base(avpOriginHost, datatype.DiameterIdentity(c.cfg.OriginHost)))
		m.AddAVP(base(avpOriginRealm, datatype.DiameterIdentity(c.cfg.OriginRealm)))
		return m
	}
	m.AddAVP(base(avpSessionID, datatype.UTF8String(fmt.Sprintf("%s;%d;%d", c.cfg.OriginHost, time.Now().Unix(), c.sid.Add(1)))))
	m.AddAVP(vendorSpecificApp())
	m.AddAVP(base(avpAuthSessionState, datatype.Enumerated(noStateMaintained)))
	m.AddAVP(base(avpOriginHost, datatype.DiameterIdentity(c.cfg.OriginHost)))
	m.AddAVP(base(avpOriginRealm, datatype.DiameterIdentity(c.cfg.OriginRealm)))
	if c.cfg.DestinationHost != "" {
		m.AddAVP(base(avpDestinationHost, datatype.DiameterIdentity(c.cfg.DestinationHost)))
	}
	m.AddAVP(base(avpDestinationRealm, datatype.DiameterIdentity(c.cfg.DestinationRealm)))
	return m
}

// conn waits for a connection: the current one, or the outcome of the
// attempt in progress.
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	c.mu.Lock()
	startTries := c.tries
	c.mu.Unlock()
	for {
		c.mu.Lock()
		cur, lastErr, tries, changed := c.cur, c.lastErr, c.tries, c.changed
		c.mu.Unlock()
		if cur != nil {
			return cur, nil
		}
		if errors.Is(lastErr, ErrClientClosed) {
			return nil, lastErr
		}
		if lastErr != nil && tries > startTries {
			return nil, lastErr
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, c.cfg.Addr, ctx.Err())
		}
	}
}

func (c *Client) roundTrip(ctx context.Context, cc *clientConn, m *diam.Message) (*diam.Message, error) {
	b, err := m.Serialize()
	if err != nil {
		return nil, fmt.Errorf("cx: encoding request: %w", err)
	}
	ch := make(chan *diam.Message, 1)
	id := m.Header.HopByHopID
	cc.mu.Lock()
	if cc.dead {
		cc.mu.Unlock()
		return nil, fmt.Errorf("%w: %s: connection lost", ErrUnavailable, c.cfg.Addr)
	}
	cc.pending[id] = ch
	cc.mu.Unlock()
	if err := cc.write(b); err != nil {
		cc.nc.Close()
	}
	select {
	case a, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%w: %s: connection lost", ErrUnavailable, c.cfg.Addr)
		}
		return a, nil
	case <-ctx.Done():
		cc.mu.Lock()
		delete(cc.pending, id)
		cc.mu.Unlock()
		return nil, fmt.Errorf("%w: %s: no answer: %v", ErrUnavailable, c.cfg.Addr, ctx.Err())
	}
}

// request sends a Cx request and returns the AVPs of a successful answer.
func (c *Client) request(ctx context.Context, name string, m *diam.Message) ([]*diam.AVP, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	cc, err := c.conn(ctx)
	if err != nil {
		return nil, err
	}
	a, err := c.roundTrip(ctx, cc, m)
	if err != nil {
		return nil, err
	}
	code, exp, ok := resultOf(a.AVP)
	if !ok {
		return nil, fmt.Errorf("%w: %s without a result", ErrBadAnswer, name)
	}
	if code/1000 == 2 {
		return a.AVP, nil
	}
	re := &ResultError{Command: name, Code: code, Experimental: exp}
	switch {
	case exp && code == DiameterErrorUserUnknown:
		return nil, fmt.Errorf("%w (%w)", hss.ErrUnknownSubscriber, re)
	case exp && code == DiameterErrorIdentitiesDontMatch:
		return nil, fmt.Errorf("%w (%w)", ErrIdentitiesDontMatch, re)
	case !exp && code == DiameterAuthenticationRejected:
		return nil, fmt.Errorf("%w (%w)", akakeys.ErrAUTSMAC, re)
	}
	return nil, re
}

// sarLookup sends SAR NO_ASSIGNMENT for impi or impu (one of them empty).
func (c *Client) sarLookup(ctx context.Context, impi, impu string) (string, []string, error) {
	m := c.newRequest(CmdServerAssignment, AppID, true)
	if impi != "" {
		m.AddAVP(base(avpUserName, datatype.UTF8String(impi)))
	}
	if impu != "" {
		m.AddAVP(tgpp(avpPublicIdentity, datatype.UTF8String(impu)))
	}
	m.AddAVP(tgpp(avpServerName, datatype.UTF8String(c.cfg.ServerName)))
	m.AddAVP(tgpp(avpServerAssignmentType, datatype.Enumerated(NoAssignment)))
	m.AddAVP(tgpp(avpUserDataAlreadyAvailable, datatype.Enumerated(0)))
	avps, err := c.request(ctx, "SAR", m)
	if err != nil {
		return "", nil, err
	}
	ud, ok, _ := octets(find(avps, avpUserData, Vendor3GPP))
	if !ok {
		return "", nil, fmt.Errorf("%w: SAA without User-Data", ErrBadAnswer)
	}
	private, impus, err := ParseUserData(ud)
	if err != nil {
		return "", nil, err
	}
	if un, ok, _ := str(find(avps, avpUserName, 0)); ok {
		private = un
	}
	return private, impus, nil
}

// IMPUs returns impi's public identities from the HSS's User-Data.
func (c *Client) IMPUs(ctx context.Context, impi string) ([]string, error) {
	_, impus, err := c.sarLookup(ctx, impi, "")
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.impus[impi] = impus
	c.mu.Unlock()
	return append([]string(nil), impus...), nil
}

// LookupIMPU returns the IMPI owning impu.
func (c *Client) LookupIMPU(ctx context.Context, impu string) (string, error) {
	impi, _, err := c.sarLookup(ctx, "", impu)
	if errors.Is(err, hss.ErrUnknownSubscriber) {
		return "", fmt.Errorf("%w: %q", hss.ErrUnknownIMPU, impu)
	}
	if err == nil && impi == "" {
		return "", fmt.Errorf("%w: SAA names no private identity", ErrBadAnswer)
	}
	return impi, err
}

// Vector asks the HSS for one vector for impi (MAR, TS 29.228 §6.3).
func (c *Client) Vector(ctx context.Context, impi string) (akakeys.Vector, error) {
	return c.mar(ctx, impi, nil)
}

// Resync asks for a vector after a sync failure: the MAR carries
// SIP-Authorization = RAND || AUTS.
func (c *Client) Resync(ctx context.Context, impi string, rand akakeys.RAND, auts akakeys.AUTS) (akakeys.Vector, error) {
	return c.mar(ctx, impi, append(rand[:], auts[:]...))
}

func (c *Client) mar(ctx context.Context, impi string, resync []byte) (akakeys.Vector, error) {
	c.mu.Lock()
	impus := c.impus[impi]
	c.mu.Unlock()
	if len(impus) == 0 {
		var err error
		if impus, err = c.IMPUs(ctx, impi); err != nil {
			return akakeys.Vector{}, err
		}
		if len(impus) == 0 {
			return akakeys.Vector{}, fmt.Errorf("%w: %q has no public identity", ErrBadAnswer, impi)
		}
	}
	m := c.newRequest(CmdMultimediaAuth, AppID, true)
	m.AddAVP(base(avpUserName, datatype.UTF8String(impi)))
	m.AddAVP(tgpp(avpPublicIdentity, datatype.UTF8String(impus[0])))
	m.AddAVP(tgpp(avpServerName, datatype.UTF8String(c.cfg.ServerName)))
	m.AddAVP(tgpp(avpSIPNumberAuthItems, datatype.Unsigned32(1)))
	item := []*diam.AVP{tgpp(avpSIPAuthenticationScheme, datatype.UTF8String(SchemeAKAv1MD5))}
	if resync != nil {
		item = append(item, tgpp(avpSIPAuthorization, datatype.OctetString(resync)))
	}
	m.AddAVP(tgpp(avpSIPAuthDataItem, &diam.GroupedAVP{AVP: item}))
	avps, err := c.request(ctx, "MAR", m)
	if err != nil {
		return akakeys.Vector{}, err
	}
	return parseAuthItem(group(find(avps, avpSIPAuthDataItem, Vendor3GPP)))
}

// parseAuthItem reads a vector from a SIP-Auth-Data-Item of an MAA.
func parseAuthItem(item []*diam.AVP) (akakeys.Vector, error) {
	var v akakeys.Vector
	sa, _, _ := octets(find(item, avpSIPAuthenticate, Vendor3GPP))
	xres, _, _ := octets(find(item, avpSIPAuthorization, Vendor3GPP))
	ck, _, _ := octets(find(item, avpConfidentialityKey, Vendor3GPP))
	ik, _, _ := octets(find(item, avpIntegrityKey, Vendor3GPP))
	if len(sa) != len(v.RAND)+len(v.AUTN) || len(xres) != len(v.XRES) || len(ck) != len(v.CK) || len(ik) != len(v.IK) {
		return v, fmt.Errorf("%w: SIP-Auth-Data-Item lengths", ErrBadAnswer)
	}
	copy(v.RAND[:], sa)
	copy(v.AUTN[:], sa[len(v.RAND):])
	copy(v.XRES[:], xres)
	copy(v.CK[:], ck)
	copy(v.IK[:], ik)
	copy(v.AMF[:], v.AUTN[6:8])
	return v, nil
}
