package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/internal/rawudp"
)

// A register worker runs a share of the load generator's UEs: it starts
// them at its share of the rate, each on a socket of its own bound to the
// worker's loopback address, and reports on w as JSON lines (workerLine):
// progress every progressEvery, then one line with every latency and
// failure once all its UEs have finished registering. Then it sends the
// UEs' NAT keepalives until ctx ends. The runner (register.go) starts
// workers as child processes (a process's file limit bounds its sockets)
// or, for tests, as goroutines.

// WorkerSpec is one worker's share, as the runner passes it.
type WorkerSpec struct {
	First, Count int     // subscriber indexes [First, First+Count)
	Rate         float64 // UEs started per second
	Bind         string  // local address of the UEs' sockets
	SIP, ESP     string  // the P-CSCF
	Domain       string
	Prefix, Seed string
	Expires      int
	Keepalive    time.Duration
	// Reregister, if set, is how often each UE re-registers while held
	// (a new AKA run and a new SA set through the current one).
	Reregister time.Duration
	// CPUProfile, if set, is a file the worker writes its CPU profile to,
	// from its start until it stops.
	CPUProfile string `json:",omitempty"`
	// Procs, if set, is the worker process's GOMAXPROCS (a worker run as
	// a goroutine leaves it alone: it is the process's).
	Procs int `json:",omitempty"`
}

// workerLine is one line a worker writes.
type workerLine struct {
	// Progress.
	Started    int `json:"started,omitempty"`
	Registered int `json:"registered,omitempty"`
	Failed     int `json:"failed,omitempty"`
	// The final report (Done set).
	Done      bool           `json:"done,omitempty"`
	LatencyUS []int64        `json:"latency_us,omitempty"`
	Causes    map[string]int `json:"causes,omitempty"`
	ShedWaits int            `json:"shed_waits,omitempty"` // 503s with Retry-After waited out
	// For the time series (register_series.go): when the worker began
	// (Unix µs), and when each registration in LatencyUS ended and each
	// failure happened, in ms since then.
	BeginUS int64   `json:"begin_unix_us,omitempty"`
	EndMS   []int64 `json:"end_ms,omitempty"`
	FailMS  []int64 `json:"fail_ms,omitempty"`
	// The hold's report, written as the worker stops (Held set).
	Held         bool           `json:"held,omitempty"`
	Reregistered int            `json:"reregistered,omitempty"`
	ReregFailed  map[string]int `json:"rereg_failed,omitempty"`
}

const progressEvery = 250 * time.Millisecond

// RunRegisterWorker runs the UEs of spec, writing its lines to w, until ctx
// ends.
func RunRegisterWorker(ctx context.Context, spec WorkerSpec, w io.Writer) error {
	if spec.Procs > 0 {
		runtime.GOMAXPROCS(spec.Procs)
	}
	if spec.CPUProfile != "" {
		f, err := os.Create(spec.CPUProfile)
		if err != nil {
			return fmt.Errorf("bench: worker CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: worker CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
		// With the profile, what getrusage says the worker cost (the
		// profile's samples miss some of it), on stderr beside the runner's.
		defer func() {
			fmt.Fprintf(os.Stderr, "bench: worker of %d UEs: %.3f s CPU, %.3f ms per UE; profile in %s\n",
				spec.Count, processCPU().Seconds(), float64(processCPU())/float64(time.Millisecond)/float64(max(spec.Count, 1)), spec.CPUProfile)
		}()
	}
	enc := json.NewEncoder(w)
	var encMu sync.Mutex
	write := func(l workerLine) {
		encMu.Lock()
		defer encMu.Unlock()
		enc.Encode(l)
	}
	bind, err := netip.ParseAddr(spec.Bind)
	if err != nil {
		return fmt.Errorf("bench: worker bind address %q: %w", spec.Bind, err)
	}
	sipTo, err1 := netip.ParseAddrPort(spec.SIP)
	espTo, err2 := netip.ParseAddrPort(spec.ESP)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("bench: worker P-CSCF address: %w", err)
	}
	ues := make([]*regUE, spec.Count)
	defer func() {
		for _, u := range ues {
			if u != nil && u.conn != nil {
				u.conn.Close()
			}
		}
	}()
	var started, registered, failed atomic.Int64
	lat := make([]int64, spec.Count)
	causes := make([]string, spec.Count)
	ends := make([]time.Duration, spec.Count) // since begin, for the time series
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// When ctx ends the UEs' sockets close, so that a registration in
	// progress returns at once instead of running out its timers.
	var connsMu sync.Mutex
	var conns []*net.UDPConn // guarded by connsMu
	stopped := false         // guarded by connsMu
	defer context.AfterFunc(ctx, func() {
		connsMu.Lock()
		defer connsMu.Unlock()
		stopped = true
		for _, c := range conns {
			c.Close()
		}
	})()

	// Progress, until every UE has finished.
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				write(workerLine{Started: int(started.Load()), Registered: int(registered.Load()), Failed: int(failed.Load())})
				if int(registered.Load()+failed.Load()) == spec.Count {
					return
				}
			}
		}
	}()

	// Registrations run on goroutines that take the next UE when their
	// last is done, and a new one starts only when none is free: a
	// registration grows its goroutine's stack (crypto, SIP, the netpoller)
	// and one fresh goroutine per UE paid for that growth every time.
	jobs := make(chan func())
	run := func(job func()) {
		select {
		case jobs <- job:
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				job()
				for job := range jobs {
					job()
				}
			}()
		}
	}
	begin := time.Now()
	for i := range spec.Count {
		due := begin.Add(time.Duration(float64(i) / spec.Rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				close(jobs)
				wg.Wait()
				return ctx.Err()
			case <-t.C:
			}
		}
		sub := BenchSubscriber(spec.Prefix, spec.Domain, spec.Seed, spec.First+i)
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, 0)))
		if err != nil {
			// Out of sockets or ports: every UE from here fails alike.
			causes[i], ends[i] = "socket", time.Since(begin)
			failed.Add(1)
			continue
		}
		conn.SetReadBuffer(64 << 10)
		connsMu.Lock()
		if stopped {
			conn.Close() // its registration fails at once, as the others
		}
		conns = append(conns, conn)
		connsMu.Unlock()
		usim, err := akakeys.NewUSIM(sub.K, sub.OPc, akakeys.USIMConfig{})
		if err != nil {
			conn.Close()
			causes[i], ends[i] = "usim", time.Since(begin)
			failed.Add(1)
			continue
		}
		u := &regUE{sub: sub, domain: spec.Domain, usim: usim, conn: rawudp.New(conn), sipTo: sipTo, espTo: espTo}
		ues[i] = u
		started.Add(1)
		run(func() {
			t0 := time.Now()
			err := u.register(spec.Expires)
			ends[i] = time.Since(begin)
			if err != nil {
				var f *regFailure
				if errors.As(err, &f) {
					causes[i] = f.cause
				} else {
					causes[i] = "other"
				}
				failed.Add(1)
				return
			}
			lat[i] = time.Since(t0).Microseconds()
			registered.Add(1)
		})
	}
	close(jobs)
	wg.Wait()
	cancelProg := ctx.Err()
	<-progDone
	if cancelProg != nil {
		return cancelProg
	}
	final := workerLine{Done: true, Started: int(started.Load()), Registered: int(registered.Load()), Failed: int(failed.Load()), Causes: map[string]int{},
		BeginUS: begin.UnixMicro()}
	for _, u := range ues {
		if u != nil {
			final.ShedWaits += u.shedWaits
		}
	}
	for i := range spec.Count {
		if causes[i] != "" {
			final.Causes[causes[i]]++
			final.FailMS = append(final.FailMS, ends[i].Milliseconds())
		} else {
			final.LatencyUS = append(final.LatencyUS, lat[i])
			final.EndMS = append(final.EndMS, ends[i].Milliseconds())
		}
	}
	write(final)

	// Hold: NAT keepalives from every registered UE, spread over the
	// interval, and re-registrations if asked for, until the runner
	// stops us; then the hold's report.
	var live []*regUE
	for i, u := range ues {
		if u != nil && causes[i] == "" {
			live = append(live, u)
		}
	}
	h := &holder{live: live, spec: spec, failed: map[string]int{}}
	h.run(ctx)
	write(workerLine{Held: true, Reregistered: int(h.rereg.Load()), ReregFailed: h.failedCopy()})
	return nil
}

// holder keeps a worker's registered UEs alive: keepalives and periodic
// re-registration.
type holder struct {
	live  []*regUE
	spec  WorkerSpec
	rereg atomic.Int64
	busy  sync.Map // *regUE -> struct{}: a re-registration is running
	wg    sync.WaitGroup
	mu    sync.Mutex
	// failed counts failed re-registrations by cause; guarded by mu.
	failed map[string]int
}

// tick is how often run wakes: as often as the UEs' sends fall due
// (interval / UEs), at most every holdTickMin and at least every second.
// A tick sends the messages that fell due since the last one: a few, as
// UEs spread over time would (4 keepalives a tick for 16,000 UEs at 20 s),
// not a burst per second. The floor is there because each wakeup costs
// the machine a context switch, and the load generator shares it with the
// P-CSCF it measures: at a millisecond, six workers holding 100,000 UEs
// took about 12% of the machine during a stream through the P-CSCF.
func (h *holder) tick() time.Duration {
	n := time.Duration(len(h.live))
	d := time.Second
	for _, every := range []time.Duration{h.spec.Keepalive, h.spec.Reregister} {
		if every > 0 {
			d = min(d, every/n)
		}
	}
	return max(d, holdTickMin)
}

// holdTickMin is the shortest tick of a worker's hold (holder.tick).
const holdTickMin = 5 * time.Millisecond

func (h *holder) failedCopy() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.failed)
}

// run sends, every tick, the keepalives and re-registrations the
// intervals owe since the last one, round robin over the UEs.
func (h *holder) run(ctx context.Context) {
	defer h.wg.Wait()
	if len(h.live) == 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(h.tick())
	defer t.Stop()
	start := time.Now()
	var kaSent, reSent int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		el := time.Since(start)
		n := int64(len(h.live))
		if h.spec.Keepalive > 0 {
			for owed := int64(el * time.Duration(n) / h.spec.Keepalive); kaSent < owed; kaSent++ {
				h.live[kaSent%n].keepalive()
			}
		}
		if h.spec.Reregister > 0 {
			for owed := int64(el * time.Duration(n) / h.spec.Reregister); reSent < owed; reSent++ {
				u := h.live[reSent%n]
				if _, running := h.busy.LoadOrStore(u, struct{}{}); running {
					continue
				}
				h.wg.Add(1)
				go func() {
					defer h.wg.Done()
					defer h.busy.Delete(u)
					if err := u.reregister(h.spec.Expires); err != nil {
						if ctx.Err() != nil {
							return // cut short by the end of the hold (its sockets closed), not failed
						}
						cause := "other"
						var f *regFailure
						if errors.As(err, &f) {
							cause = f.cause
						}
						h.mu.Lock()
						h.failed[cause]++
						h.mu.Unlock()
						return
					}
					h.rereg.Add(1)
				}()
			}
		}
	}
}

// readWorker reads a worker's lines, calling onLine for each, until EOF.
func readWorker(r io.Reader, onLine func(workerLine)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var l workerLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("bench: worker wrote %q: %w", truncate(sc.Text(), 80), err)
		}
		onLine(l)
	}
	return sc.Err()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// workerProcs is a worker process's GOMAXPROCS. A worker waits on its
// UEs' sockets far more than it computes: with one P, a packet that
// readies a UE runs it on the thread that polled it, where with more the
// scheduler wakes and spins other threads for each one, which cost the
// generator more CPU than the UEs' work.
const workerProcs = 1
