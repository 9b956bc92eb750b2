package pgstore

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/akakeys/hss/storetest"
	"github.com/imsec/imsec/internal/pgtest"
)

// childEnv, set to a database URL, makes the test binary an HSS process of
// TestHSSProcessesShareSQN (see TestMain) instead of running tests.
const childEnv = "PGSTORE_TEST_HSS_CHILD"

// hssChild is an HSS process: it opens the store, says "ready", waits for
// "go" on stdin, then draws n vectors for impi one after the other and
// prints each as "RAND AUTN" in hex. It returns the exit code.
func hssChild(dsn string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "hss child:", err); return 1 }
	n, err := strconv.Atoi(os.Getenv(childEnv + "_N"))
	if err != nil {
		return fail(err)
	}
	impi := os.Getenv(childEnv + "_IMPI")
	ctx := context.Background()
	s, err := Open(ctx, dsn, Options{MustExist: true})
	if err != nil {
		return fail(err)
	}
	defer s.Close()
	// Reserve 1: every vector is its own durable UpdateSQN, so the test
	// sees the store hand out SQNs across processes one by one (with
	// ranges each process would draw from a range of its own).
	h, err := hss.New(s, hss.Config{Reserve: 1})
	if err != nil {
		return fail(err)
	}
	fmt.Println("ready")
	if line, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil || line != "go\n" {
		return fail(fmt.Errorf("want go on stdin, got %q, %v", line, err))
	}
	w := bufio.NewWriter(os.Stdout)
	for range n {
		v, err := h.Vector(ctx, impi)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(w, "%x %x\n", v.RAND[:], v.AUTN[:])
	}
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	return 0
}

// usimSQN is what a USIM with alice's keys finds in a vector: the SQN
// under AUTN's AK, once MAC-A checks.
func usimSQN(t *testing.T, rand akakeys.RAND, autn akakeys.AUTN) akakeys.SQN {
	t.Helper()
	a := storetest.Alice()
	m := akakeys.NewMilenage(a.K, a.OPc)
	_, _, _, ak := m.F2345(rand)
	var sqn akakeys.SQN
	for i := range sqn {
		sqn[i] = autn[i] ^ ak[i]
	}
	var amf akakeys.AMF
	copy(amf[:], autn[6:8])
	macA, _ := m.F1(rand, sqn, amf)
	if subtle.ConstantTimeCompare(macA[:], autn[8:]) != 1 {
		t.Fatalf("AUTN %x: MAC-A does not verify", autn)
	}
	return sqn
}

// TestHSSProcessesShareSQN: two HSS processes and the test itself, each
// with a pool of its own on one database, draw vectors for one IMPI at
// once. A USIM finds every SQN once: no two vectors carry the same one;
// each instance's SQNs increase; and together they are SEQ 1, 2, 3, ...
// (Annex C: SEQ+1 per vector) without a gap.
func TestHSSProcessesShareSQN(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes")
	}
	srv := pgtest.Shared(t)
	dsn := srv.NewDatabase(t)
	s := open(t, dsn, Options{})
	ctx := context.Background()
	impi := storetest.Alice().IMPI
	if err := s.Add(ctx, storetest.Alice()); err != nil {
		t.Fatal(err)
	}
	const procs, each = 2, 150

	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines chan string // stdout, closed at EOF
		err   strings.Builder
	}
	children := make([]*child, procs)
	for i := range children {
		c := &child{cmd: exec.Command(os.Args[0], "-test.run=^$"), lines: make(chan string, each+1)}
		c.cmd.Env = append(os.Environ(), childEnv+"="+dsn, childEnv+"_N="+strconv.Itoa(each), childEnv+"_IMPI="+impi)
		c.cmd.Stderr = &c.err
		var err error
		if c.stdin, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		out, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.cmd.Process.Kill(); c.cmd.Wait() })
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				c.lines <- sc.Text()
			}
			close(c.lines)
		}()
		children[i] = c
	}
	timeout := time.After(2 * time.Minute)
	for i, c := range children {
		select {
		case l, ok := <-c.lines:
			if !ok || l != "ready" {
				t.Fatalf("child %d: %q instead of ready; stderr:\n%s", i, l, c.err.String())
			}
		case <-timeout:
			t.Fatalf("child %d not ready", i)
		}
	}

	// Go: the children, and an HSS of this process.
	for _, c := range children {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	h, err := hss.New(s, hss.Config{Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	var own []akakeys.Vector
	var ownErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		for range each {
			v, err := h.Vector(ctx, impi)
			if err != nil {
				ownErr = err
				return
			}
			own = append(own, v)
		}
	})

	// The SQN a USIM finds in each vector, per instance in the order drawn.
	sqns := make([][]uint64, procs+1)
	for i, c := range children {
	read:
		for {
			select {
			case l, ok := <-c.lines:
				if !ok {
					break read
				}
				f := strings.Fields(l)
				r, err1 := hex.DecodeString(f[0])
				a, err2 := hex.DecodeString(f[len(f)-1])
				if len(f) != 2 || err1 != nil || err2 != nil || len(r) != 16 || len(a) != 16 {
					t.Fatalf("child %d: bad line %q", i, l)
				}
				sqns[i] = append(sqns[i], usimSQN(t, akakeys.RAND(r), akakeys.AUTN(a)).Uint64())
			case <-timeout:
				t.Fatalf("child %d: no end of output", i)
			}
		}
		if err := c.cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v; stderr:\n%s", i, err, c.err.String())
		}
	}
	wg.Wait()
	if ownErr != nil {
		t.Fatal(ownErr)
	}
	for _, v := range own {
		sqns[procs] = append(sqns[procs], usimSQN(t, v.RAND, v.AUTN).Uint64())
	}

	scheme := h.Scheme()
	owner := map[uint64]int{} // SEQ -> instance
	for i, list := range sqns {
		if len(list) != each {
			t.Fatalf("instance %d drew %d vectors, want %d", i, len(list), each)
		}
		for j, sqn := range list {
			if j > 0 && sqn <= list[j-1] {
				t.Errorf("instance %d: SQN %x after %x, not increasing", i, sqn, list[j-1])
			}
			seq, _ := scheme.Split(akakeys.SQNFromUint64(sqn))
			if prev, dup := owner[seq]; dup {
				t.Errorf("SEQ %d issued twice: by instance %d and %d", seq, prev, i)
			}
			owner[seq] = i
		}
	}
	total := (procs + 1) * each
	switches := 0
	for seq := uint64(1); seq <= uint64(total); seq++ {
		i, ok := owner[seq]
		if !ok {
			t.Fatalf("SEQ %d never issued: the SEQs of %d vectors are not 1..%d", seq, total, total)
		}
		if seq > 1 && owner[seq-1] != i {
			switches++
		}
	}
	final, err := s.Get(ctx, impi)
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := scheme.Split(final.SQN); seq != uint64(total) {
		t.Fatalf("stored SEQ %d, want %d", seq, total)
	}
	// How much the instances interleaved: the test is only as strong as
	// this is large.
	t.Logf("%d vectors, SEQ passed between instances %d times", total, switches)
	if switches == 0 {
		t.Error("the instances did not draw vectors at the same time")
	}
}

// Vectors on PostgreSQL: one durable transaction (row lock, UPDATE, WAL
// flush on COMMIT) and Milenage per vector. The server is local, on a unix
// socket, with fsync on.
//
//	go test -run '^$' -bench VectorPostgres ./akakeys/hss/pgstore

func benchHSS(b *testing.B, subscribers int) (*hss.HSS, []string) {
	srv := pgtest.Shared(b)
	s := open(b, srv.NewDatabase(b), Options{MaxConns: 32})
	impis := make([]string, subscribers)
	for i := range impis {
		a := storetest.Alice()
		a.IMPI = fmt.Sprintf("user%d@ims.example", i)
		a.IMPUs = []string{"sip:" + a.IMPI}
		if err := s.Add(context.Background(), a); err != nil {
			b.Fatal(err)
		}
		impis[i] = a.IMPI
	}
	h, err := hss.New(s, hss.Config{})
	if err != nil {
		b.Fatal(err)
	}
	return h, impis
}

// BenchmarkVectorPostgres: one caller after the other.
func BenchmarkVectorPostgres(b *testing.B) {
	h, impis := benchHSS(b, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Vector(context.Background(), impis[0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVectorPostgresParallelOneIMPI: 16 callers for one IMPI, which
// queue on its row lock.
func BenchmarkVectorPostgresParallelOneIMPI(b *testing.B) {
	h, impis := benchHSS(b, 1)
	b.ReportAllocs()
	b.SetParallelism(16 / min(16, max(1, runtime.GOMAXPROCS(0))))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h.Vector(context.Background(), impis[0]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkVectorPostgresParallel: 16 callers, each for an IMPI of its own
// (many UEs registering at once): their commits share WAL flushes.
func BenchmarkVectorPostgresParallel(b *testing.B) {
	h, impis := benchHSS(b, 64)
	var next sync.Mutex
	i := 0
	b.ReportAllocs()
	b.SetParallelism(16 / min(16, max(1, runtime.GOMAXPROCS(0))))
	b.RunParallel(func(pb *testing.PB) {
		next.Lock()
		impi := impis[i%len(impis)]
		i++
		next.Unlock()
		for pb.Next() {
			if _, err := h.Vector(context.Background(), impi); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
