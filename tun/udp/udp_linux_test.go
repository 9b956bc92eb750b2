//go:build linux

package udp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// setOffload turns segmentation (gso) and receive offload (gro) off for a
// test; turning them on again is not supported.
func (u *Conn) setOffload(t *testing.T, gso, gro bool) {
	t.Helper()
	p := &u.plat
	if !gso {
		p.gso.Store(false)
	}
	if !gro && p.gro {
		p.rc.Control(func(fd uintptr) {
			if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0); err != nil {
				t.Fatal(err)
			}
		})
		p.gro, p.r.bufs = false, nil
	}
}

func offloads(t *testing.T) []struct{ gso, gro bool } {
	c := listen(t)
	gso, gro := c.Offload()
	t.Logf("kernel offloads: gso %v, gro %v", gso, gro)
	all := []struct{ gso, gro bool }{{false, false}}
	if gso {
		all = append(all, struct{ gso, gro bool }{true, false})
	}
	if gro {
		all = append(all, struct{ gso, gro bool }{false, true})
	}
	if gso && gro {
		all = append(all, struct{ gso, gro bool }{true, true})
	}
	return all
}

// TestBatchesAgainstModel sends random batches — runs of equal sizes, a
// shorter datagram ending a run, empty datagrams, several receivers
// interleaved, runs longer than the kernel's 64 segments — through
// WriteBatch and checks that each receiver reads exactly its datagrams, in
// order, through ReadBatch calls of random sizes: the slow obvious model is
// "one sendto and one recvfrom per datagram". Every combination of offloads
// the kernel has is tried.
func TestBatchesAgainstModel(t *testing.T) {
	for _, o := range offloads(t) {
		t.Run(fmt.Sprintf("gso=%v,gro=%v", o.gso, o.gro), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
			src := listen(t)
			src.setOffload(t, o.gso, o.gro)
			var dst [3]*Conn
			for i := range dst {
				dst[i] = listen(t)
				dst[i].setOffload(t, o.gso, o.gro)
			}
			seq := 0
			var want [3][][]byte
			for round := 0; round < 20; round++ {
				var batch []Message
				for len(batch) < 150 {
					to := rng.IntN(3)
					size := []int{0, 1, 100, 1400, 1400, 3000}[rng.IntN(6)]
					run := 1 + rng.IntN(80)
					for k := 0; k < run; k++ {
						n := size
						if k == run-1 && rng.IntN(3) == 0 && n > 10 {
							n -= 1 + rng.IntN(10) // a shorter tail
						}
						b := make([]byte, n)
						for j := range b {
							b[j] = byte(rng.Uint32())
						}
						if n >= 4 {
							binary.BigEndian.PutUint32(b, uint32(seq))
						}
						seq++
						batch = append(batch, Message{Buf: b, N: n, Addr: dst[to].LocalAddr()})
						want[to] = append(want[to], b)
					}
				}
				// Receivers read while the batch goes, so that no socket
				// buffer overflows even at the default net.core.rmem_max.
				errs := make(chan error, len(dst))
				for i := range dst {
					go func(c *Conn, want [][]byte, seed uint64) {
						errs <- expectAll(c, want, src.LocalAddr(), rand.New(rand.NewPCG(seed, 2)))
					}(dst[i], want[i], rng.Uint64())
					want[i] = nil
				}
				if n, err := src.WriteBatch(batch); n != len(batch) || err != nil {
					t.Fatalf("round %d: WriteBatch = %d of %d, %v", round, n, len(batch), err)
				}
				for range dst {
					if err := <-errs; err != nil {
						t.Fatalf("round %d: %v", round, err)
					}
				}
			}
		})
	}
}

func expectAll(c *Conn, want [][]byte, from netip.AddrPort, rng *rand.Rand) error {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	msgs := make([]Message, c.BatchSize())
	for i := range msgs {
		msgs[i].Buf = make([]byte, 4000)
	}
	got := 0
	for got < len(want) {
		k := 1 + rng.IntN(len(msgs))
		n, err := c.ReadBatch(msgs[:k])
		if err != nil {
			return fmt.Errorf("after %d of %d datagrams: %v", got, len(want), err)
		}
		for _, m := range msgs[:n] {
			if got == len(want) {
				return fmt.Errorf("more datagrams than sent")
			}
			if !bytes.Equal(m.Buf[:m.N], want[got]) || m.Addr != from {
				return fmt.Errorf("datagram %d: got %d bytes from %v, want %d bytes from %v", got, m.N, m.Addr, len(want[got]), from)
			}
			got++
		}
	}
	return nil
}

// TestPendingSegmentsNeedNoSyscall: a run read with fewer messages than it
// holds is handed out over several ReadBatch calls, all without waiting.
func TestPendingSegmentsNeedNoSyscall(t *testing.T) {
	a, b := listen(t), listen(t)
	gso, gro := a.Offload()
	if !gso || !gro {
		t.Skip("needs UDP_SEGMENT and UDP_GRO (Linux 5.0+)")
	}
	out := make([]Message, 40)
	for i := range out {
		p := []byte(fmt.Sprintf("segment %03d of a run of equal sizes", i))
		out[i] = Message{Buf: p, N: len(p), Addr: b.LocalAddr()}
	}
	if n, err := a.WriteBatch(out); n != len(out) || err != nil {
		t.Fatal(n, err)
	}
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	in := []Message{{Buf: make([]byte, 100)}, {Buf: make([]byte, 100)}, {Buf: make([]byte, 100)}}
	got := 0
	for got < len(out) {
		n, err := b.ReadBatch(in)
		if err != nil {
			t.Fatalf("after %d: %v", got, err)
		}
		for _, m := range in[:n] {
			if !bytes.Equal(m.Buf[:m.N], out[got].Buf) {
				t.Fatalf("%d: %q", got, m.Buf[:m.N])
			}
			got++
		}
		if got < len(out) && b.plat.r.next >= b.plat.r.m {
			// The whole run came in one receive: the rest must be pending.
			t.Fatalf("after %d of one run, nothing pending", got)
		}
	}
}

// TestTruncatedSegment: a caller buffer shorter than a datagram gets its
// first bytes, as recvfrom would give.
func TestTruncatedSegment(t *testing.T) {
	a, b := listen(t), listen(t)
	p := bytes.Repeat([]byte("x"), 500)
	if _, err := a.WriteBatch([]Message{{Buf: p, N: 500, Addr: b.LocalAddr()}}); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	in := []Message{{Buf: make([]byte, 100)}}
	n, err := b.ReadBatch(in)
	if n != 1 || err != nil || in[0].N != 100 {
		t.Fatalf("n %d err %v N %d", n, err, in[0].N)
	}
}

// TestNoAllocations: a batch round trip allocates nothing, with and
// without offloads, polled or quiet (STYLE: no allocation per packet).
func TestNoAllocations(t *testing.T) {
	for _, o := range offloads(t) {
		for _, quiet := range []bool{false, true} {
			if quiet && o.gso != o.gro {
				continue // quiet changes only the reader's wait
			}
			t.Run(fmt.Sprintf("gso=%v,gro=%v,quiet=%v", o.gso, o.gro, quiet), func(t *testing.T) {
				a, b := listen(t), listen(t)
				b.SetQuiet(quiet)
				a.setOffload(t, o.gso, o.gro)
				b.setOffload(t, o.gso, o.gro)
				out := make([]Message, 32)
				for i := range out {
					out[i] = Message{Buf: make([]byte, 1400), N: 1400, Addr: b.LocalAddr()}
				}
				out[31].N = 700
				allocs := roundTripAllocs(t, a, b, out)
				if allocs != 0 {
					t.Errorf("%v allocations per round trip of %d datagrams", allocs, len(out))
				}
			})
		}
	}
}

// TestRunLimit: two datagrams that together exceed one IP datagram are
// sent as two, not merged into a run the kernel would refuse.
func TestRunLimit(t *testing.T) {
	a, b := listen(t), listen(t)
	out := []Message{
		{Buf: make([]byte, 40000), N: 40000, Addr: b.LocalAddr()},
		{Buf: make([]byte, 40000), N: 40000, Addr: b.LocalAddr()},
	}
	n, err := a.WriteBatch(out)
	if n != 2 || err != nil {
		t.Fatalf("n %d err %v", n, err)
	}
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	in := []Message{{Buf: make([]byte, 65535)}, {Buf: make([]byte, 65535)}}
	for got := 0; got < 2; {
		k, err := b.ReadBatch(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range in[:k] {
			if m.N != 40000 {
				t.Fatalf("got %d bytes", m.N)
			}
		}
		got += k
	}
}

// TestDialNoAllocations: the connected path allocates nothing either.
func TestDialNoAllocations(t *testing.T) {
	b := listen(t)
	a, err := Dial(netip.MustParseAddrPort("127.0.0.1:0"), b.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	out := make([]Message, 16)
	for i := range out {
		out[i] = Message{Buf: make([]byte, 200), N: 100 + i, Addr: b.LocalAddr()}
	}
	allocs := roundTripAllocs(t, a, b, out)
	if allocs != 0 {
		t.Errorf("%v allocations per round trip", allocs)
	}
}

// roundTripAllocs is the heap allocations of sending out from a and reading
// every datagram back at b, per round trip.
func roundTripAllocs(t *testing.T, a, b *Conn, out []Message) float64 {
	t.Helper()
	in := make([]Message, b.BatchSize())
	for i := range in {
		in[i].Buf = make([]byte, 2000)
	}
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	return testing.AllocsPerRun(50, func() {
		if n, err := a.WriteBatch(out); n != len(out) || err != nil {
			t.Fatal(n, err)
		}
		for got := 0; got < len(out); {
			n, err := b.ReadBatch(in)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
}

// TestStampReceived: with StampReceived, Received is when the kernel took
// the first datagram of the batch, not when ReadBatch ran, with and without
// receive offload; the batch's datagrams are intact, and a stamped round
// trip allocates nothing.
func TestStampReceived(t *testing.T) {
	for _, o := range offloads(t) {
		if o.gso {
			continue // sending is not under test
		}
		t.Run(fmt.Sprintf("gro=%v", o.gro), func(t *testing.T) {
			a, b := listen(t), listen(t)
			b.setOffload(t, true, o.gro)
			if !b.StampReceived() {
				t.Fatal("StampReceived refused on Linux")
			}
			in := make([]Message, b.BatchSize())
			for i := range in {
				in[i].Buf = make([]byte, 2000)
			}
			b.SetReadDeadline(time.Now().Add(10 * time.Second))
			send := func(n int) {
				out := make([]Message, n)
				for i := range out {
					p := fmt.Appendf(nil, "datagram %d", i)
					out[i] = Message{Buf: p, N: len(p), Addr: b.LocalAddr()}
				}
				if k, err := a.WriteBatch(out); k != n || err != nil {
					t.Fatal(k, err)
				}
			}
			// The kernel stamps on receive a moment after the first socket
			// asks (a deferred static key); until then, at the read.
			for start := time.Now(); ; {
				if time.Since(start) > 5*time.Second {
					t.Fatal("the kernel never stamped a datagram on receive")
				}
				send(1)
				time.Sleep(5 * time.Millisecond)
				if _, err := b.ReadBatch(in); err != nil {
					t.Fatal(err)
				}
				if time.Since(b.Received()) >= 5*time.Millisecond {
					break
				}
			}
			before := time.Now()
			send(3)
			sent := time.Now()
			time.Sleep(50 * time.Millisecond)
			got := 0
			for got < 3 {
				n, err := b.ReadBatch(in[got:])
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
			read := time.Now()
			for i := range 3 {
				if want := fmt.Sprintf("datagram %d", i); string(in[i].Buf[:in[i].N]) != want {
					t.Fatalf("datagram %d is %q, want %q", i, in[i].Buf[:in[i].N], want)
				}
			}
			at := b.Received()
			if at.Before(before.Add(-time.Millisecond)) || at.After(sent.Add(time.Millisecond)) {
				t.Fatalf("received at %v, want between %v and %v", at, before, sent)
			}
			if read.Sub(at) < 50*time.Millisecond {
				t.Fatalf("wait %v, want at least the 50 ms it was left", read.Sub(at))
			}
			out := make([]Message, 8)
			for i := range out {
				out[i] = Message{Buf: make([]byte, 1000), N: 1000, Addr: b.LocalAddr()}
			}
			if allocs := roundTripAllocs(t, a, b, out); allocs != 0 {
				t.Errorf("%v allocations per stamped round trip", allocs)
			}
		})
	}
}

// TestDrops: a Conn nobody reads counts the datagrams its full buffer
// refused, and only those.
func TestDrops(t *testing.T) {
	a, b := listen(t), listen(t)
	if n, ok := b.Drops(); !ok || n != 0 {
		t.Fatalf("a new socket: %d drops, %v", n, ok)
	}
	b.plat.rc.Control(func(fd uintptr) { // below the kernel's minimum: the minimum
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	})
	const sent = 300
	out := make([]Message, sent)
	for i := range out {
		out[i] = Message{Buf: make([]byte, 1000), N: 1000, Addr: b.LocalAddr()}
	}
	a.setOffload(t, false, true) // one datagram per send: none merged
	if n, err := a.WriteBatch(out); n != sent || err != nil {
		t.Fatal(n, err)
	}
	dropped, ok := b.Drops()
	if !ok || dropped == 0 {
		t.Fatalf("%d datagrams into a small buffer: %d drops, %v", sent, dropped, ok)
	}
	in := make([]Message, b.BatchSize())
	for i := range in {
		in[i].Buf = make([]byte, 2000)
	}
	b.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	got := 0
	for {
		n, err := b.ReadBatch(in)
		if err != nil {
			break
		}
		got += n
	}
	if uint64(got)+dropped != sent {
		t.Fatalf("read %d and dropped %d of %d", got, dropped, sent)
	}
}
