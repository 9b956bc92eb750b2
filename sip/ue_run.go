package sip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Run keeps the UE registered until ctx ends, then de-registers: it
// registers, re-registers (a new AKA run and SA set) before expiry, probes
// the P-CSCF through the tunnel between re-registrations (probe), and
// starts over from an unprotected REGISTER when a re-registration or a
// probe fails (the P-CSCF restarted and forgot us, or the NAT lost our
// mapping). Failed registrations are retried with a documented back-off:
// 1 s doubling to a minute.
func (u *UE) Run(ctx context.Context) error {
	if err := u.registerRetrying(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	for {
		u.mu.Lock()
		left := u.expires.Sub(u.now())
		u.mu.Unlock()
		// Refresh at half the lifetime, and at least 5 s before the end.
		refresh := max(min(left/2, left-5*time.Second), time.Second)
		lost, err := u.waitProbing(ctx, refresh)
		if ctx.Err() != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := u.Deregister(dctx); err != nil {
				return fmt.Errorf("sip: de-registration on exit: %w", err)
			}
			return nil
		}
		if !lost {
			err = u.Reregister(ctx)
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if isFatal(err) {
			return err
		}
		what := "re-registration failed: starting over"
		if lost {
			what = "the P-CSCF does not answer through the tunnel: starting over"
		}
		u.emit(EvStartOver, "", what, err.Error())
		u.reset()
		if err := u.registerRetrying(ctx); err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// registerRetrying registers, retrying with back-off until it succeeds,
// ctx ends (nil) or the failure is one retrying cannot fix.
func (u *UE) registerRetrying(ctx context.Context) error {
	backoff := time.Second
	for {
		err := u.Register(ctx)
		switch {
		case err == nil, ctx.Err() != nil:
			return nil
		case isFatal(err):
			return err
		}
		wait := retryWait(err, backoff)
		u.emit(EvRetry, "", "registration failed, retrying in "+wait.String(), err.Error())
		u.reset()
		if !sleepCtx(ctx, wait) {
			return nil
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// retryWait is how long to wait before registering again after err: the
// back-off, or longer if the P-CSCF asked for it with a 503's Retry-After.
func retryWait(err error, backoff time.Duration) time.Duration {
	var se *statusError
	if errors.As(err, &se) && se.retryAfter > backoff {
		return se.retryAfter
	}
	return backoff
}

// waitProbing waits d (or until ctx ends), sending a liveness probe every
// probe interval; lost is set, with the probe's error, when one fails.
func (u *UE) waitProbing(ctx context.Context, d time.Duration) (lost bool, err error) {
	end := time.NewTimer(d)
	defer end.Stop()
	var tick <-chan time.Time
	if u.cfg.Probe > 0 {
		t := time.NewTicker(u.cfg.Probe)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-end.C:
			return false, nil
		case <-tick:
			if err := u.Probe(ctx); err != nil && ctx.Err() == nil {
				return true, err
			}
		}
	}
}

// Probe checks that the P-CSCF still holds our SAs: an OPTIONS from our
// port-c to its port-s inside the tunnel, answered within ProbeTimeout. A
// P-CSCF that restarted has no SAs and drops it (so the probe times out);
// one that forgot us answers 403.
func (u *UE) Probe(ctx context.Context) error {
	cur := u.activeSetNow()
	if cur == nil {
		return errors.New("sip: not registered")
	}
	u.mu.Lock()
	inner, gw := u.innerAddr, u.gateway
	u.mu.Unlock()
	dst := sip.Uri{Scheme: "sip", Host: gw.String(), Port: int(cur.set.PCSCF.PortS)}
	req := sip.NewRequest(sip.OPTIONS, dst)
	var impu sip.Uri
	sip.ParseUri(u.cfg.IMPU, &impu)
	req.AppendHeader(&sip.FromHeader{Address: impu, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}}})
	req.AppendHeader(&sip.ToHeader{Address: dst})
	pctx, cancel := context.WithTimeout(ctx, u.cfg.ProbeTimeout)
	defer cancel()
	res, err := sendRequest(pctx, u.innerCli, u.innerUA, u.inet, u.innerInj, req,
		netip.AddrPortFrom(inner, cur.set.UE.PortC), netip.AddrPortFrom(gw, cur.set.PCSCF.PortS))
	if err != nil {
		return fmt.Errorf("sip: liveness probe: %w", err)
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("sip: liveness probe: %d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// reset forgets the registration and its SA sets, so that the next
// Register starts from scratch (DHCP included).
func (u *UE) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.registered = false
	u.sas.clear()
}

// isFatal tells errors that retrying cannot fix: the network failed
// authentication, or the P-CSCF refused us.
func isFatal(err error) bool {
	return errors.Is(err, ErrNetworkAuth) || errors.Is(err, ErrForbidden)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// OnceResult is what Once found.
type OnceResult struct {
	Info UEInfo        // as registered, before the de-registration
	RTT  time.Duration // of the ping through the tunnel
}

// Once registers, pings the P-CSCF's inner address through the tunnel and
// de-registers: a smoke test of the whole path, for scripts.
func (u *UE) Once(ctx context.Context) (OnceResult, error) {
	if err := u.Register(ctx); err != nil {
		return OnceResult{}, err
	}
	res := OnceResult{Info: u.Info()}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rtt, err := u.Ping(pctx, 1)
	if err != nil {
		u.Deregister(context.WithoutCancel(ctx))
		return res, fmt.Errorf("sip: ping %v through the tunnel: %w", res.Info.PCSCFInner, err)
	}
	res.RTT = rtt
	return res, u.Deregister(ctx)
}

// CallOnce registers, calls target for d with UEConfig.Media, hangs up,
// de-registers, and returns the call's report.
func (u *UE) CallOnce(ctx context.Context, target string, d time.Duration) (*CallReport, error) {
	if err := u.Register(ctx); err != nil {
		return nil, err
	}
	rep, err := u.Call(ctx, target, d, u.cfg.Media)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	derr := u.Deregister(dctx)
	if err != nil {
		return nil, err
	}
	return rep, derr
}
