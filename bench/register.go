package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/internal/loopback"
	"github.com/imsec/imsec/sip"
)

// RunRegister (`imsec bench register`) loads a P-CSCF with registrations:
// UEs (register_ue.go) run by workers (register_worker.go), started at a
// fixed rate, each doing what a real UE does, then held registered with
// keepalives. Without RegisterConfig.SIP it starts an in-process P-CSCF
// and HSS on loopback (flood limits off: one host plays every UE) and
// measures them: CPU per registration, RSS per UE. With a P-CSCF named by
// address it measures that process when PCSCFPID names it.

// RegisterConfig configures RunRegister. Zero values are the documented
// defaults.
type RegisterConfig struct {
	UEs  int           // how many (required)
	Rate float64       // UEs started per second; default 1000
	Hold time.Duration // held registered after the last one finished; 0: none
	// Keepalive is each UE's NAT keepalive interval while held; default
	// 20 s (RFC 3948 §4). Negative: none (what holding the UEs costs
	// without them).
	Keepalive time.Duration
	// Reregister, if set, is how often each UE re-registers while held.
	Reregister time.Duration
	Expires    int // seconds asked for; default 600
	// Stream, if set, is how long one more UE (subscriber First+UEs)
	// streams through its tunnel once the others are registered, before
	// the hold (register_stream.go).
	Stream time.Duration

	// SIP and ESP: an external P-CSCF; zero SIP means in-process.
	SIP, ESP netip.AddrPort
	// Store, if set, is the in-process HSS's subscriber store (holding the
	// range, e.g. from 'imsec sub gen | imsec sub import'); nil: an
	// in-memory store filled with the range.
	Store    hss.Store
	PCSCFPID int // the external P-CSCF's process, for CPU and RSS (0: not measured)

	// The subscriber range: BenchSubscriber(Prefix, Domain, Seed, First+i).
	Domain, Prefix, Seed string
	First                int

	// PerWorker is the most UEs one worker runs (one socket each); default
	// 16000, under the usual file limit. Spawn starts a worker as a child
	// process and returns a reader of its lines and a stop function that
	// ends it and waits; nil runs workers as goroutines in this process
	// (then CPU and RSS include the load generator, and the result says so).
	PerWorker int
	Spawn     func(ctx context.Context, spec WorkerSpec) (lines io.Reader, stop func() error, err error)
	// WorkerCPUProfile, if set, makes each worker write its CPU profile
	// (its whole run) to this file name followed by "." and the worker's
	// number: PROFILE.0, PROFILE.1, ... Workers run as goroutines share
	// the process's one profile, so then it is ignored.
	WorkerCPUProfile string

	// Progress, if set, is called about every 250 ms while UEs register.
	Progress func(RegisterProgress)
	// HoldEnd, if set, is called at the end of the hold with the UEs still
	// registered (a heap profile of the in-process P-CSCF, say).
	HoldEnd func()
}

// RegisterProgress is the running count.
type RegisterProgress struct {
	UEs, Started, Registered, Failed int
	Elapsed                          time.Duration
}

// RegisterResult is what RunRegister measured. Latencies are from the
// first unprotected REGISTER to the protected REGISTER's 200.
type RegisterResult struct {
	UEs        int            `json:"ues"`
	Registered int            `json:"registered"`
	Failed     map[string]int `json:"failed"`
	Seconds    float64        `json:"seconds"` // first start to last finish
	RegPerS    float64        `json:"reg_per_s"`
	P50ms      float64        `json:"p50_ms"`
	P95ms      float64        `json:"p95_ms"`
	P99ms      float64        `json:"p99_ms"`
	MaxMs      float64        `json:"max_ms"`
	// P-CSCF figures (in-process, or PCSCFPID): CPU over the registration
	// phase per registration, and RSS growth over idle per registered UE
	// at the end of the hold (in-process: after debug.FreeOSMemory, as a
	// long-running process's scavenger would leave it). Null when not
	// measured.
	PCSCFCPUMsPerReg *float64 `json:"pcscf_cpu_ms_per_reg"`
	PCSCFRSSKiBPerUE *float64 `json:"pcscf_rss_kib_per_ue"`
	PCSCFRSSKiB      *float64 `json:"pcscf_rss_kib,omitempty"`
	// In-process only, over the registration phase: heap allocated per
	// registration (KiB), and the garbage collector's share of the
	// process's CPU (%). Steal and other load barely move them, so they
	// compare builds where the CPU figure is noise.
	PCSCFAllocKiBPerReg *float64 `json:"pcscf_alloc_kib_per_reg,omitempty"`
	PCSCFGCCPUPct       *float64 `json:"pcscf_gc_cpu_pct,omitempty"`
	// PCSCFHeapKiBPerUE is the live heap's growth per UE (in-process only,
	// after a GC): RSS without the garbage collector's slack.
	PCSCFHeapKiBPerUE *float64 `json:"pcscf_heap_kib_per_ue,omitempty"`
	// PCSCFMemKiBPerUE breaks the in-process P-CSCF's growth per UE down
	// by the Go runtime's memory classes (register_mem.go), read with RSS.
	PCSCFMemKiBPerUE map[string]float64 `json:"pcscf_mem_kib_per_ue,omitempty"`
	// PCSCFHoldCores is the P-CSCF's CPU over the hold, in cores: what
	// holding the UEs (their keepalives, the housekeeping) costs.
	PCSCFHoldCores *float64 `json:"pcscf_hold_cpu_cores,omitempty"`
	// PCSCFSteadyCores is the same over the hold's steady part, after the
	// registrations' transactions have ended (from 35 s into a hold of at
	// least 45 s): what holding the UEs costs for as long as they stay.
	PCSCFSteadyCores *float64 `json:"pcscf_steady_cpu_cores,omitempty"`
	// KeepalivesRx is what the P-CSCF counted during the hold (in-process).
	KeepalivesRx uint64 `json:"pcscf_keepalives_rx,omitempty"`
	// DHCPDropped is how many DHCP requests the in-process P-CSCF dropped
	// on its full queue (the UEs retransmit them).
	DHCPDropped uint64 `json:"pcscf_dhcp_dropped,omitempty"`
	// ShedWaits counts the 503s with Retry-After (the P-CSCF's overload
	// control) that the UEs waited out before sending their REGISTER
	// again; their latency includes the wait. PCSCFShed is what the
	// in-process P-CSCF counted.
	ShedWaits int    `json:"shed_waits,omitempty"`
	PCSCFShed uint64 `json:"pcscf_shed,omitempty"`
	// PCSCFShedBy is PCSCFShed by the signal that refused each.
	PCSCFShedBy *sip.ShedCounts `json:"pcscf_shed_by,omitempty"`
	// PCSCFSocketDrops are the datagrams the kernel dropped at the
	// in-process P-CSCF's sockets during the registration phase (Linux).
	PCSCFSocketDrops *sip.SocketDrops `json:"pcscf_socket_drops,omitempty"`
	// MachineBusyCores is the whole machine's CPU over the registration
	// phase, in cores (P-CSCF, load generator and anyone else), and
	// MachineStealPct the share of the machine's time its hypervisor gave
	// to others (register_machine.go). Linux only.
	MachineBusyCores *float64 `json:"machine_busy_cores,omitempty"`
	MachineStealPct  *float64 `json:"machine_steal_pct,omitempty"`
	// Re-registrations during the hold (RegisterConfig.Reregister).
	Reregistered int            `json:"reregistered,omitempty"`
	ReregFailed  map[string]int `json:"rereg_failed,omitempty"`
	Workers      int            `json:"workers"`
	// Stream is the extra UE's tunnel stream (RegisterConfig.Stream);
	// StreamError says why it did not run.
	Stream      *StreamResult `json:"stream,omitempty"`
	StreamError string        `json:"stream_error,omitempty"`
	// Shared says the load generator ran in the P-CSCF's process (workers
	// as goroutines): its CPU and RSS figures include the generator's.
	Shared bool   `json:"shared_process,omitempty"`
	Note   string `json:"note,omitempty"`
	// Series is the registration phase over time, in steps of SeriesStepS
	// seconds (register_series.go): registrations, failures and latency
	// percentiles of what ended in each step.
	SeriesStepS float64         `json:"series_step_s,omitempty"`
	Series      []RegisterPoint `json:"series,omitempty"`
}

func (c *RegisterConfig) fill() error {
	if c.UEs <= 0 {
		return errors.New("bench: register needs at least one UE")
	}
	if c.Rate == 0 {
		c.Rate = 1000
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		return fmt.Errorf("bench: rate %v: want a positive number of UEs per second", c.Rate)
	}
	if c.Keepalive == 0 {
		c.Keepalive = 20 * time.Second
	}
	if c.Expires == 0 {
		c.Expires = 600
	}
	if c.Domain == "" {
		c.Domain = "bench.example"
	}
	if c.Prefix == "" {
		c.Prefix = "ue"
	}
	if c.PerWorker == 0 {
		c.PerWorker = 16000
	}
	if c.SIP.IsValid() != c.ESP.IsValid() {
		return errors.New("bench: an external P-CSCF needs both its SIP and its ESP address")
	}
	return nil
}

// pcscfProbe measures the P-CSCF's process.
type pcscfProbe struct {
	cpu  func() time.Duration
	rss  func() (kib float64, ok bool)
	heap func() uint64 // live heap bytes after a GC; nil if not in-process
}

// steadyAfter is when the steady part of a hold starts (Timer J, 32 s,
// and a margin); steadyMin is the shortest steady part measured.
const (
	steadyAfter = 35 * time.Second
	steadyMin   = 10 * time.Second
)

// RunRegister runs the load and returns what it measured.
func RunRegister(ctx context.Context, cfg RegisterConfig) (RegisterResult, error) {
	if err := cfg.fill(); err != nil {
		return RegisterResult{}, err
	}
	res := RegisterResult{UEs: cfg.UEs, Failed: map[string]int{}, Shared: cfg.Spawn == nil}
	var probe *pcscfProbe
	var srv *sip.Server
	if !cfg.SIP.IsValid() {
		var err error
		if srv, err = startBenchPCSCF(ctx, cfg); err != nil {
			return res, err
		}
		defer srv.Close()
		cfg.SIP, cfg.ESP = srv.SIPAddr(), srv.ESPAddr()
		// RSS is read after a collection that hands freed pages back to
		// the OS, as a P-CSCF running for hours would have: the
		// registration burst's transactions (kept 32 s for retransmissions,
		// RFC 3261 Timer J) are garbage by the end of a long hold.
		probe = &pcscfProbe{cpu: processCPU, rss: func() (float64, bool) { debug.FreeOSMemory(); return selfRSSKiB() }, heap: liveHeap}
	} else if cfg.PCSCFPID > 0 {
		pid := cfg.PCSCFPID
		probe = &pcscfProbe{cpu: func() time.Duration { d, _ := pidCPU(pid); return d }, rss: func() (float64, bool) { return pidRSSKiB(pid) }}
	}

	var idleRSS float64
	var idleHeap uint64
	var idleMem map[string]float64
	if probe != nil {
		if probe.heap != nil {
			idleHeap = probe.heap()
		}
		idleRSS, _ = probe.rss()
		if srv != nil {
			idleMem = memBreakdown()
		}
	}

	var drops0 sip.SocketDrops
	if srv != nil {
		drops0 = srv.Stats().SocketDrops
	}

	nw := (cfg.UEs + cfg.PerWorker - 1) / cfg.PerWorker
	res.Workers = nw
	type wstate struct {
		started, registered, failed int
		final, held                 *workerLine
	}
	states := make([]wstate, nw)
	var mu sync.Mutex // guards states
	allDone := make(chan struct{})
	var doneOnce sync.Once
	var stops []func() error
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var readers sync.WaitGroup
	readErr := make(chan error, nw)

	start := time.Now()
	cpu0 := time.Duration(0)
	if probe != nil {
		cpu0 = probe.cpu()
	}
	var gc0, gc1 gcCounters
	if srv != nil {
		gc0 = readGCCounters()
	}
	machine0, machineOK := machineCPU()
	var machine []machineSample // every progressEvery, for the series
	if machineOK {
		machine = append(machine, machineSample{at: time.Since(start), t: machine0})
	}
	for w := range nw {
		spec := WorkerSpec{First: cfg.First + w*cfg.PerWorker, Count: min(cfg.PerWorker, cfg.UEs-w*cfg.PerWorker),
			Bind: loopback.Random().String(), SIP: cfg.SIP.String(), ESP: cfg.ESP.String(),
			Domain: cfg.Domain, Prefix: cfg.Prefix, Seed: cfg.Seed, Expires: cfg.Expires, Keepalive: cfg.Keepalive,
			Reregister: cfg.Reregister}
		spec.Rate = cfg.Rate * float64(spec.Count) / float64(cfg.UEs)
		if cfg.Spawn != nil {
			spec.Procs = workerProcs
		}
		if cfg.WorkerCPUProfile != "" && cfg.Spawn != nil {
			spec.CPUProfile = cfg.WorkerCPUProfile + "." + strconv.Itoa(w)
		}
		lines, stop, err := startWorker(wctx, cfg, spec)
		if err != nil {
			stopWorkers()
			for _, s := range stops {
				s()
			}
			return res, err
		}
		stops = append(stops, stop)
		readers.Add(1)
		go func() {
			defer readers.Done()
			err := readWorker(lines, func(l workerLine) {
				mu.Lock()
				defer mu.Unlock()
				st := &states[w]
				if l.Held {
					st.held = &l
					return
				}
				st.started, st.registered, st.failed = l.Started, l.Registered, l.Failed
				if l.Done {
					st.final = &l
					all := true
					for i := range states {
						all = all && states[i].final != nil
					}
					if all {
						doneOnce.Do(func() { close(allDone) })
					}
				}
			})
			if err != nil {
				readErr <- err
			}
		}()
	}
	stopAll := func() error {
		stopWorkers()
		var errs []error
		for _, s := range stops {
			errs = append(errs, s())
		}
		readers.Wait()
		return errors.Join(errs...)
	}

	// Registration phase, with progress.
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	var cpu1 time.Duration
phase:
	for {
		select {
		case <-ctx.Done():
			stopAll()
			return res, ctx.Err()
		case err := <-readErr:
			stopAll()
			return res, err
		case <-allDone:
			if probe != nil {
				cpu1 = probe.cpu()
			}
			if srv != nil {
				gc1 = readGCCounters()
			}
			if m, ok := machineCPU(); ok && machineOK {
				res.MachineBusyCores, res.MachineStealPct = machineFigures(machine0, m, time.Since(start).Seconds())
				machine = append(machine, machineSample{at: time.Since(start), t: m})
			}
			break phase
		case <-tick.C:
			if m, ok := machineCPU(); ok && machineOK {
				machine = append(machine, machineSample{at: time.Since(start), t: m})
			}
			if cfg.Progress != nil {
				p := RegisterProgress{UEs: cfg.UEs, Elapsed: time.Since(start)}
				mu.Lock()
				for _, s := range states {
					p.Started += s.started
					p.Registered += s.registered
					p.Failed += s.failed
				}
				mu.Unlock()
				cfg.Progress(p)
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	var lats []int64
	var ends []regEnd
	mu.Lock()
	for _, s := range states {
		res.Registered += s.final.Registered
		res.ShedWaits += s.final.ShedWaits
		for c, n := range s.final.Causes {
			res.Failed[c] += n
		}
		lats = append(lats, s.final.LatencyUS...)
		ends = append(ends, workerEnds(s.final, start)...)
	}
	mu.Unlock()
	res.SeriesStepS, res.Series = registerSeries(ends)
	machineSeries(res.Series, res.SeriesStepS, machine)
	if cfg.Progress != nil {
		cfg.Progress(RegisterProgress{UEs: cfg.UEs, Started: cfg.UEs, Registered: res.Registered, Failed: cfg.UEs - res.Registered, Elapsed: time.Since(start)})
	}
	slices.Sort(lats)
	pct := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		i := int(math.Ceil(p*float64(len(lats)))) - 1
		return float64(lats[max(0, min(i, len(lats)-1))]) / 1000
	}
	res.P50ms, res.P95ms, res.P99ms = pct(0.50), pct(0.95), pct(0.99)
	if len(lats) > 0 {
		res.MaxMs = float64(lats[len(lats)-1]) / 1000
	}
	if res.Seconds > 0 {
		res.RegPerS = float64(res.Registered) / res.Seconds
	}
	if probe != nil && res.Registered > 0 {
		v := float64(cpu1-cpu0) / float64(time.Millisecond) / float64(res.Registered)
		res.PCSCFCPUMsPerReg = &v
		if srv != nil {
			a := float64(gc1.allocBytes-gc0.allocBytes) / 1024 / float64(res.Registered)
			res.PCSCFAllocKiBPerReg = &a
			if cpu := (cpu1 - cpu0).Seconds(); cpu > 0 {
				g := 100 * (gc1.gcCPU - gc0.gcCPU) / cpu
				res.PCSCFGCCPUPct = &g
			}
		}
	}

	// The stream, with the others held.
	if cfg.Stream > 0 {
		if sr, err := runStream(ctx, cfg, cfg.First+cfg.UEs, cfg.Stream); err != nil {
			res.StreamError = err.Error()
		} else {
			res.Stream = &sr
		}
	}

	// Hold.
	var ka0 uint64
	if srv != nil {
		ka0 = srv.Pump().Counters().KeepalivesReceived
	}
	holdStart, holdCPU := time.Now(), time.Duration(0)
	if probe != nil {
		holdCPU = probe.cpu()
	}
	// The steady part of the hold starts when the registrations' last
	// transactions have ended (RFC 3261 Timer J, 32 s over UDP): from then
	// on the P-CSCF only holds the UEs.
	steadyAt, steadyCPU := time.Time{}, time.Duration(0)
	if cfg.Hold > 0 {
		t := time.NewTimer(cfg.Hold)
		var steady <-chan time.Time
		if probe != nil && cfg.Hold >= steadyAfter+steadyMin {
			st := time.NewTimer(steadyAfter)
			defer st.Stop()
			steady = st.C
		}
	hold:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				stopAll()
				return res, ctx.Err()
			case err := <-readErr:
				t.Stop()
				stopAll()
				return res, err
			case <-steady:
				steadyAt, steadyCPU = time.Now(), probe.cpu()
			case <-t.C:
				break hold
			}
		}
	}
	if srv != nil {
		res.KeepalivesRx = srv.Pump().Counters().KeepalivesReceived - ka0
		st := srv.Stats()
		res.DHCPDropped, res.PCSCFShed = st.DHCPDropped, st.Shed
		if st.Shed > 0 {
			res.PCSCFShedBy = &st.ShedBy
		}
		d := st.SocketDrops
		d.SIP, d.ESP, d.MediaESP = d.SIP-drops0.SIP, d.ESP-drops0.ESP, d.MediaESP-drops0.MediaESP
		if d != (sip.SocketDrops{}) {
			res.PCSCFSocketDrops = &d
		}
	}
	if probe != nil && cfg.Hold > 0 {
		v := float64(probe.cpu()-holdCPU) / float64(time.Since(holdStart))
		res.PCSCFHoldCores = &v
	}
	if !steadyAt.IsZero() {
		v := float64(probe.cpu()-steadyCPU) / float64(time.Since(steadyAt))
		res.PCSCFSteadyCores = &v
	}
	if cfg.HoldEnd != nil {
		cfg.HoldEnd()
	}
	if probe != nil && res.Registered > 0 {
		if rss, ok := probe.rss(); ok {
			per := (rss - idleRSS) / float64(res.Registered)
			res.PCSCFRSSKiBPerUE, res.PCSCFRSSKiB = &per, &rss
		}
		if idleMem != nil {
			res.PCSCFMemKiBPerUE = perUEKiB(idleMem, memBreakdown(), res.Registered)
		}
		if probe.heap != nil {
			h := (float64(probe.heap()) - float64(idleHeap)) / 1024 / float64(res.Registered)
			res.PCSCFHeapKiBPerUE = &h
		}
	}
	if res.Shared {
		res.Note = "the load generator ran in the P-CSCF's process: its CPU and RSS are included"
	}
	if err := stopAll(); err != nil && ctx.Err() == nil {
		return res, err
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range states {
		if s.held == nil {
			continue
		}
		res.Reregistered += s.held.Reregistered
		for c, n := range s.held.ReregFailed {
			if res.ReregFailed == nil {
				res.ReregFailed = map[string]int{}
			}
			res.ReregFailed[c] += n
		}
	}
	return res, nil
}

// startWorker starts one worker, as a child process (cfg.Spawn) or a
// goroutine.
func startWorker(ctx context.Context, cfg RegisterConfig, spec WorkerSpec) (io.Reader, func() error, error) {
	if cfg.Spawn != nil {
		return cfg.Spawn(ctx, spec)
	}
	pr, pw := io.Pipe()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		err := RunRegisterWorker(wctx, spec, pw)
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		pw.CloseWithError(err)
		done <- err
	}()
	return pr, func() error { cancel(); return <-done }, nil
}

// startBenchPCSCF starts the in-process P-CSCF with an in-memory HSS
// holding the subscriber range.
func startBenchPCSCF(ctx context.Context, cfg RegisterConfig) (*sip.Server, error) {
	store := hss.NewMemStore()
	var st hss.Store = store
	if cfg.Store != nil {
		st = cfg.Store
	} else {
		n := cfg.UEs
		if cfg.Stream > 0 {
			n++ // the stream's UE
		}
		for i := range n {
			if err := store.Add(ctx, BenchSubscriber(cfg.Prefix, cfg.Domain, cfg.Seed, cfg.First+i)); err != nil {
				return nil, err
			}
		}
	}
	h, err := hss.New(st, hss.Config{})
	if err != nil {
		return nil, err
	}
	pool := netip.MustParsePrefix("100.64.0.0/16")
	if cfg.UEs > 60000 {
		pool = netip.MustParsePrefix("100.64.0.0/12")
	}
	lo := netip.MustParseAddr("127.0.0.1")
	return sip.New(sip.ServerConfig{Domain: cfg.Domain, HSS: h, SIP: netip.AddrPortFrom(lo, 0), ESP: netip.AddrPortFrom(lo, 0),
		Pool: pool, Limits: sip.Limits{Off: true}, MaxExpires: time.Duration(max(cfg.Expires, 3600)) * time.Second,
		MaxTempSets: max(sip.DefaultMaxTempSets, cfg.UEs+1)})
}
