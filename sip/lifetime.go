package sip

import (
	"context"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// lifetime is what a Server and a UE own alike: a root context that Close
// cancels, the goroutines they start, and the request handlers running.
// Close stops handlers first (their context is cancelled and no new one
// starts: one still running after the user agents close could make sipgo
// open a socket), then closes the owner's sockets, then waits for the
// goroutines.
type lifetime struct {
	ctx    context.Context
	cancel context.CancelFunc

	wg       sync.WaitGroup // every goroutine started with goFunc
	handlers sync.WaitGroup // every request handler running

	mu     sync.Mutex // guards closed only; taken alone
	closed bool
}

func (l *lifetime) init() { l.ctx, l.cancel = context.WithCancel(context.Background()) }

// goFunc runs f on a goroutine that close waits for.
func (l *lifetime) goFunc(f func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
}

// handler wraps a sipgo request handler: it runs only while the owner is
// open, close waits for it, and a request in a SIP version other than 2.0
// is answered by badVersion (505, RFC 3261 §8.2.5) instead.
func (l *lifetime) handler(h, badVersion func(req *sip.Request, tx sip.ServerTransaction)) func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return
		}
		l.handlers.Add(1)
		l.mu.Unlock()
		defer l.handlers.Done()
		if req.SipVersion != sipVersion {
			badVersion(req, tx)
			return
		}
		h(req, tx)
	}
}

// stop cancels the context and waits for the handlers. It returns false
// when the owner was already closing: the caller then only waits.
func (l *lifetime) stop() bool {
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	l.mu.Unlock()
	if l.cancel != nil {
		l.cancel()
	}
	l.handlers.Wait()
	return first
}
