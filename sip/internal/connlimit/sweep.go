package connlimit

import "time"

type victim struct {
	c   *conn
	why uint32
}

// sweeper times connections out, one sweep per interval, until Close.
func (l *Listener) sweeper() {
	defer l.wg.Done()
	t := time.NewTicker(l.sweep)
	defer t.Stop()
	var victims []victim // scratch, reused
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			victims = l.sweepOnce(l.cfg.Now(), victims[:0])
		}
	}
}

// sweepOnce closes the connections whose timeout has passed at now;
// victims is scratch space, returned for reuse.
//
// A sweep does not know when a byte arrived, only that one did since the
// last sweep, so it dates the arrival at this sweep, which is later than
// the truth (but for a byte that lands during the sweep itself): a
// connection is closed no earlier than its timeout after its last byte
// (or header start), and at most one interval later.
func (l *Listener) sweepOnce(now time.Time, victims []victim) []victim {
	idle, header := l.cfg.IdleTimeout, l.cfg.HeaderTimeout
	l.mu.Lock()
	for _, c := range l.conns {
		if c.active.Load() {
			c.active.Store(false)
			c.lastActive = now
		} else if idle > 0 && now.Sub(c.lastActive) >= idle {
			victims = append(victims, victim{c, connIdle})
			continue
		}
		if header > 0 {
			if g := c.gen.Load(); g != c.seenGen {
				c.seenGen, c.genSince = g, now
			} else if g&1 == 1 && now.Sub(c.genSince) >= header {
				victims = append(victims, victim{c, connHeader})
			}
		}
	}
	l.mu.Unlock()
	// Closing takes syscalls and l.mu (release): outside the lock.
	for i, v := range victims {
		v.c.expire(v.why)
		victims[i] = victim{}
	}
	return victims
}
