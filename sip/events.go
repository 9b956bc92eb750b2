package sip

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Event is one step of a registration as the seed's Figures 2 and 3 draw
// it: a message between two parties, or something one party did.
type Event struct {
	Time     time.Time
	From, To string // parties, e.g. "UE alice", "P-CSCF a.example", "HSS"; To is "" for an action
	What     string // the message or action, e.g. "REGISTER (unprotected)"
	Detail   string // one line of detail, may be ""
}

// EventFunc receives events; it must not block for long.
type EventFunc func(Event)

// LadderPrinter returns an EventFunc that prints one line per event to w,
// in the order they arrive (safe for concurrent use).
func LadderPrinter(w io.Writer) EventFunc {
	var mu sync.Mutex
	return func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		arrow := e.From
		if e.To != "" {
			arrow = fmt.Sprintf("%s -> %s", e.From, e.To)
		}
		if e.Detail != "" {
			fmt.Fprintf(w, "%-34s %s  [%s]\n", arrow, e.What, e.Detail)
		} else {
			fmt.Fprintf(w, "%-34s %s\n", arrow, e.What)
		}
	}
}

func emit(f EventFunc, now time.Time, from, to, what, detail string) {
	if f != nil {
		f(Event{Time: now, From: from, To: to, What: what, Detail: detail})
	}
}
