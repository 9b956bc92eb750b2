package sip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/imsec/imsec/sip/internal/connlimit"
)

// startOuter serves unprotected SIP on the host's UDP and TCP sockets.
func (s *Server) startOuter() error {
	ua, err := newUA("imsec-pcscf", s.log, s.shedFilter, false)
	if err != nil {
		return err
	}
	s.sipc.watch(ua)
	s.outerUA = ua
	if s.outer, err = sipgo.NewServer(ua, sipgo.WithServerLogger(s.log)); err != nil {
		return err
	}
	s.outer.OnRegister(s.handler(s.onOuterRegister))
	s.outer.OnInvite(s.handler(s.onInvite(false)))
	s.outer.OnAck(s.handler(s.onAck))
	s.outer.OnBye(s.handler(s.onBye(false)))
	s.outer.OnOptions(s.handler(func(req *sip.Request, tx sip.ServerTransaction) {
		s.respond(tx, req, 200, "OK", true)
	}))
	if s.outerUDP, s.outerTCP, err = listenUDPAndTCP(s.cfg.SIP); err != nil {
		return err
	}
	// Receive times feed overload control (shedFilter); sockets that
	// cannot give them (other systems, tests' fakes) do without.
	if st, ok := s.outerUDP.(receiveStamper); ok && st.StampReceived() {
		s.outerStamps = st
	}
	s.serve("unprotected UDP", func() error { return s.outer.ServeUDP(s.outerUDP) })
	tcp := s.cfg.Limits.TCP
	if s.cfg.Limits.Off {
		tcp.MaxPerSource = connlimit.Off
	}
	s.outerLim = connlimit.New(s.outerTCP, tcp)
	s.serve("unprotected TCP", func() error { return s.outer.ServeTCP(s.outerLim) })
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	if err := waitPool(ctx, ua, "udp", s.outerUDP.LocalAddr().String()); err != nil {
		return err
	}
	s.outerCli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(s.log), sipgo.WithClientHostname(s.hostAddr().String()))
	return err
}

// serve runs one of sipgo's Serve loops on a goroutine that Close waits
// for. A loop that ends while the Server is open is a listener that died
// (sipgo's loops retry temporary accept errors, third_party/sipgo/IMSEC.md):
// that is logged at ERROR and reported by Wait, never silent.
func (s *Server) serve(what string, f func() error) {
	s.goFunc(func() {
		err := f()
		if s.ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("returned")
		}
		err = fmt.Errorf("sip: %s listener stopped: %w", what, err)
		s.log.Error(err.Error())
		select {
		case s.failed <- err:
		default:
		}
	})
}

// Wait blocks until ctx ends (nil) or one of the Server's listeners dies
// (its error): a process serving a P-CSCF exits non-zero then, rather than
// stay half-alive.
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.failed:
		return err
	}
}

// sipVersion is the only SIP version imsec speaks (RFC 3261 §7.1).
const sipVersion = "SIP/2.0"

func parseAddrPort(s string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// respond sends a response to where the request came from (RFC 3581: the
// observed source, which is what gets through a NAT). outer marks the
// unprotected side, where Via gets received/rport when a NAT is seen.
func (s *Server) respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, outer bool, hdrs ...sip.Header) {
	s.send(tx, s.response(req, code, reason, outer, hdrs...))
}

// response builds the response respond sends.
func (s *Server) response(req *sip.Request, code int, reason string, outer bool, hdrs ...sip.Header) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	res.SipVersion = sipVersion
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if outer {
		src := parseAddrPort(req.Source())
		if v := res.Via(); v != nil && src.IsValid() {
			if v.Host != src.Addr().String() {
				v.Params.Add("received", src.Addr().String())
			}
			if _, ok := v.Params.Get("rport"); ok || v.Port != int(src.Port()) {
				v.Params.Add("rport", strconv.Itoa(int(src.Port())))
			}
		}
	}
	res.SetDestination(req.Source())
	return res
}

// send sends a response on its transaction.
func (s *Server) send(tx sip.ServerTransaction, res *sip.Response) {
	s.sipc.sent(res)
	if err := tx.Respond(res); err != nil {
		s.log.Debug("respond failed", "code", res.StatusCode, "err", err)
	}
}
