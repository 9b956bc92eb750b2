package esp

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// twin returns a second Outbound for c whose IVs are those of o, so that
// Seal on the twin must give byte for byte what SealBatch gives on o.
func twin(t testing.TB, o *Outbound, c Config) *Outbound {
	t.Helper()
	o2, err := NewOutbound(c)
	if err != nil {
		t.Fatal(err)
	}
	o2.ivCipher, o2.ivNonce, o2.ivMask = o.ivCipher, o.ivNonce, o.ivMask
	return o2
}

// TestSealBatchMatchesSeal: for every pair, mode and ESN setting, batches
// of 0..70 packets of random and of equal sizes (more than one chunk, every
// lane count of the multi-lane CBC) seal to exactly the packets Seal makes
// one by one with the same sequence numbers, and open.
func TestSealBatchMatchesSeal(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, p := range allPairs {
		for _, esn := range []bool{false, true} {
			for _, mode := range []Mode{Tunnel, Transport} {
				c := p.config(mode, esn)
				o, in := mustSA(t, c)
				ref := twin(t, o, c)
				for round := range 12 {
					n := rng.IntN(71)
					if round == 0 {
						n = 1 // the one-job path (sealEach)
					}
					size := rng.IntN(1500) + 1
					jobs := make([]SealJob, n)
					want := make([][]byte, n)
					for i := range jobs {
						if round%2 == 1 {
							size = rng.IntN(1500) + 1
						}
						payload := ipPayload(size, 4+2*byte(i%2), rng)
						buf := make([]byte, HeaderRoom+size+TailRoom)
						copy(buf[HeaderRoom:], payload)
						jobs[i] = SealJob{Buf: buf, Off: HeaderRoom, N: size, NextHeader: 17}
						want[i] = seal(t, ref, payload, 17)
					}
					if got := o.SealBatch(jobs); got != n {
						t.Fatalf("%v %v esn=%v: sealed %d of %d", p, mode, esn, got, n)
					}
					for i, j := range jobs {
						if j.Err != nil || !bytes.Equal(j.Pkt, want[i]) {
							t.Fatalf("%v %v esn=%v round %d: job %d of %d (%d bytes): err %v, packet differs from Seal's", p, mode, esn, round, i, n, j.N, j.Err)
						}
						if _, _, _, err := in.Open(j.Pkt); err != nil {
							t.Fatalf("%v %v esn=%v: job %d does not open: %v", p, mode, esn, i, err)
						}
					}
				}
			}
		}
	}
}

// TestSealBatchErrors: bad jobs get Seal's error and no sequence number;
// the good ones around them are sealed in order.
func TestSealBatchErrors(t *testing.T) {
	o, in := mustSA(t, allPairs[3].config(Tunnel, false))
	rng := rand.New(rand.NewPCG(1, 2))
	good := func() SealJob {
		buf := make([]byte, HeaderRoom+100+TailRoom)
		copy(buf[HeaderRoom:], ipPayload(100, 4, rng))
		return SealJob{Buf: buf, Off: HeaderRoom, N: 100}
	}
	notIP := good()
	notIP.Buf[HeaderRoom] = 0x50
	noHead := good()
	noHead.Off = 4
	noTail := good()
	noTail.Buf = noTail.Buf[:HeaderRoom+100+3]
	empty := good()
	empty.N = 0
	jobs := []SealJob{good(), notIP, good(), noHead, noTail, empty, good()}
	wantErr := []error{nil, ErrNotIP, nil, ErrNoRoom, ErrNoRoom, ErrNotIP, nil}
	if n := o.SealBatch(jobs); n != 3 {
		t.Fatalf("sealed %d, want 3", n)
	}
	seq := uint64(0)
	for i, j := range jobs {
		if j.Err != wantErr[i] {
			t.Fatalf("job %d: err %v, want %v", i, j.Err, wantErr[i])
		}
		if j.Err != nil {
			if j.Pkt != nil {
				t.Fatalf("job %d: packet despite error", i)
			}
			continue
		}
		seq++
		if _, _, s, err := in.Open(j.Pkt); err != nil || s != seq {
			t.Fatalf("job %d: seq %d, %v; want %d", i, s, err, seq)
		}
	}
	if o.Seq() != 3 {
		t.Fatalf("Seq() = %d after three packets", o.Seq())
	}
}

// TestSealBatchSeqExhausted: a batch that crosses 2^32-1 seals up to it
// and refuses the rest (RFC 4303 §3.3.3); with ESN it goes on.
func TestSealBatchSeqExhausted(t *testing.T) {
	for _, esn := range []bool{false, true} {
		o, in := mustSA(t, allPairs[3].config(Transport, esn))
		o.seq.Store(math.MaxUint32 - 2)
		in.win.top.Store(math.MaxUint32 - 3)
		jobs := make([]SealJob, 5)
		for i := range jobs {
			jobs[i] = SealJob{Buf: make([]byte, 100), Off: HeaderRoom, N: 10, NextHeader: 17}
		}
		n := o.SealBatch(jobs)
		if want := map[bool]int{false: 2, true: 5}[esn]; n != want {
			t.Fatalf("esn=%v: sealed %d, want %d", esn, n, want)
		}
		for i, j := range jobs {
			want := uint64(math.MaxUint32-1) + uint64(i)
			if !esn && want > math.MaxUint32 {
				if j.Err != ErrSeqExhausted {
					t.Fatalf("esn=%v job %d: err %v, want ErrSeqExhausted", esn, i, j.Err)
				}
				continue
			}
			if _, _, seq, err := in.Open(j.Pkt); err != nil || seq != want {
				t.Fatalf("esn=%v job %d: seq %#x, %v; want %#x", esn, i, seq, err, want)
			}
		}
	}
}

// TestSealBatchTamper: a bit flipped anywhere in a batch-sealed packet is
// refused.
func TestSealBatchTamper(t *testing.T) {
	o, in := mustSA(t, allPairs[3].config(Tunnel, false))
	rng := rand.New(rand.NewPCG(3, 4))
	jobs := make([]SealJob, 9)
	for i := range jobs {
		buf := make([]byte, HeaderRoom+60+TailRoom)
		copy(buf[HeaderRoom:], ipPayload(60, 4, rng))
		jobs[i] = SealJob{Buf: buf, Off: HeaderRoom, N: 60}
	}
	o.SealBatch(jobs)
	pkt := jobs[4].Pkt
	for bit := range 8 * len(pkt) {
		bad := bytes.Clone(pkt)
		bad[bit/8] ^= 1 << (bit % 8)
		if _, _, _, err := in.Open(bad); err == nil {
			t.Fatalf("bit %d flipped: opened", bit)
		}
	}
}

func TestSealBatchNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race; run without -race to check the budget")
	}
	for _, p := range allPairs {
		o, _ := mustSA(t, p.config(Transport, false))
		jobs := make([]SealJob, 40)
		for i := range jobs {
			jobs[i] = SealJob{Buf: make([]byte, HeaderRoom+1400+TailRoom), Off: HeaderRoom, N: 1400, NextHeader: 17}
		}
		if a := testing.AllocsPerRun(50, func() { o.SealBatch(jobs) }); a != 0 {
			t.Errorf("%v: SealBatch allocates %v per batch", p, a)
		}
	}
}

// BenchmarkSealBatch seals 32 packets of n bytes per op, through SealBatch
// and through Seal one by one.
func BenchmarkSealBatch(b *testing.B) {
	const batch = 32
	for _, p := range []pair{allPairs[3], allPairs[10]} {
		for _, n := range benchSizes[:3] {
			o, _ := mustSA(b, p.config(Transport, false))
			jobs := make([]SealJob, batch)
			for i := range jobs {
				jobs[i] = SealJob{Buf: make([]byte, HeaderRoom+n+TailRoom), Off: HeaderRoom, N: n, NextHeader: 17}
			}
			b.Run(fmt.Sprintf("batch/%v/%d", p, n), func(b *testing.B) {
				b.SetBytes(int64(batch * n))
				b.ReportAllocs()
				for b.Loop() {
					o.SealBatch(jobs)
				}
			})
			b.Run(fmt.Sprintf("single/%v/%d", p, n), func(b *testing.B) {
				b.SetBytes(int64(batch * n))
				b.ReportAllocs()
				for b.Loop() {
					for _, j := range jobs {
						o.Seal(j.Buf, j.Off, j.N, 17)
					}
				}
			})
		}
	}
}

// TestOpenBatchMatchesOpen: a batch mixing good packets with tampered,
// replayed (also twice within the batch), truncated, foreign-SPI and dummy
// packets gives, job by job, what Open gives one packet at a time on a
// second Inbound of the same SA.
func TestOpenBatchMatchesOpen(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, p := range allPairs {
		for _, esn := range []bool{false, true} {
			for _, mode := range []Mode{Tunnel, Transport} {
				c := p.config(mode, esn)
				o, inBatch := mustSA(t, c)
				inOne, err := NewInbound(c)
				if err != nil {
					t.Fatal(err)
				}
				var pkts [][]byte
				for i := range 80 {
					var pkt []byte
					switch r := rng.IntN(10); {
					case r == 0 && len(pkts) > 0: // replay, maybe within this batch
						pkt = bytes.Clone(pkts[rng.IntN(len(pkts))])
					case r == 1:
						pkt = seal(t, o, ipPayload(rng.IntN(300)+1, 4, rng), 17)
						pkt[rng.IntN(len(pkt))] ^= 1 << rng.IntN(8)
					case r == 2:
						pkt = seal(t, o, ipPayload(rng.IntN(300)+1, 4, rng), 17)
						pkt = pkt[:rng.IntN(len(pkt))]
					case r == 3:
						buf := make([]byte, HeaderRoom+TailRoom)
						pkt, err = o.SealDummy(buf, HeaderRoom)
						if err != nil {
							t.Fatal(err)
						}
					case r == 4:
						pkt = seal(t, o, ipPayload(40, 4, rng), 17)
						pkt[0] ^= 0x80 // another SPI
					default:
						pkt = seal(t, o, ipPayload(rng.IntN(1500)+1, 4+2*byte(i%2), rng), 17)
					}
					pkts = append(pkts, pkt)
				}
				jobs := make([]OpenJob, len(pkts))
				for i, pkt := range pkts {
					jobs[i] = OpenJob{Pkt: bytes.Clone(pkt)}
				}
				opened := inBatch.OpenBatch(jobs)
				want := 0
				for i, pkt := range pkts {
					payload, nh, seq, err := inOne.Open(bytes.Clone(pkt))
					j := jobs[i]
					if err != j.Err || nh != j.NextHeader || seq != j.Seq || !bytes.Equal(payload, j.Payload) {
						t.Fatalf("%v %v esn=%v: job %d: OpenBatch gave (%d bytes, nh %d, seq %d, %v), Open (%d bytes, nh %d, seq %d, %v)",
							p, mode, esn, i, len(j.Payload), j.NextHeader, j.Seq, j.Err, len(payload), nh, seq, err)
					}
					if err == nil {
						want++
					}
				}
				if opened != want || want < 20 { // about half are good
					t.Fatalf("%v: OpenBatch reported %d opened, Open opened %d", p, opened, want)
				}
			}
		}
	}
}

func TestOpenBatchNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race; run without -race to check the budget")
	}
	for _, p := range allPairs {
		o, in := mustSA(t, p.config(Transport, false))
		const n = 40
		var rounds [][]OpenJob
		for range 60 {
			jobs := make([]OpenJob, n)
			for i := range jobs {
				jobs[i] = OpenJob{Pkt: seal(t, o, make([]byte, 1400), 17)}
			}
			rounds = append(rounds, jobs)
		}
		r := 0
		if a := testing.AllocsPerRun(50, func() {
			if got := in.OpenBatch(rounds[r]); got != n {
				t.Fatalf("%v: opened %d of %d", p, got, n)
			}
			r++
		}); a != 0 {
			t.Errorf("%v: OpenBatch allocates %v per batch", p, a)
		}
	}
}

// TestOpenBatchESNBoundary: one batch of packets around 2^32, out of
// order, opens as Open opens them one by one (the high 32 bits are
// inferred from the window as each packet comes).
func TestOpenBatchESNBoundary(t *testing.T) {
	for _, p := range []pair{allPairs[3], allPairs[4], allPairs[10]} {
		c := p.config(Tunnel, true)
		o, inBatch := mustSA(t, c)
		inOne, err := NewInbound(c)
		if err != nil {
			t.Fatal(err)
		}
		o.seq.Store(math.MaxUint32 - 5)
		inBatch.win.top.Store(math.MaxUint32 - 6)
		inOne.win.top.Store(math.MaxUint32 - 6)
		rng := rand.New(rand.NewPCG(5, 6))
		var pkts [][]byte
		for range 12 {
			pkts = append(pkts, seal(t, o, ipPayload(100, 4, rng), 0))
		}
		order := []int{0, 1, 2, 7, 3, 8, 4, 5, 11, 6, 9, 10, 1, 7}
		jobs := make([]OpenJob, len(order))
		for i, k := range order {
			jobs[i] = OpenJob{Pkt: bytes.Clone(pkts[k])}
		}
		inBatch.OpenBatch(jobs)
		for i, k := range order {
			_, _, seq, err := inOne.Open(bytes.Clone(pkts[k]))
			if jobs[i].Seq != seq || jobs[i].Err != err {
				t.Fatalf("%v: job %d (packet %d): OpenBatch seq %#x %v, Open seq %#x %v", p, i, k, jobs[i].Seq, jobs[i].Err, seq, err)
			}
		}
	}
}

// TestSealReservedInParts: a reserved batch sealed in two parts on two
// goroutines at once gives exactly the packets Seal gives one by one.
func TestSealReservedInParts(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	for _, p := range allPairs {
		c := p.config(Tunnel, false)
		o, _ := mustSA(t, c)
		ref := twin(t, o, c)
		for range 10 {
			n := rng.IntN(100) + 2
			jobs := make([]SealJob, n)
			want := make([][]byte, n)
			for i := range jobs {
				size := rng.IntN(1400) + 1
				payload := ipPayload(size, 4, rng)
				buf := make([]byte, HeaderRoom+size+TailRoom)
				copy(buf[HeaderRoom:], payload)
				jobs[i] = SealJob{Buf: buf, Off: HeaderRoom, N: size}
				want[i] = seal(t, ref, payload, 0)
			}
			if got := o.Reserve(jobs); got != n {
				t.Fatalf("%v: Reserve numbered %d of %d", p, got, n)
			}
			h := rng.IntN(n)
			done := make(chan int)
			go func() { done <- o.SealReserved(jobs[h:]) }()
			sealed := o.SealReserved(jobs[:h]) + <-done
			if sealed != n {
				t.Fatalf("%v: sealed %d of %d", p, sealed, n)
			}
			for i := range jobs {
				if !bytes.Equal(jobs[i].Pkt, want[i]) {
					t.Fatalf("%v: job %d of %d (split at %d) differs from Seal's packet", p, i, n, h)
				}
			}
		}
	}
}

func TestSealReservedWithoutReserve(t *testing.T) {
	o, _ := mustSA(t, allPairs[3].config(Transport, false))
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	o.SealReserved([]SealJob{{Buf: make([]byte, 100), Off: HeaderRoom, N: 10}})
}

// TestSealBatchPad: a job's Pad adds that much RFC 4303 padding (1, 2, 3,
// ...) beyond the minimum: the packet is byte for byte the reference
// encapsulation with the longer padding, Pad bytes longer, and opens to the
// payload. A Pad that is negative, not a multiple of the alignment or over
// MaxPad fails with ErrBadPadding, one without the tailroom with ErrNoRoom,
// and neither takes a sequence number.
func TestSealBatchPad(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	for _, p := range allPairs {
		for _, mode := range []Mode{Tunnel, Transport} {
			c := p.config(mode, false)
			o, in := mustSA(t, c)
			align := o.a.align
			for range 20 {
				n := rng.IntN(300) + 1
				maxPad := o.MaxPad(n)
				minPad := o.Overhead(n) - o.HeaderLen() - TrailerLen - o.a.icvLen
				if maxPad%align != 0 || minPad+maxPad > 255 || minPad+maxPad+align <= 255 {
					t.Fatalf("%v n=%d: MaxPad %d with minimum %d, align %d", p, n, maxPad, minPad, align)
				}
				for _, pad := range []int{0, align, maxPad} {
					payload := ipPayload(n, 4, rng)
					pkt := sealPadded(t, o, payload, 17, pad)
					if len(pkt) != n+o.Overhead(n)+pad {
						t.Fatalf("%v n=%d pad %d: %d bytes, want %d", p, n, pad, len(pkt), n+o.Overhead(n)+pad)
					}
					nh := byte(17)
					if mode == Tunnel {
						nh = 4
					}
					ref := refSeal(t, c, o.Seq(), ivOf(c, pkt), espPlaintext(payload, minPad+pad, nh))
					if !bytes.Equal(pkt, ref) {
						t.Fatalf("%v %v n=%d pad %d: SealBatch\n%x\nreference\n%x", p, mode, n, pad, pkt, ref)
					}
					got, gotNH, _, err := in.Open(pkt)
					if err != nil || gotNH != nh || !bytes.Equal(got, payload) {
						t.Fatalf("%v %v n=%d pad %d: Open: nh %d, %v", p, mode, n, pad, gotNH, err)
					}
				}
			}
			n := 100
			job := func(pad, tail int) SealJob { // tail: bytes past the least it needs
				buf := make([]byte, HeaderRoom+n+o.Overhead(n)-o.HeaderLen()+max(pad, 0)+tail)
				copy(buf[HeaderRoom:], ipPayload(n, 4, rng))
				return SealJob{Buf: buf, Off: HeaderRoom, N: n, NextHeader: 17, Pad: pad}
			}
			bad := []SealJob{job(-align, 0), job(o.MaxPad(n)+align, 0), job(o.MaxPad(n), -1)}
			want := []error{ErrBadPadding, ErrBadPadding, ErrNoRoom}
			if align > 1 {
				bad = append(bad, job(align+1, 0))
				want = append(want, ErrBadPadding)
			}
			if ok := []SealJob{job(o.MaxPad(n), 0)}; o.SealBatch(ok) != 1 {
				t.Fatalf("%v: a job with just the room it needs: %v", p, ok[0].Err)
			}
			seq := o.Seq()
			if got := o.SealBatch(bad); got != 0 {
				t.Fatalf("%v: sealed %d bad jobs: %+v", p, got, bad)
			}
			for i, j := range bad {
				if j.Err != want[i] || j.Pkt != nil {
					t.Fatalf("%v: bad job %d (pad %d): err %v, want %v", p, i, j.Pad, j.Err, want[i])
				}
			}
			if o.Seq() != seq {
				t.Fatalf("%v: bad jobs took sequence numbers", p)
			}
		}
	}
}
