package sip

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/sip/media"
)

// MediaConfig is the synthetic media a UE sends in a call. Zero values are
// the sender's documented defaults (audio: 160-octet payloads every 20 ms;
// video: 25 frames a second, a key frame of ~8 kB each second, deltas of
// ~1.5 kB, packets of at most 1200 octets).
type MediaConfig struct {
	NoAudio, NoVideo bool
	Audio            media.Audio
	Video            media.Video
}

// CallReport is what one end of a call saw.
type CallReport struct {
	Peer     string          `json:"peer"`
	Caller   bool            `json:"caller"`
	SetupMs  float64         `json:"setup_ms"` // INVITE to 200 OK
	Seconds  float64         `json:"duration_s"`
	Sent     media.SendStats `json:"sent"`
	Received media.Report    `json:"received"`
}

// String is a short readable report.
func (r CallReport) String() string {
	var b strings.Builder
	role := "callee"
	if r.Caller {
		role = "caller"
	}
	fmt.Fprintf(&b, "call with %s (%s): %.1f s", r.Peer, role, r.Seconds)
	if r.Caller {
		fmt.Fprintf(&b, ", set up in %.1f ms", r.SetupMs)
	}
	fmt.Fprintf(&b, "\n  sent: audio %d packets, video %d packets in %d frames\n", r.Sent.Audio.Packets, r.Sent.Video.Packets, r.Sent.Video.Frames)
	b.WriteString(indent(r.Received.String(), "  "))
	return b.String()
}

func indent(s, p string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = p + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

// When a call ends, the media meter waits for the peer's packets still in
// flight: until none arrived for mediaQuiet (two audio packet times), at
// most mediaDrainMax.
const (
	mediaQuiet    = 40 * time.Millisecond
	mediaDrainMax = 500 * time.Millisecond
)

// AnswerMode is what a UE does with an incoming call.
type AnswerMode uint8

// Answer modes. The zero value is AnswerAuto.
const (
	AnswerAuto   AnswerMode = iota // ring, then answer
	AnswerBusy                     // 486 Busy Here
	AnswerIgnore                   // ring forever (the caller times out or cancels)
)

func (m AnswerMode) String() string {
	switch m {
	case AnswerAuto:
		return "auto"
	case AnswerBusy:
		return "busy"
	case AnswerIgnore:
		return "ignore"
	}
	return fmt.Sprintf("answer(%d)", uint8(m))
}

// ParseAnswerMode parses "auto", "busy" or "ignore".
func ParseAnswerMode(s string) (AnswerMode, error) {
	for _, m := range []AnswerMode{AnswerAuto, AnswerBusy, AnswerIgnore} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("answer mode %q: want auto, busy or ignore", s)
}

// ErrNoCallMedia means the UE has no media tunnel (the P-CSCF did not
// agree to it), so it cannot carry a call's media.
var ErrNoCallMedia = errors.New("sip: no media tunnel (the P-CSCF did not answer media-spi)")

// callMedia is a call's media sockets, sender and meter.
type callMedia struct {
	conns  []net.PacketConn // audio, video (nil when absent)
	meter  *media.Meter
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	sent   media.SendStats
}

func (u *UE) openCallMedia(cfg MediaConfig) (*callMedia, []uint16, error) {
	if u.mediaNS == nil {
		return nil, nil, ErrNoCallMedia
	}
	cm := &callMedia{meter: media.NewMeter(media.MeterConfig{})}
	ports := make([]uint16, 2)
	for i, off := range []bool{cfg.NoAudio, cfg.NoVideo} {
		if off {
			cm.conns = append(cm.conns, nil)
			continue
		}
		c, err := u.mediaNS.ListenUDP(netip.AddrPortFrom(u.innerAddr, 0))
		if err != nil {
			cm.close()
			return nil, nil, err
		}
		cm.conns = append(cm.conns, c)
		ports[i] = uint16(c.LocalAddr().(*net.UDPAddr).Port)
	}
	ctx, cancel := context.WithCancel(u.ctx)
	cm.cancel = cancel
	for _, c := range cm.conns {
		if c != nil {
			cm.wg.Add(1)
			go func() { defer cm.wg.Done(); cm.meter.Run(ctx, c) }()
		}
	}
	return cm, ports, nil
}

// start sends the configured streams to the answer's (or offer's)
// endpoints until ctx ends or duration passes.
func (cm *callMedia) start(ctx context.Context, d media.Description, cfg MediaConfig, duration time.Duration) {
	for i, kind := range []string{media.MediaAudio, media.MediaVideo} {
		idx := d.MediaIndex(kind)
		if cm.conns[i] == nil || idx < 0 || d.Media[idx].Port == 0 {
			continue
		}
		sc := media.SendConfig{Duration: duration}
		if kind == media.MediaAudio {
			a := cfg.Audio
			sc.Audio = &a
		} else {
			v := cfg.Video
			sc.Video = &v
		}
		conn, dst := cm.conns[i], d.Endpoint(idx)
		cm.wg.Add(1)
		go func() {
			defer cm.wg.Done()
			st, _ := media.Send(ctx, conn, dst, sc)
			cm.mu.Lock()
			if kind == media.MediaAudio {
				cm.sent.Audio = st.Audio
			} else {
				cm.sent.Video = st.Video
			}
			cm.mu.Unlock()
		}()
	}
}

func (cm *callMedia) close() {
	if cm.cancel != nil {
		cm.cancel()
	}
	for _, c := range cm.conns {
		if c != nil {
			c.Close()
		}
	}
	cm.wg.Wait()
}

// activeSetNow returns the UE's current SA set.
func (u *UE) activeSetNow() *liveSet {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sas.active()
}

// innerPath is how the UE's requests reach the P-CSCF: inside the tunnel
// from the current set's port-c to the P-CSCF's port-s.
func (u *UE) innerPath() requester {
	return requester{cli: u.innerCli, prep: func(ctx context.Context, req *sip.Request) error {
		cur := u.activeSetNow()
		if cur == nil {
			return errors.New("sip: not registered")
		}
		return prepareRequest(ctx, u.innerCli, u.innerUA, u.inet, u.innerInj, req,
			netip.AddrPortFrom(u.innerAddr, cur.set.UE.PortC), netip.AddrPortFrom(u.gateway, cur.set.PCSCF.PortS))
	}}
}

// Call places a call to target (a SIP URI), inside the tunnel through the
// P-CSCF, sends synthetic media through the media tunnel for duration, then
// hangs up and reports what both directions carried. ctx bounds the whole
// call; while it rings, ending ctx sends CANCEL.
func (u *UE) Call(ctx context.Context, target string, duration time.Duration, mc MediaConfig) (*CallReport, error) {
	var to sip.Uri
	if err := sip.ParseUri(target, &to); err != nil || to.Host == "" {
		return nil, fmt.Errorf("sip: call target %q is not a SIP URI", target)
	}
	u.mu.Lock()
	registered := u.registered
	u.mu.Unlock()
	if !registered {
		return nil, errors.New("sip: not registered")
	}
	cm, ports, err := u.openCallMedia(mc)
	if err != nil {
		return nil, err
	}
	defer cm.close()
	sdp, err := media.CallDescription(u.innerAddr, randU64(), ports[0], ports[1]).Marshal()
	if err != nil {
		return nil, err
	}
	var impu sip.Uri
	sip.ParseUri(u.cfg.IMPU, &impu)
	d := &dialogEnd{callID: newCallID(u.cfg.Domain), local: impu, localTag: newTag(), remote: to, target: to, cseq: 1}
	d.path = u.innerPath()
	inv := d.request(sip.INVITE, 1)
	inv.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.innerAddr.String(), Port: int(u.cfg.PortS)}})
	inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	inv.SetBody(sdp)
	if u.hookInvite != nil {
		u.hookInvite(inv)
	}
	if err := d.path.prep(ctx, inv); err != nil {
		return nil, err
	}
	u.emit(EvInvite, u.pcscfName(), "INVITE "+target+" (inside ESP)", fmt.Sprintf("SDP: audio %v, video %v (media tunnel)", netip.AddrPortFrom(u.innerAddr, ports[0]), netip.AddrPortFrom(u.innerAddr, ports[1])))
	start := time.Now()
	final, err := runInvite(ctx, u.innerCli, inv, func(r *sip.Response) {
		u.emit(EvProvisional, "", fmt.Sprintf("%d %s", r.StatusCode, r.Reason), "")
	})
	if err != nil {
		return nil, fmt.Errorf("sip: INVITE %s: %w", target, err)
	}
	if !final.IsSuccess() {
		u.emit(EvCallFailed, "", fmt.Sprintf("%d %s", final.StatusCode, final.Reason), "call not answered")
		return nil, &ErrCallFailed{Code: final.StatusCode, Reason: final.Reason}
	}
	setup := time.Since(start)
	d.fromResponse(final)
	if err := d.path.write(ackFor(inv, final)); err != nil {
		return nil, fmt.Errorf("sip: ACK: %w", err)
	}
	answer, err := media.ParseSDP(final.Body())
	if err != nil {
		d.bye(u.ctx)
		return nil, fmt.Errorf("sip: answer SDP: %w", err)
	}
	u.emit(EvCallUp, "", "200 OK, ACK: call up", fmt.Sprintf("in %v; media to the P-CSCF's relay at %v", setup.Round(time.Microsecond), answer.Endpoint(0)))
	mctx, mcancel := context.WithTimeout(ctx, duration)
	cm.start(mctx, answer, mc, duration)
	<-mctx.Done()
	mcancel()
	cm.meter.Drain(ctx, mediaQuiet, mediaDrainMax)
	byeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultSIPTimeout)
	defer cancel()
	u.emit(EvBye, u.pcscfName(), "BYE", "")
	if err := d.bye(byeCtx); err != nil {
		return nil, err
	}
	cm.close()
	rep := &CallReport{Peer: target, Caller: true, SetupMs: float64(setup.Microseconds()) / 1000, Seconds: time.Since(start).Seconds() - setup.Seconds(),
		Sent: cm.sent, Received: cm.meter.Report()}
	return rep, nil
}

// answerSDP is the UE's answer to offer (RFC 3264 §6): one m= line per
// offered one, in order, with our port for the kinds we send and receive
// (ports: audio, video; 0 when off) and port 0 (declined) for the rest.
func answerSDP(offer media.Description, addr netip.Addr, ports []uint16) media.Description {
	ours := media.CallDescription(addr, randU64(), ports[0], ports[1])
	ans := ours
	ans.Media = nil
	for _, m := range offer.Media {
		if i := ours.MediaIndex(m.Kind); i >= 0 && m.Port != 0 {
			ans.Media = append(ans.Media, ours.Media[i])
			continue
		}
		ans.Media = append(ans.Media, media.Media{Kind: m.Kind, Port: 0, Proto: m.Proto, Formats: m.Formats})
	}
	return ans
}

func randU64() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) >> 1
}

// ueCall is a call we answered.
type ueCall struct {
	d     *dialogEnd
	cm    *callMedia
	offer media.Description
	peer  string
	start time.Time
}

// onInvite answers an incoming call (UEConfig.Answer).
func (u *UE) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	respond := func(code int, reason string, body []byte, tag string) {
		res := sip.NewResponseFromRequest(req, code, reason, body)
		if tag != "" {
			if to := res.To(); to != nil {
				to.Params.Remove("tag")
				to.Params.Add("tag", tag)
			}
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: userOf(u.cfg.IMPU), Host: u.innerAddr.String(), Port: int(u.cfg.PortS)}})
		}
		if body != nil {
			res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		}
		res.SetDestination(req.Source())
		tx.Respond(res)
	}
	if u.hookIncoming != nil {
		u.hookIncoming(req)
	}
	// Who calls is what the network asserts (RFC 3325), else the From.
	from := "unknown"
	if h := req.GetHeader("P-Asserted-Identity"); h != nil && normAOR(h.Value()) != "" {
		from = normAOR(h.Value())
	} else if f := req.From(); f != nil {
		from = aor(f.Address)
	}
	u.emit(EvInvite, "", "INVITE from "+from+" (inside ESP)", "incoming call")
	u.mu.Lock()
	busy := u.curCall != nil
	u.mu.Unlock()
	switch {
	case busy || u.cfg.Answer == AnswerBusy:
		u.emit(EvCallFailed, u.pcscfName(), "486 Busy Here", "")
		respond(486, "Busy Here", nil, "")
		return
	}
	offer, err := media.ParseSDP(req.Body())
	if err != nil {
		respond(488, "Not Acceptable Here", nil, "")
		return
	}
	cm, ports, err := u.openCallMedia(u.cfg.Media)
	if err != nil {
		respond(488, "Not Acceptable Here", nil, "")
		return
	}
	tag := newTag()
	if !u.hookNoRinging {
		respond(180, "Ringing", nil, tag)
		u.emit(EvProvisional, u.pcscfName(), "180 Ringing", "")
	}
	if u.cfg.Answer == AnswerIgnore {
		select {
		case <-tx.Done(): // the caller cancels or times out
		case <-u.ctx.Done():
		}
		cm.close()
		return
	}
	if u.cfg.RingTime > 0 {
		select {
		case <-time.After(u.cfg.RingTime):
		case <-tx.Done(): // cancelled while ringing
			cm.close()
			return
		case <-u.ctx.Done():
			cm.close()
			return
		}
	}
	sdp, err := answerSDP(offer, u.innerAddr, ports).Marshal()
	if err != nil {
		cm.close()
		return
	}
	d := uasDialog(req, tag)
	d.path = u.innerPath()
	c := &ueCall{d: d, cm: cm, offer: offer, peer: from, start: time.Now()}
	u.mu.Lock()
	u.curCall = c
	u.mu.Unlock()
	u.emit(EvCallUp, u.pcscfName(), "200 OK (answer)", fmt.Sprintf("SDP: audio %v, video %v (media tunnel)", netip.AddrPortFrom(u.innerAddr, ports[0]), netip.AddrPortFrom(u.innerAddr, ports[1])))
	respond(200, "OK", sdp, tag)
}

// onAck starts our media once the caller has the answer.
func (u *UE) onAck(req *sip.Request, tx sip.ServerTransaction) {
	u.mu.Lock()
	c := u.curCall
	u.mu.Unlock()
	if c == nil || req.CallID() == nil || req.CallID().Value() != c.d.callID {
		return
	}
	u.emit(EvCallUp, "", "ACK: call up", "sending media to the P-CSCF's relay")
	c.cm.start(u.ctx, c.offer, u.cfg.Media, 0)
}

// onBye ends the call we answered and reports it.
func (u *UE) onBye(req *sip.Request, tx sip.ServerTransaction) {
	u.mu.Lock()
	c := u.curCall
	if c != nil && req.CallID().Value() == c.d.callID {
		u.curCall = nil
	} else {
		c = nil
	}
	u.mu.Unlock()
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	if c == nil {
		res = sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil)
	}
	res.SetDestination(req.Source())
	tx.Respond(res)
	if c == nil {
		return
	}
	c.cm.meter.Drain(u.ctx, mediaQuiet, mediaDrainMax)
	c.cm.close()
	rep := CallReport{Peer: c.peer, Seconds: time.Since(c.start).Seconds(), Sent: c.cm.sent, Received: c.cm.meter.Report()}
	u.emit(EvBye, "", "BYE received: call ended", "200 OK")
	if u.cfg.OnCallEnd != nil {
		u.cfg.OnCallEnd(rep)
	}
}
