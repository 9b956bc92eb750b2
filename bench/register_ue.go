package bench

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/inet"
	"github.com/imsec/imsec/internal/rawudp"
	"github.com/imsec/imsec/sip"
	"github.com/imsec/imsec/tun/dhcp"
)

// The load generator's UE: the whole registration a real imsec UE does
// (sip.UE), built by hand on one UDP socket and without a network stack:
// the unprotected REGISTER with Security-Client, the USIM's AKA, the four
// SAs from CK/IK, DHCP inside the tunnel (the inner IPv4/UDP packets built
// in place), the protected REGISTER through the SAs, then NAT keepalives.
// SIP and ESP leave from the same socket, so the UE has one NAT-style
// source port, as behind a home NAT.

// Inner ports of the load generator's UEs (any free pair would do: they
// are the UE's own, inside its tunnel).
const (
	regPortC = 5062
	regPortS = 5068
)

// BenchSubscriber returns subscriber i of the load generator's range: the
// one 'imsec sub gen' writes for the same prefix, domain and seed
// (hss.TestRange), so an external HSS provisioned with it and the load
// generator agree on every key.
func BenchSubscriber(prefix, domain, seed string, i int) hss.Subscriber {
	return hss.TestRange{Prefix: prefix, Domain: domain, Seed: seed}.Subscriber(i)
}

// regUE is one load-generator UE. Not safe for concurrent use: one
// goroutine runs its registration, then the worker's keepalive loop uses
// conn and esp alone.
type regUE struct {
	sub    hss.Subscriber
	domain string
	usim   *akakeys.USIM
	conn   *rawudp.Conn   // the UE's socket: raw system calls on Linux (internal/rawudp)
	sipTo  netip.AddrPort // the P-CSCF's unprotected SIP
	espTo  netip.AddrPort // its ESP-in-UDP
	callID string
	cseq   int
	buf    []byte   // what the UE reads: a SIP response or an ESP packet
	bufs   *regBufs // while it registers

	// After the 401.
	in     map[esp.SPI]*esp.Inbound
	out    *esp.Outbound // SA1: UE port-c -> P-CSCF port-s, also DHCP
	inner  netip.Addr
	gw     netip.Addr
	portC  uint16 // the active set's port-c
	portS  uint16 // the P-CSCF's port-s of the active set
	verify string // the active set's Security-Server, echoed in Security-Verify

	shedWaits int // 503s with Retry-After waited out (register)
}

// regFailure is why a registration failed: the cause counted in
// RegisterResult.Failed.
type regFailure struct {
	cause string
	err   error
}

func (f *regFailure) Error() string { return f.cause + ": " + f.err.Error() }

func fail(cause string, format string, a ...any) error {
	return &regFailure{cause: cause, err: fmt.Errorf(format, a...)}
}

// retransmits is how long the UE waits for each answer, doubling as RFC
// 3261 §17.1.2's Timer E would from T1 = 500 ms; after the last it gives up.
var retransmits = []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}

// regBufs is one registration's buffers: what the UE reads (a SIP
// response or an ESP packet), the request it sends and the ESP packet
// around it. Pooled: a UE holds them only while it registers, and the
// worker reuses them instead of allocating per message.
type regBufs struct {
	rx  [4096]byte
	req []byte
	tx  []byte
}

var regBufPool = sync.Pool{New: func() any {
	return &regBufs{req: make([]byte, 0, 2048), tx: make([]byte, 0, esp.HeaderRoom+2048+esp.TailRoom)}
}}

// takeBufs gives the UE a registration's buffers; the func returned gives
// them back.
func (u *regUE) takeBufs() func() {
	b := regBufPool.Get().(*regBufs)
	u.bufs, u.buf = b, b.rx[:]
	return func() {
		u.bufs, u.buf = nil, nil
		regBufPool.Put(b)
	}
}

// register runs the whole registration; it returns when the protected
// REGISTER's 200 arrived.
func (u *regUE) register(expires int) error {
	defer u.takeBufs()()
	u.callID = randToken(10) + "@bench"
	offer, client := newOffer(regPortC)
	local := u.conn.LocalAddr().(*net.UDPAddr).AddrPort()
	init := akakeys.Credentials{Username: u.sub.IMPI, Realm: u.domain, URI: "sip:" + u.domain}

	// 1. Unprotected REGISTER -> 401 with the challenge and Security-Server.
	// A 503 with Retry-After (the P-CSCF shedding load) is waited out and
	// the REGISTER sent again, as a UE does (TS 24.229 §5.1.1.2.1).
	var res regResponse
	for {
		var err error
		res, err = u.exchangeSIP(u.request(local, local, expires, client, "", init.String()))
		if err != nil {
			return err
		}
		wait, ok := res.retryAfterWait()
		if !ok || u.shedWaits >= maxShedWaits {
			break
		}
		u.shedWaits++
		time.Sleep(wait)
	}
	cred, srv, ss, err := u.challenged(res, offer)
	if err != nil {
		return err
	}
	// 2. DHCP inside the tunnel (the first packets through the SAs).
	if err := u.dhcp(); err != nil {
		return err
	}
	// 3. The protected REGISTER from the inner address and port-c to the
	// P-CSCF's port-s, inside ESP; its 200 comes back the same way.
	return u.answer(expires, offer, client, cred, srv, ss)
}

// reregister runs a re-registration through the active SAs: a new AKA run
// and a new SA set on the other port-c (TS 33.203 §7.4), as sip.UE does.
func (u *regUE) reregister(expires int) error {
	defer u.takeBufs()()
	portC := uint16(regPortC)
	if u.portC == regPortC {
		portC = regPortC + 1
	}
	offer, client := newOffer(portC)
	init := akakeys.Credentials{Username: u.sub.IMPI, Realm: u.domain, URI: "sip:" + u.domain}
	from := netip.AddrPortFrom(u.inner, u.portC)
	to := netip.AddrPortFrom(u.gw, u.portS)
	res, err := u.exchangeInner(from, to, u.request(from, netip.AddrPortFrom(u.inner, regPortS), expires, client, u.verify, init.String()))
	if err != nil {
		return err
	}
	cred, srv, ss, err := u.challenged(res, offer)
	if err != nil {
		return err
	}
	return u.answer(expires, offer, client, cred, srv, ss)
}

// newOffer is a Security-Client entry with fresh SPIs (and a media SPI,
// so the P-CSCF builds the media SAs too).
func newOffer(portC uint16) (sip.Mechanism, string) {
	m := sip.Mechanism{Name: sip.MechIPsec3GPP, Alg: esp.AuthHMACSHA196, EAlg: esp.EncAESCBC, Prot: "esp", Mod: sip.ModUDPEncTun,
		SPIc: randSPI(), SPIs: randSPI(), PortC: portC, PortS: regPortS}
	var b [192]byte
	return m, string(appendOffer(b[:0], m, randSPI()))
}

// challenged runs the USIM on a 401 and builds the new SA set from its
// Security-Server: its inbound SAs join ours, its SA1 sends from now on.
func (u *regUE) challenged(res regResponse, offer sip.Mechanism) (akakeys.Credentials, sip.Mechanism, string, error) {
	var none akakeys.Credentials
	if res.code != 401 {
		return none, sip.Mechanism{}, "", fail(statusCause(res.code), "REGISTER: %d %s", res.code, res.reason)
	}
	www, ss := res.www, res.securityServer
	if www == "" || ss == "" {
		return none, sip.Mechanism{}, "", fail("bad-401", "401 without WWW-Authenticate or Security-Server")
	}
	ch, err := akakeys.ParseChallenge(www)
	if err != nil {
		return none, sip.Mechanism{}, "", fail("bad-401", "%v", err)
	}
	r, autn, _, err := akakeys.ParseNonce(ch.Nonce)
	if err != nil {
		return none, sip.Mechanism{}, "", fail("bad-401", "%v", err)
	}
	resp, ck, ik, err := u.usim.Authenticate(r, autn)
	if err != nil {
		return none, sip.Mechanism{}, "", fail("usim", "%v", err)
	}
	srvs, err := sip.ParseSecurity(ss)
	if err != nil || len(srvs) == 0 {
		return none, sip.Mechanism{}, "", fail("bad-401", "Security-Server: %v", err)
	}
	set, err := sip.NewSASet(offer, srvs[0], ck, ik)
	if err != nil {
		return none, sip.Mechanism{}, "", fail("bad-401", "%v", err)
	}
	side, err := set.UESide()
	if err != nil {
		return none, sip.Mechanism{}, "", fail("bad-401", "%v", err)
	}
	if u.in == nil {
		u.in = map[esp.SPI]*esp.Inbound{}
	}
	for _, in := range side.Inbound {
		u.in[in.SPI()] = in
	}
	u.out = side.Default
	cred := akakeys.Credentials{Username: u.sub.IMPI, Realm: ch.Realm, Nonce: ch.Nonce, URI: "sip:" + u.domain,
		Algorithm: "AKAv1-MD5", Opaque: ch.Opaque, QOP: "auth", NC: 1, CNonce: randToken(8)}
	if err := cred.SetResponse("REGISTER", resp[:]); err != nil {
		return none, sip.Mechanism{}, "", fail("usim", "%v", err)
	}
	return cred, srvs[0], ss, nil
}

// answer sends the protected REGISTER with the AKA answer through the new
// set and waits for the 200; the set is then the active one.
func (u *regUE) answer(expires int, offer sip.Mechanism, client string, cred akakeys.Credentials, srv sip.Mechanism, ss string) error {
	from := netip.AddrPortFrom(u.inner, offer.PortC)
	to := netip.AddrPortFrom(u.gw, srv.PortS)
	res, err := u.exchangeInner(from, to, u.request(from, netip.AddrPortFrom(u.inner, regPortS), expires, client, ss, cred.String()))
	if err != nil {
		return err
	}
	switch res.code {
	case 200:
		u.portC, u.portS, u.verify = offer.PortC, srv.PortS, ss
		// Only the new set's inbound SAs stay.
		for spi := range u.in {
			if spi != offer.SPIc && spi != offer.SPIs {
				delete(u.in, spi)
			}
		}
		return nil
	case 401:
		return fail("401-loop", "the protected REGISTER was challenged again")
	}
	return fail(statusCause(res.code), "protected REGISTER: %d %s", res.code, res.reason)
}

func statusCause(code int) string { return strconv.Itoa(code) }

// maxShedWaits bounds how many 503s with Retry-After one registration
// waits out before it counts as failed (cause "503").
const maxShedWaits = 10

// request builds a REGISTER (CSeq counts up per Call-ID) in the
// registration's request buffer: valid until the next request.
func (u *regUE) request(via, contact netip.AddrPort, expires int, client, verify, auth string) []byte {
	u.cseq++
	u.bufs.req = appendRequest(u.bufs.req[:0], u.domain, u.sub.IMPUs[0], u.callID, u.cseq, via, contact, expires, client, verify, auth)
	return u.bufs.req
}

// exchangeSIP sends an unprotected request and waits for its final
// response, retransmitting.
func (u *regUE) exchangeSIP(req []byte) (regResponse, error) {
	for _, wait := range retransmits {
		if err := u.writeTo(req, u.sipTo); err != nil {
			return regResponse{}, fail("socket", "%v", err)
		}
		deadline := time.Now().Add(wait)
		for {
			n, from, err := u.read(deadline)
			if err != nil {
				break // retransmit
			}
			if from != u.sipTo {
				continue
			}
			if res, ok := parseFinal(u.buf[:n], u.callID); ok {
				return res, nil
			}
		}
	}
	return regResponse{}, fail("timeout-401", "no answer to the unprotected REGISTER")
}

// exchangeInner sends a SIP request inside the tunnel (a fresh ESP packet
// per retransmission: the replay window would drop a copy) and waits for
// the final response inside it.
func (u *regUE) exchangeInner(from, to netip.AddrPort, req []byte) (regResponse, error) {
	for _, wait := range retransmits {
		if err := u.sendInner(from, to, req); err != nil {
			return regResponse{}, err
		}
		deadline := time.Now().Add(wait)
		for {
			inner, err := u.readESP(deadline)
			if err != nil {
				if errors.Is(err, errDeadline) {
					break
				}
				return regResponse{}, err
			}
			_, _, sport, dport, payload, ok := parseIPv4UDP(inner)
			if !ok || sport != to.Port() || dport != from.Port() {
				continue
			}
			if res, ok := parseFinal(payload, u.callID); ok {
				return res, nil
			}
		}
	}
	return regResponse{}, fail("timeout-200", "no answer to the protected REGISTER")
}

// dhcp acquires the inner address through the tunnel.
func (u *regUE) dhcp() error {
	cl, err := dhcp.NewClient([]byte(u.sub.IMPI))
	if err != nil {
		return fail("dhcp", "%v", err)
	}
	pkt, err := cl.Discover()
	if err != nil {
		return fail("dhcp", "%v", err)
	}
	for _, wait := range retransmits {
		if err := u.sendESP(pkt); err != nil {
			return err
		}
		deadline := time.Now().Add(wait)
		for {
			inner, err := u.readESP(deadline)
			if err != nil {
				if errors.Is(err, errDeadline) {
					break
				}
				return err
			}
			next, lease, err := cl.Handle(inner)
			switch {
			case errors.Is(err, dhcp.ErrNotReply):
				continue
			case err != nil:
				return fail("dhcp", "%v", err)
			case lease != nil:
				u.inner, u.gw = lease.Addr.Addr(), lease.Router
				return nil
			case next != nil:
				pkt = next
				if err := u.sendESP(pkt); err != nil {
					return err
				}
			}
		}
	}
	return fail("timeout-dhcp", "no DHCP lease through the tunnel")
}

var errDeadline = errors.New("deadline")

func (u *regUE) read(deadline time.Time) (int, netip.AddrPort, error) {
	u.conn.SetReadDeadline(deadline)
	n, from, err := u.conn.ReadFromUDPAddrPort(u.buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, from, errDeadline
		}
		return 0, from, fail("socket", "%v", err)
	}
	return n, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), nil
}

// sendESP seals an inner IPv4 packet with SA1 and sends it to the P-CSCF's
// ESP port.
func (u *regUE) sendESP(pkt []byte) error {
	return u.sealSend(append(u.bufs.tx[:esp.HeaderRoom], pkt...))
}

// sendInner sends payload from and to the inner addresses in an IPv4 UDP
// packet, built in place in the registration's ESP buffer, through SA1.
func (u *regUE) sendInner(from, to netip.AddrPort, payload []byte) error {
	b, err := inet.AppendUDP(u.bufs.tx[:esp.HeaderRoom], from, to, payload)
	if err != nil {
		return fail("esp", "%v", err)
	}
	return u.sealSend(b)
}

// sealSend seals the inner packet b[esp.HeaderRoom:] in place with SA1 and
// sends it to the P-CSCF's ESP port. b is the registration's ESP buffer,
// grown if need be.
func (u *regUE) sealSend(b []byte) error {
	n := len(b) - esp.HeaderRoom
	b = slices.Grow(b, esp.TailRoom)[:len(b)+esp.TailRoom]
	u.bufs.tx = b[:0]
	out, err := u.out.Seal(b, esp.HeaderRoom, n, 4)
	if err != nil {
		return fail("esp", "%v", err)
	}
	if err := u.writeTo(out, u.espTo); err != nil {
		return fail("socket", "%v", err)
	}
	return nil
}

// readESP returns the next inner packet that opens under one of our
// inbound SAs.
func (u *regUE) readESP(deadline time.Time) ([]byte, error) {
	for {
		n, from, err := u.read(deadline)
		if err != nil {
			return nil, err
		}
		if from != u.espTo || n < 8 || esp.Classify(u.buf[:n]) != esp.KindESP {
			continue
		}
		in := u.in[esp.SPI(binary.BigEndian.Uint32(u.buf[:4]))]
		if in == nil {
			continue
		}
		payload, _, _, err := in.Open(u.buf[:n])
		if err != nil {
			continue // counted by nobody: a stray or damaged packet
		}
		return payload, nil
	}
}

// writeTo sends b to a peer. Safe for concurrent use: a held UE's
// keepalives and its re-registration both send.
func (u *regUE) writeTo(b []byte, to netip.AddrPort) error {
	_, err := u.conn.WriteToUDPAddrPort(b, to)
	return err
}

// keepalive sends one NAT keepalive (RFC 3948 §2.3) to the ESP port.
func (u *regUE) keepalive() error {
	return u.writeTo([]byte{esp.NATKeepalive}, u.espTo)
}

func randToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// randSPI draws an SPI above the RFC 4303 reserved range.
func randSPI() esp.SPI {
	for {
		var b [4]byte
		rand.Read(b[:])
		if s := esp.SPI(binary.BigEndian.Uint32(b[:])); s > esp.SPIReservedMax {
			return s
		}
	}
}

// parseIPv4UDP returns the addresses, ports and payload of an IPv4 UDP
// packet.
func parseIPv4UDP(p []byte) (src, dst netip.Addr, sport, dport uint16, payload []byte, ok bool) {
	if len(p) < 28 || p[0]>>4 != 4 || p[9] != 17 {
		return
	}
	ihl := int(p[0]&0xf) * 4
	total := int(binary.BigEndian.Uint16(p[2:]))
	if ihl < 20 || total > len(p) || total < ihl+8 {
		return
	}
	src = netip.AddrFrom4([4]byte(p[12:16]))
	dst = netip.AddrFrom4([4]byte(p[16:20]))
	u := p[ihl:total]
	ulen := int(binary.BigEndian.Uint16(u[4:]))
	if ulen < 8 || ulen > len(u) {
		return
	}
	return src, dst, binary.BigEndian.Uint16(u), binary.BigEndian.Uint16(u[2:]), u[8:ulen], true
}
