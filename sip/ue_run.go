package sip

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Run keeps the UE registered until ctx ends, then de-registers: it
// registers, re-registers (a new AKA run and SA set) before expiry, and
// starts over from an unprotected REGISTER when a re-registration fails
// (the P-CSCF restarted and forgot us, or the NAT lost our mapping and the
// answer never came). Transient failures are retried with back-off.
func (u *UE) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		err := u.Register(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if isFatal(err) {
			return err
		}
		u.emit(EvRetry, "", "registration failed, retrying in "+backoff.String(), err.Error())
		u.reset()
		if !sleepCtx(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, time.Minute)
	}
	for {
		u.mu.Lock()
		left := u.expires.Sub(u.now())
		u.mu.Unlock()
		// Refresh at half the lifetime, and at least 5 s before the end.
		wait := min(left/2, left-5*time.Second)
		if wait < time.Second {
			wait = time.Second
		}
		if !sleepCtx(ctx, wait) {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := u.Deregister(dctx); err != nil {
				return fmt.Errorf("sip: de-registration on exit: %w", err)
			}
			return nil
		}
		if err := u.Reregister(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isFatal(err) {
				return err
			}
			u.emit(EvStartOver, "", "re-registration failed: starting over", err.Error())
			u.reset()
			backoff := time.Second
			for {
				if err := u.Register(ctx); err == nil {
					break
				} else if ctx.Err() != nil {
					return nil
				} else if isFatal(err) {
					return err
				} else {
					u.emit(EvRetry, "", "registration failed, retrying in "+backoff.String(), err.Error())
					u.reset()
				}
				if !sleepCtx(ctx, backoff) {
					return nil
				}
				backoff = min(2*backoff, time.Minute)
			}
		}
	}
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
