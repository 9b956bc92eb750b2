package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/imsec/imsec/bench"
	"github.com/imsec/imsec/bench/chart"
)

const benchRegisterSynopsis = `bench register --ues N [--rate R] [--hold D] [--pcscf ADDR --pcscf-esp ADDR [--pcscf-pid PID]] [--json]

Loads a P-CSCF with N UEs, each doing the whole registration a real UE does:
the unprotected REGISTER with sec-agree, AKA with its own USIM (Milenage,
SQN), its own four SAs and NAT-style source port, DHCP inside the tunnel,
the protected REGISTER, then NAT keepalives (and, with --reregister,
re-registrations with new SAs) while held. The UEs are built
without a network stack each (inner IPv4/UDP made in place); they run in
worker processes of at most --per-worker UEs (one socket each: the file
limit bounds a process), started at --rate per second in all.

Without --pcscf, an in-process P-CSCF and HSS on loopback serve them, with
the flood limits off (one host plays every UE); the HSS holds the range in
memory, or reads it from --db (made with 'imsec sub gen' and 'imsec sub
import'). They are measured: CPU per
registration over the registration phase, RSS per UE above idle at the end
of the hold. With --pcscf, subscribers must exist in its HSS with the keys
'imsec sub gen' derives for the same --prefix, --domain and --seed; give
--pcscf-pid to measure that process.

A progress line runs on stderr; the result is a table, or with --json one
object: ues, registered, failed (cause -> count: timeout-401, timeout-dhcp,
timeout-200, 401-loop, a SIP status code, usim, socket), reg_per_s, p50_ms,
p95_ms, p99_ms, max_ms, pcscf_cpu_ms_per_reg, pcscf_rss_kib_per_ue, ...,
and series: per second of the registration phase (wider steps past 600 s,
series_step_s), the registrations and failures that ended in it and their
latency percentiles. --svg draws that series.

On Linux the result also says how busy the whole machine was during the
registrations (machine_busy_cores: everyone's CPU, in cores) and how much
of its time the hypervisor gave to others (machine_steal_pct). Runs of the
same build on a shared machine can differ by more than a change under
test: compare runs made back to back, and look at these two first. Each
step of the series has them too: a run's average hides a saturated minute
behind a quiet tail of UEs waiting out their Retry-After.

With the in-process P-CSCF: pcscf_shed_by counts its overload refusals by
the signal that made them (in-flight, dhcp, socket-wait, ceiling), and
pcscf_socket_drops the datagrams the kernel dropped at its sockets (sip,
esp, media-esp; Linux) before the end of the hold. Over the registrations
it also gives pcscf_alloc_kib_per_reg, the heap allocated per
registration, and pcscf_gc_cpu_pct, the collector's share of its CPU:
unlike CPU per registration, a busy machine barely moves them.`

// memProfileRate is the heap profile's sampling interval with --memprofile.
const memProfileRate = 4096

func runBenchRegister(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench register", benchRegisterSynopsis, stdout)
	ues := fs.Int("ues", 0, "how many UEs (required)")
	rate := fs.Float64("rate", 1000, "UEs started per second, in all")
	hold := fs.Duration("hold", 0, "how long to hold the UEs registered after the last one finished (keepalives flow)")
	keepalive := fs.Duration("keepalive", 20*time.Second, "each UE's NAT keepalive interval while held (0: none)")
	rereg := fs.Duration("reregister", 0, "while held, each UE re-registers this often: a new AKA run and a new SA set through the current one (0: never)")
	stream := fs.Duration("stream", 0, "once all are registered, one more UE (subscriber --first + --ues: the range needs it) streams MTU-sized ICMP echoes through its tunnel to the P-CSCF for this long, before the hold: one UE's tunnel throughput with the others held (0: no stream)")
	expires := fs.Int("expires", 600, "registration lifetime the UEs ask for, seconds")
	pcscf := fs.String("pcscf", "", "ADDR:PORT of an external P-CSCF's unprotected SIP (default: an in-process P-CSCF and HSS)")
	pcscfESP := fs.String("pcscf-esp", "", "ADDR:PORT of the external P-CSCF's ESP-in-UDP")
	pcscfPID := fs.Int("pcscf-pid", 0, "the external P-CSCF's process ID, to measure its CPU and RSS (Linux)")
	domain := fs.String("domain", "bench.example", "the subscribers' domain")
	prefix := fs.String("prefix", "ue", "subscriber user names: PREFIX000000, PREFIX000001, ...")
	seed := fs.String("seed", "", "the key derivation's seed (as 'imsec sub gen --seed')")
	first := fs.Int("first", 1, "number of the first subscriber of the range (as 'imsec sub gen --start')")
	perWorker := fs.Int("per-worker", 16000, "most UEs per worker process")
	db := fs.String("db", "", "the in-process HSS's subscriber database (SQLite FILE or postgres:// URL) holding the range, e.g. from 'imsec sub gen | imsec sub import' (default: in memory)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of this process (the in-process P-CSCF and HSS; workers are other processes) to FILE, for go tool pprof")
	workerProfile := fs.String("worker-cpuprofile", "", "write each worker process's CPU profile (the load generator's UEs) to FILE.0, FILE.1, ...")
	mutexprofile := fs.String("mutexprofile", "", "write a mutex contention profile of this process (where the in-process P-CSCF's handlers waited on locks) to FILE at the end, for go tool pprof")
	memprofile := fs.String("memprofile", "", "write a heap profile of this process at the end of the hold (the in-process P-CSCF's memory per UE) to FILE")
	svgPath := fs.String("svg", "", "also draw registrations/s and latency percentiles (p50, p95, p99) per second of the registration phase to this SVG `FILE`")
	worker := fs.String("worker", "", "internal: run one worker with this JSON spec, lines on stdout")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *worker != "" {
		var spec bench.WorkerSpec
		if err := json.Unmarshal([]byte(*worker), &spec); err != nil {
			return usageErrorf("--worker: %v", err)
		}
		// The runner holds our stdin open and never writes: EOF means it
		// is gone (even killed), and the worker must not run on alone.
		ctx, orphaned := context.WithCancel(ctx)
		defer orphaned()
		go func() {
			io.Copy(io.Discard, os.Stdin)
			orphaned()
		}() // ends with the process: a read on stdin cannot be interrupted
		err := bench.RunRegisterWorker(ctx, spec, stdout)
		if ctx.Err() != nil {
			return nil // stopped by the runner, or orphaned
		}
		return err
	}
	if *ues <= 0 {
		return usageErrorf("--ues is required: how many UEs to register")
	}
	if *rate <= 0 || *keepalive < 0 || *hold < 0 || *rereg < 0 || *stream < 0 || *expires <= 0 || *perWorker <= 0 || *first < 0 {
		return usageErrorf("--rate, --expires and --per-worker must be positive; --hold, --keepalive, --stream and --first not negative")
	}
	ka := *keepalive
	if ka == 0 {
		ka = -1 // none: RegisterConfig's zero is the default interval
	}
	cfg := bench.RegisterConfig{UEs: *ues, Rate: *rate, Hold: *hold, Keepalive: ka, Reregister: *rereg, Stream: *stream, Expires: *expires,
		Domain: *domain, Prefix: *prefix, Seed: *seed, First: *first, PerWorker: *perWorker, PCSCFPID: *pcscfPID, WorkerCPUProfile: *workerProfile}
	if (*pcscf == "") != (*pcscfESP == "") {
		return usageErrorf("--pcscf and --pcscf-esp go together")
	}
	if *pcscf != "" {
		var err error
		if cfg.SIP, err = addrPortArg("pcscf", *pcscf); err != nil {
			return err
		}
		if cfg.ESP, err = addrPortArg("pcscf-esp", *pcscfESP); err != nil {
			return err
		}
	} else if *pcscfPID != 0 {
		return usageErrorf("--pcscf-pid measures an external P-CSCF: give --pcscf too")
	}
	if *db != "" {
		if *pcscf != "" {
			return usageErrorf("--db is the in-process HSS's: an external P-CSCF has its own")
		}
		store, err := openServedStore(ctx, *db)
		if err != nil {
			return err
		}
		defer store.Close()
		cfg.Store = store
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.Spawn = func(ctx context.Context, spec bench.WorkerSpec) (io.Reader, func() error, error) {
		return spawnRegisterWorker(ctx, exe, spec, stderr)
	}
	tty := false
	if f, ok := stderr.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	// Workers' stderr and the progress line share stderr: one writer at a
	// time.
	stderr = &lockedWriter{w: stderr}

	last := time.Time{}
	cfg.Progress = func(p bench.RegisterProgress) {
		line := fmt.Sprintf("%d/%d registered, %d failed, %d started, %.0f/s, %.1f s", p.Registered, p.UEs, p.Failed, p.Started,
			float64(p.Registered)/max(p.Elapsed.Seconds(), 1e-9), p.Elapsed.Seconds())
		if tty {
			fmt.Fprintf(stderr, "\r\x1b[K%s", line)
		} else if time.Since(last) >= 2*time.Second {
			fmt.Fprintln(stderr, line)
			last = time.Now()
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *mutexprofile != "" {
		f, err := os.Create(*mutexprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		// Every contention event: a lock convoy is what is looked for, and
		// sampling one in N would hide where short waits pile up.
		runtime.SetMutexProfileFraction(1)
		defer func() {
			if err := pprof.Lookup("mutex").WriteTo(f, 0); err != nil {
				fmt.Fprintf(stderr, "imsec bench register: %v\n", err)
			}
			runtime.SetMutexProfileFraction(0)
		}()
	}
	if *memprofile != "" {
		// Sample every 4 KiB allocated, not every 512 KiB: a UE's state
		// is a few KiB of small objects, which the default rate would
		// attribute by chance.
		runtime.MemProfileRate = memProfileRate
		cfg.HoldEnd = func() {
			f, err := os.Create(*memprofile)
			if err != nil {
				fmt.Fprintf(stderr, "imsec bench register: %v\n", err)
				return
			}
			defer f.Close()
			runtime.GC()
			if err := pprof.WriteHeapProfile(f); err != nil {
				fmt.Fprintf(stderr, "imsec bench register: %v\n", err)
			}
		}
	}
	svg, err := newSVGOutput(*svgPath)
	if err != nil {
		return err
	}
	res, err := bench.RunRegister(ctx, cfg)
	if tty {
		fmt.Fprint(stderr, "\r\x1b[K")
	}
	if err != nil {
		return svg.finish(err)
	}
	if svg != nil {
		run := chart.RegisterRun{Result: res}
		run.Measured, run.Source = runSource("bench register", args)
		if err := svg.finish(chart.RegisterSVG(&svg.buf, run)); err != nil {
			return err
		}
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	return printRegisterResult(stdout, res, cfg)
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// spawnRegisterWorker starts `imsec bench register --worker SPEC` and
// returns its stdout and a stop that interrupts it and waits.
func spawnRegisterWorker(ctx context.Context, exe string, spec bench.WorkerSpec, stderr io.Writer) (io.Reader, func() error, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(exe, "bench", "register", "--worker", string(b))
	cmd.Stderr = stderr
	// A pipe of our own rather than StdoutPipe: Wait (below, at once)
	// would close StdoutPipe's before the runner has read the worker's
	// last lines; ours ends with EOF when the worker has written them.
	out, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdout = w
	// The worker's stdin: we never write it, and the kernel closes our end
	// when this process ends, however it ends, which tells the worker to stop.
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		out.Close()
		w.Close()
		return nil, nil, err
	}
	cmd.Stdin = stdinR
	err = cmd.Start()
	w.Close()
	stdinR.Close()
	if err != nil {
		out.Close()
		stdinW.Close()
		return nil, nil, fmt.Errorf("bench register: starting a worker: %w", err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		done <- cmd.Wait()
		stdinW.Close()
		close(exited)
	}()
	// One SIGINT: a second one could reach the worker after it has
	// restored the default action on its way out, and kill it.
	var once sync.Once
	interrupt := func() { once.Do(func() { cmd.Process.Signal(os.Interrupt) }) }
	stop := func() error {
		interrupt()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("bench register: a worker did not stop on SIGINT: killed")
		}
	}
	go func() {
		select {
		case <-ctx.Done():
			interrupt()
		case <-exited:
		}
	}()
	return closeAtEOF{out}, stop, nil
}

// closeAtEOF closes its file once a read has reached the end: the reader of
// a worker's lines owns the pipe to the last byte.
type closeAtEOF struct{ f *os.File }

func (c closeAtEOF) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	if err != nil {
		c.f.Close()
	}
	return n, err
}

func printRegisterResult(w io.Writer, r bench.RegisterResult, cfg bench.RegisterConfig) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	where := "in-process P-CSCF and HSS on loopback"
	if cfg.SIP.IsValid() {
		where = "P-CSCF at " + cfg.SIP.String()
	}
	fmt.Fprintf(tw, "P-CSCF\t%s\n", where)
	fmt.Fprintf(tw, "UEs\t%d in %d worker process(es), offered %.0f/s\n", r.UEs, r.Workers, cfg.Rate)
	fmt.Fprintf(tw, "registered\t%d in %.2f s: %.0f registrations/s\n", r.Registered, r.Seconds, r.RegPerS)
	failed := "none"
	if len(r.Failed) > 0 {
		var parts []string
		for c, n := range r.Failed {
			parts = append(parts, fmt.Sprintf("%s %d", c, n))
		}
		sort.Strings(parts)
		failed = strings.Join(parts, ", ")
	}
	fmt.Fprintf(tw, "failed\t%s\n", failed)
	fmt.Fprintf(tw, "latency\tp50 %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms\n", r.P50ms, r.P95ms, r.P99ms, r.MaxMs)
	if r.PCSCFCPUMsPerReg != nil {
		fmt.Fprintf(tw, "P-CSCF CPU\t%.3f ms per registration\n", *r.PCSCFCPUMsPerReg)
	}
	if r.PCSCFAllocKiBPerReg != nil && r.PCSCFGCCPUPct != nil {
		fmt.Fprintf(tw, "P-CSCF heap\t%.1f KiB allocated per registration, collector %.1f%% of its CPU\n", *r.PCSCFAllocKiBPerReg, *r.PCSCFGCCPUPct)
	}
	if r.MachineBusyCores != nil {
		fmt.Fprintf(tw, "machine\t%.2f cores busy during the registrations (everyone's), %.1f%% stolen by the hypervisor\n",
			*r.MachineBusyCores, *r.MachineStealPct)
	}
	if r.PCSCFRSSKiBPerUE != nil {
		fmt.Fprintf(tw, "P-CSCF RSS\t%.0f KiB, %.2f KiB per UE above idle", *r.PCSCFRSSKiB, *r.PCSCFRSSKiBPerUE)
		if r.PCSCFHeapKiBPerUE != nil {
			fmt.Fprintf(tw, " (live heap %.2f KiB per UE)", *r.PCSCFHeapKiBPerUE)
		}
		fmt.Fprintln(tw)
	}
	if len(r.PCSCFMemKiBPerUE) > 0 {
		classes := slices.SortedFunc(maps.Keys(r.PCSCFMemKiBPerUE), func(a, b string) int {
			return cmp.Compare(r.PCSCFMemKiBPerUE[b], r.PCSCFMemKiBPerUE[a])
		})
		var parts []string
		for _, c := range classes {
			parts = append(parts, fmt.Sprintf("%s %.2f", c, r.PCSCFMemKiBPerUE[c]))
		}
		fmt.Fprintf(tw, "P-CSCF memory\tKiB per UE by Go runtime class: %s\n", strings.Join(parts, ", "))
	}
	if r.Stream != nil {
		fmt.Fprintf(tw, "stream\t%.0f Mbit/s, %.0f packets/s of %d-byte echoes through one UE's tunnel (%d sent, %d lost; %d collections, %.2f s of collector CPU)\n",
			r.Stream.Mbps, r.Stream.PPS, bench.StreamPacket, r.Stream.Sent, r.Stream.Lost, r.Stream.GCCycles, r.Stream.GCCPUSeconds)
	}
	if r.StreamError != "" {
		fmt.Fprintf(tw, "stream\tnot run: %s\n", r.StreamError)
	}
	if r.ShedWaits > 0 || r.PCSCFShed > 0 {
		fmt.Fprintf(tw, "overload	%d first REGISTERs shed by the P-CSCF (503, Retry-After); the UEs waited %d of them out and sent again\n", r.PCSCFShed, r.ShedWaits)
	}
	if d := r.PCSCFSocketDrops; d != nil {
		fmt.Fprintf(tw, "P-CSCF sockets\t%d datagrams dropped by the kernel, buffers full (SIP %d, ESP %d, media ESP %d)\n", d.SIP+d.ESP+d.MediaESP, d.SIP, d.ESP, d.MediaESP)
	}
	if b := r.PCSCFShedBy; b != nil {
		fmt.Fprintf(tw, "shed by\t%d REGISTERs in flight, %d DHCP backlog, %d socket wait, %d rate ceiling\n", b.InFlight, b.DHCP, b.SocketWait, b.Ceiling)
	}
	if r.DHCPDropped > 0 {
		fmt.Fprintf(tw, "P-CSCF DHCP\t%d requests dropped on a full queue (retransmitted by the UEs)\n", r.DHCPDropped)
	}
	if r.KeepalivesRx > 0 {
		fmt.Fprintf(tw, "keepalives\t%d received by the P-CSCF during the hold\n", r.KeepalivesRx)
	}
	if r.PCSCFHoldCores != nil {
		fmt.Fprintf(tw, "P-CSCF CPU held\t%.1f%% of a core while holding the UEs", 100**r.PCSCFHoldCores)
		if r.PCSCFSteadyCores != nil {
			fmt.Fprintf(tw, "; %.1f%% once their registrations' transactions had ended", 100**r.PCSCFSteadyCores)
		}
		fmt.Fprintln(tw)
	}
	if r.Reregistered > 0 || len(r.ReregFailed) > 0 {
		fmt.Fprintf(tw, "re-registrations\t%d during the hold, failed %v\n", r.Reregistered, r.ReregFailed)
	}
	if r.Note != "" {
		fmt.Fprintf(tw, "note\t%s\n", r.Note)
	}
	return tw.Flush()
}
