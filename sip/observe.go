package sip

import (
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/sip/media"
	"github.com/imsec/imsec/tun"
)

// What a monitor reads of a running Server or UE (the observe package
// turns it into Prometheus metrics and the status API). Everything here is
// read at scrape time; what is counted per SIP message costs a lookup and
// an atomic add.

// sipMethods are the request methods counted by name; any other method is
// counted as "other", so that a stranger cannot grow the label set.
var sipMethods = [...]string{"REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "PRACK", "UPDATE",
	"INFO", "MESSAGE", "SUBSCRIBE", "NOTIFY", "REFER", "PUBLISH", "other"}

// sipCounters count SIP messages: requests by method in an array, and
// responses by method (their CSeq's) and status code in a map whose
// counters are made on first use and then only added to. A counter add is
// atomic; the map is read without a lock (sync.Map), so the cost per
// message is a lookup and an add. Messages come from the transport's
// reader (received) or the responder (sent); SIPCounts reads them.
type sipCounters struct {
	requestsIn [len(sipMethods)]atomic.Uint64
	responses  sync.Map // responseKey -> *atomic.Uint64
}

// responseKey is a response's counter: at most 2 x len(sipMethods) x 601
// of them, whatever peers send.
type responseKey struct {
	sent   bool
	method uint8  // index in sipMethods
	code   uint16 // 100..699, or 0 for anything else
}

func methodIndex(m sip.RequestMethod) int {
	for i, name := range sipMethods[:len(sipMethods)-1] {
		if string(m) == name {
			return i
		}
	}
	return len(sipMethods) - 1
}

// codeOf is a status code as counted: RFC 3261 §7.2 allows 100..699,
// anything else is counted as 0.
func codeOf(code int) uint16 {
	if code < 100 || code > 699 {
		return 0
	}
	return uint16(code)
}

// watch counts every message ua's transport layer reads. Call it before
// ua serves anything (sipgo's handler list is not locked).
func (c *sipCounters) watch(ua *sipgo.UserAgent) {
	ua.TransportLayer().OnMessage(c.received)
}

func (c *sipCounters) received(m sip.Message) {
	switch m := m.(type) {
	case *sip.Request:
		c.requestsIn[methodIndex(m.Method)].Add(1)
	case *sip.Response:
		c.response(m, false)
	}
}

func (c *sipCounters) sent(res *sip.Response) { c.response(res, true) }

func (c *sipCounters) response(res *sip.Response, sent bool) {
	k := responseKey{sent: sent, method: uint8(len(sipMethods) - 1), code: codeOf(res.StatusCode)}
	if cseq := res.CSeq(); cseq != nil {
		k.method = uint8(methodIndex(cseq.MethodName))
	}
	c.add(k)
}

// shed counts a REGISTER received and its 503 sent without either being
// parsed (overload.go's stateless refusal).
func (c *sipCounters) shed() {
	c.requestsIn[methodIndex(sip.REGISTER)].Add(1)
	c.add(responseKey{sent: true, method: uint8(methodIndex(sip.REGISTER)), code: 503})
}

func (c *sipCounters) add(k responseKey) {
	v, ok := c.responses.Load(k)
	if !ok {
		v, _ = c.responses.LoadOrStore(k, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}

// SIPResponse names a response counter: the method of the request it
// answers (from CSeq, named as in SIPCounts.RequestsReceived) and its status code (0: outside 100..699).
type SIPResponse struct {
	Method string
	Code   int
}

// SIPCounts are the SIP messages a Server or UE has handled since it
// started.
type SIPCounts struct {
	RequestsReceived  map[string]uint64      // by method: REGISTER, INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, SUBSCRIBE, NOTIFY, REFER, PUBLISH, or other
	ResponsesReceived map[SIPResponse]uint64 // by method and code
	ResponsesSent     map[SIPResponse]uint64 // by method and code (the UE's own answers are not counted)
}

func (c *sipCounters) snapshot() SIPCounts {
	out := SIPCounts{RequestsReceived: map[string]uint64{}, ResponsesReceived: map[SIPResponse]uint64{}, ResponsesSent: map[SIPResponse]uint64{}}
	for i := range c.requestsIn {
		if v := c.requestsIn[i].Load(); v != 0 {
			out.RequestsReceived[sipMethods[i]] = v
		}
	}
	c.responses.Range(func(key, v any) bool {
		k := key.(responseKey)
		r := SIPResponse{Method: sipMethods[k.method], Code: int(k.code)}
		if k.sent {
			out.ResponsesSent[r] = v.(*atomic.Uint64).Load()
		} else {
			out.ResponsesReceived[r] = v.(*atomic.Uint64).Load()
		}
		return true
	})
	return out
}

// SIPCounts returns the SIP messages the P-CSCF received and the responses
// it sent, on both sides (unprotected and inside the tunnels).
func (s *Server) SIPCounts() SIPCounts { return s.sipc.snapshot() }

// SIPCounts returns the SIP messages the UE received.
func (u *UE) SIPCounts() SIPCounts { return u.sipc.snapshot() }

// SAGauge is how many SAs (one direction each) are in one state for one
// purpose: an SA set is four signalling SAs, its media pair two more.
type SAGauge struct {
	State   string // temporary, active, old
	Purpose string // signalling, media
	SAs     int
}

// Gauges are what the P-CSCF holds at one moment.
type Gauges struct {
	Registrations int // held: registered or with a challenge pending
	Registered    int // registered (a 200 OK given and not yet expired)
	Calls         int // calls in the B2BUA (ringing or up)
	// SAs lists every state and purpose, zeros included, so that a
	// monitor sees each series from the start.
	SAs []SAGauge
}

var (
	saStates   = [...]saState{saTemporary, saActive, saOld}
	saPurposes = [...]string{"signalling", "media"}
)

// Gauges counts the registrations, calls and SAs. It walks every
// registration under the server's lock: call it per scrape, not per packet.
func (s *Server) Gauges() Gauges {
	var sas [len(saStates)][2]int
	s.mu.Lock()
	g := Gauges{Registrations: len(s.regs)}
	for _, reg := range s.regs {
		if reg.registered {
			g.Registered++
		}
		for _, ls := range reg.sas.sets {
			if int(ls.state) >= len(saStates) {
				continue
			}
			sas[ls.state][0] += 4
			if ls.media != nil {
				sas[ls.state][1] += 2
			}
		}
	}
	calls := map[*bcall]bool{} // the table holds each call under both legs' Call-IDs
	for _, c := range s.calls {
		calls[c] = true
	}
	g.Calls = len(calls)
	s.mu.Unlock()
	for i, st := range saStates {
		for j, p := range saPurposes {
			g.SAs = append(g.SAs, SAGauge{State: st.String(), Purpose: p, SAs: sas[i][j]})
		}
	}
	return g
}

// MediaRelay gives access to the media relay's counters.
func (s *Server) MediaRelay() *media.Relay { return s.relay }

// MediaPump gives access to the media tunnel's counters (nil before the
// first registration with a media tunnel).
func (u *UE) MediaPump() *tun.Pump {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.mediaPump
}

// SocketDrops are the datagrams the kernel dropped at each of the P-CSCF's
// UDP sockets (Stats.SocketDrops).
type SocketDrops struct {
	SIP      uint64 `json:"sip,omitempty"`       // the unprotected SIP socket
	ESP      uint64 `json:"esp,omitempty"`       // the signalling tunnels' ESP-in-UDP socket
	MediaESP uint64 `json:"media-esp,omitempty"` // the media tunnels' ESP-in-UDP socket
}

// socketDrops reads the sockets' drop counts (set once in New; no lock).
func (s *Server) socketDrops() SocketDrops {
	var d SocketDrops
	if c, ok := s.outerUDP.(interface{ Drops() (uint64, bool) }); ok {
		d.SIP, _ = c.Drops()
	}
	if s.ep != nil {
		d.ESP, _ = s.ep.SocketDrops()
	}
	if s.mediaEp != nil {
		d.MediaESP, _ = s.mediaEp.SocketDrops()
	}
	return d
}
