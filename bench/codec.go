package bench

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/imsec/imsec/esp"
)

// Defaults of CodecConfig's zero values.
const (
	// DefaultBudget is the time spent measuring one implementation in one
	// cell; a default run (7 suites x 4 sizes x seal/open x ours/baseline)
	// takes about 112 budgets.
	DefaultBudget = 300 * time.Millisecond
	// MaxPacketSize is the largest payload size accepted: an ESP-in-UDP
	// datagram must fit in 65535 bytes with its headers.
	MaxPacketSize = 65000
)

// DefaultSizes are the payload sizes measured when CodecConfig.Sizes is nil.
var DefaultSizes = []int{64, 512, 1400, 8000}

// Suite is one ESP algorithm pair to measure.
type Suite struct {
	// EAlg is the label of the encryption algorithm in the results: the
	// esp.EncAlg name, with the AES key size for aes-gcm ("aes-gcm(128)").
	EAlg      string
	Enc       esp.EncAlg
	EncKeyLen int // length of esp.Config.EncKey (for aes-gcm, AES key + 4-byte salt)
	Auth      esp.AuthAlg
}

// CodecSuites returns the suites measured by default: the TS 33.203 pairs,
// 3DES for interoperability, NULL encryption, and AES-GCM (RFC 4106) with
// 128- and 256-bit keys. aes-cbc uses the 128-bit key TS 33.203 specifies.
func CodecSuites() []Suite {
	return []Suite{
		{"aes-cbc", esp.EncAESCBC, 16, esp.AuthHMACSHA196},
		{"aes-cbc", esp.EncAESCBC, 16, esp.AuthHMACMD596},
		{"aes-cbc", esp.EncAESCBC, 16, esp.AuthHMACSHA256128},
		{"des-ede3-cbc", esp.EncDES3CBC, esp.DES3KeyLen, esp.AuthHMACSHA196},
		{"null", esp.EncNull, 0, esp.AuthHMACSHA196},
		{"aes-gcm(128)", esp.EncAESGCM, 16 + esp.GCMSaltLen, esp.AuthNull},
		{"aes-gcm(256)", esp.EncAESGCM, 32 + esp.GCMSaltLen, esp.AuthNull},
	}
}

// FilterSuites keeps the suites whose encryption matches one of ealgs and
// whose integrity algorithm matches one of algs; an empty list matches
// everything. An encryption name matches its label ("aes-gcm(128)") or its
// esp.EncAlg name ("aes-gcm" matches both key sizes). It returns an error
// naming the first name that matches no suite at all.
func FilterSuites(suites []Suite, ealgs, algs []string) ([]Suite, error) {
	matchE := func(s Suite, name string) bool { return name == s.EAlg || name == string(s.Enc) }
	matchA := func(s Suite, name string) bool { return name == string(s.Auth) }
	for _, n := range ealgs {
		if !anySuite(suites, func(s Suite) bool { return matchE(s, n) }) {
			return nil, fmt.Errorf("unknown encryption algorithm %q (want one of %s)", n, strings.Join(names(suites, func(s Suite) string { return s.EAlg }), ", "))
		}
	}
	for _, n := range algs {
		if !anySuite(suites, func(s Suite) bool { return matchA(s, n) }) {
			return nil, fmt.Errorf("unknown integrity algorithm %q (want one of %s)", n, strings.Join(names(suites, func(s Suite) string { return string(s.Auth) }), ", "))
		}
	}
	var out []Suite
	for _, s := range suites {
		okE := len(ealgs) == 0
		for _, n := range ealgs {
			okE = okE || matchE(s, n)
		}
		okA := len(algs) == 0
		for _, n := range algs {
			okA = okA || matchA(s, n)
		}
		if okE && okA {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no algorithm pair matches both filters")
	}
	return out, nil
}

func anySuite(l []Suite, f func(Suite) bool) bool {
	for _, s := range l {
		if f(s) {
			return true
		}
	}
	return false
}

func names(l []Suite, f func(Suite) string) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range l {
		if n := f(s); !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// CodecConfig configures RunCodec. The zero value measures CodecSuites at
// DefaultSizes with DefaultBudget.
type CodecConfig struct {
	Suites []Suite
	Sizes  []int         // payload sizes in bytes, 1..MaxPacketSize
	Budget time.Duration // per implementation per cell
	// Batch, if above 1, measures esp's SealBatch and OpenBatch with this
	// many packets per call instead of Seal and Open one packet at a time
	// (a data plane seals and opens what one system call brought).
	Batch int
	// Progress, if set, is called before each cell with its 1-based index,
	// the number of cells and a label such as "aes-cbc/hmac-sha-1-96 1400B open".
	Progress func(n, total int, label string)
}

// CodecResult is one cell: one suite, one payload size, one direction.
type CodecResult struct {
	EAlg string `json:"ealg"`
	Alg  string `json:"alg"`
	Size int    `json:"size"` // payload (inner packet) bytes
	Op   string `json:"op"`   // "seal" or "open"
	// Batch is the packets per SealBatch or OpenBatch call, 1 for Seal and
	// Open.
	Batch int `json:"batch"`
	// MBps and PPS are payload megabytes (10^6 bytes) and packets per second.
	MBps float64 `json:"mbps"`
	PPS  float64 `json:"pps"`
	// Allocs is heap allocations per packet (runtime.MemStats.Mallocs delta
	// over a batch of packets, divided by the batch).
	Allocs float64 `json:"allocs"`
	// BaselineMBps is the standard library's primitives doing the same
	// cryptographic job on the same packets, measured in the same run.
	BaselineMBps float64 `json:"baseline_mbps"`
	// Ratio is MBps / BaselineMBps.
	Ratio float64 `json:"ratio"`
}

// RunCodec measures esp.Outbound.Seal and esp.Inbound.Open against the
// baseline for every suite and size. It stops early with ctx's error.
//
// Seal is measured in place on one buffer, as the tunnel does it. Open needs
// a fresh sequence number per packet (the replay window rejects repeats), so
// one Inbound opens batches of packets that the Outbound seals in place
// between batches, outside the timed part (the run takes longer than the
// budget for that).
//
// The baseline does the cryptographic work of the same packet with
// crypto/cipher, crypto/aes, crypto/des and crypto/hmac, each mode or MAC
// made once and reset per packet (the best the standard library allows):
// seal writes header, padding and trailer, CBC-encrypts (SetIV +
// CryptBlocks) and appends the truncated HMAC, or GCM-seals; open verifies
// the HMAC and CBC-decrypts, or GCM-opens, the very packets esp sealed.
// Per-SA CBC IV generation (esp encrypts the sequence number) is not in the
// baseline, which writes a counter as the IV.
func RunCodec(ctx context.Context, cfg CodecConfig) ([]CodecResult, error) {
	if cfg.Suites == nil {
		cfg.Suites = CodecSuites()
	}
	if cfg.Sizes == nil {
		cfg.Sizes = DefaultSizes
	}
	if cfg.Budget == 0 {
		cfg.Budget = DefaultBudget
	}
	if cfg.Budget < 0 {
		return nil, fmt.Errorf("bench: negative time budget %v", cfg.Budget)
	}
	if cfg.Batch < 0 || cfg.Batch > maxCodecBatch {
		return nil, fmt.Errorf("bench: batch %d out of range 0..%d", cfg.Batch, maxCodecBatch)
	}
	cfg.Batch = max(cfg.Batch, 1)
	for _, n := range cfg.Sizes {
		if n < 1 || n > MaxPacketSize {
			return nil, fmt.Errorf("bench: packet size %d out of range 1..%d", n, MaxPacketSize)
		}
	}
	total := 2 * len(cfg.Suites) * len(cfg.Sizes)
	var out []CodecResult
	for _, s := range cfg.Suites {
		for _, size := range cfg.Sizes {
			for _, op := range []string{"seal", "open"} {
				if err := ctx.Err(); err != nil {
					return out, err
				}
				if cfg.Progress != nil {
					cfg.Progress(len(out)+1, total, fmt.Sprintf("%s/%s %dB %s", s.EAlg, s.Auth, size, op))
				}
				r, err := runCell(ctx, s, size, op, cfg.Budget, cfg.Batch)
				if err != nil {
					return out, fmt.Errorf("bench: %s/%s %dB %s: %w", s.EAlg, s.Auth, size, op, err)
				}
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// keys returns deterministic keys for s (the values do not matter to speed).
func (s Suite) config() esp.Config {
	enc := make([]byte, s.EncKeyLen)
	for i := range enc {
		enc[i] = byte(0x10 + i)
	}
	auth := make([]byte, max(esp.AuthKeyLen(s.Auth), 0))
	for i := range auth {
		auth[i] = byte(0xa0 + i)
	}
	return esp.Config{
		SPI:        0x1000,
		Mode:       esp.Transport,
		Encryption: s.Enc,
		EncKey:     enc,
		Integrity:  s.Auth,
		AuthKey:    auth,
	}
}

// nextHeaderUDP is the Transport-mode Next Header used for the payload.
const nextHeaderUDP = 17

// maxCodecBatch bounds CodecConfig.Batch (a batch of 8000-byte packets is
// then 2 MB).
const maxCodecBatch = 256

func runCell(ctx context.Context, s Suite, size int, op string, budget time.Duration, batch int) (CodecResult, error) {
	r := CodecResult{EAlg: s.EAlg, Alg: string(s.Auth), Size: size, Op: op, Batch: batch}
	cfg := s.config()
	base, err := newBaseline(cfg)
	if err != nil {
		return r, err
	}
	var ours, theirs workload
	if op == "seal" {
		ours, err = sealWorkload(cfg, size, batch)
		if err == nil {
			theirs = base.sealWorkload(size)
		}
	} else {
		var pkts [][]byte
		ours, pkts, err = openWorkload(cfg, size, batch)
		if err == nil {
			theirs = base.openWorkload(pkts)
		}
	}
	if err != nil {
		return r, err
	}
	ms, err := measure(ctx, budget, ours, theirs)
	if err != nil {
		return r, err
	}
	r.PPS = ms[0].pps()
	r.MBps = r.PPS * float64(size) / 1e6
	r.Allocs = ms[0].allocs
	r.BaselineMBps = ms[1].pps() * float64(size) / 1e6
	if r.BaselineMBps > 0 {
		r.Ratio = r.MBps / r.BaselineMBps
	}
	return r, nil
}

// workload is a measurable operation run in batches: prepare (untimed,
// may be nil) readies a batch, then op(i) for i in [0, batch) is timed.
type workload struct {
	batch   int
	prepare func() error
	op      func(i int) error
}

// batchFor picks a batch that keeps a batch of packets around 256 KiB.
func batchFor(size int) int {
	return min(max((256<<10)/(size+64), 16), 256)
}

// measurement is what measure found for one workload.
type measurement struct {
	batch   int
	elapsed time.Duration   // timed work so far
	times   []time.Duration // of each timed batch
	allocs  float64
}

// pps is operations per second in the median batch. The cores are shared
// with other processes: a batch that the scheduler preempted is an outlier
// that the median ignores and a total would not.
func (m measurement) pps() float64 {
	t := slices.Clone(m.times)
	slices.Sort(t)
	med := t[len(t)/2]
	if len(t)%2 == 0 {
		med = (t[len(t)/2-1] + t[len(t)/2]) / 2
	}
	return float64(m.batch) / max(med, time.Nanosecond).Seconds()
}

// runBatch prepares (untimed) and runs one timed batch of w.
func (w workload) runBatch() (time.Duration, error) {
	if w.prepare != nil {
		if err := w.prepare(); err != nil {
			return 0, err
		}
	}
	t0 := time.Now()
	for i := range w.batch {
		if err := w.op(i); err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

// measure runs each workload for about budget of timed work, interleaving
// their batches so that a change in machine load (the cores are shared)
// hits both alike, and then counts each one's heap allocations per
// operation. The rate is that of the median batch (see measurement.pps).
func measure(ctx context.Context, budget time.Duration, ws ...workload) ([]measurement, error) {
	ms := make([]measurement, len(ws))
	for i, w := range ws {
		ms[i].batch = w.batch
		ms[i].times = make([]time.Duration, 0, 1024)
	}
	for _, w := range ws { // warm-up: caches, pools, branch predictors
		if _, err := w.runBatch(); err != nil {
			return nil, err
		}
	}
	for {
		next := -1 // the workload with the least timed work so far
		for i := range ms {
			if ms[i].elapsed < budget && (next < 0 || ms[i].elapsed < ms[next].elapsed) {
				next = i
			}
		}
		if next < 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, err := ws[next].runBatch()
		if err != nil {
			return nil, err
		}
		ms[next].elapsed += d
		ms[next].times = append(ms[next].times, d)
	}
	for i, w := range ws {
		a, err := w.allocsPerOp()
		if err != nil {
			return nil, err
		}
		ms[i].allocs = a
	}
	return ms, nil
}

// allocsPerOp counts heap allocations per operation over a batch with
// runtime.ReadMemStats, as testing.AllocsPerRun does. It keeps the smallest
// of three batches: a sync.Pool refilled after a GC or after the goroutine
// moved to another P allocates once, which is not a per-packet cost, while
// a per-packet allocation shows in every batch.
func (w workload) allocsPerOp() (float64, error) {
	best := math.Inf(1)
	for range 3 {
		if w.prepare != nil {
			if err := w.prepare(); err != nil {
				return 0, err
			}
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for i := range w.batch {
			if err := w.op(i); err != nil {
				return 0, err
			}
		}
		runtime.ReadMemStats(&m1)
		best = min(best, float64(m1.Mallocs-m0.Mallocs)/float64(w.batch))
		if best == 0 {
			break
		}
	}
	return best, nil
}

// sealWorkload seals a size-byte payload in place, over and over, in one
// buffer laid out with esp.HeaderRoom and esp.TailRoom; with batch > 1,
// batch such buffers per SealBatch call.
func sealWorkload(cfg esp.Config, size, batch int) (workload, error) {
	out, err := esp.NewOutbound(cfg)
	if err != nil {
		return workload{}, err
	}
	buf := make([]byte, esp.HeaderRoom+size+esp.TailRoom)
	for i := range buf {
		buf[i] = byte(i)
	}
	if batch > 1 {
		jobs := make([]esp.SealJob, batch)
		bufs := make([][]byte, batch)
		for k := range bufs {
			bufs[k] = bytes.Clone(buf)
		}
		return workload{
			batch: batch * max(1, 64/batch),
			op: func(i int) error {
				if i%batch != 0 {
					return nil
				}
				for k := range jobs {
					jobs[k] = esp.SealJob{Buf: bufs[k], Off: esp.HeaderRoom, N: size, NextHeader: nextHeaderUDP}
				}
				if out.SealBatch(jobs) != batch {
					for _, j := range jobs {
						if j.Err != nil {
							return j.Err
						}
					}
				}
				return nil
			},
		}, nil
	}
	return workload{
		batch: 64,
		op: func(int) error {
			_, err := out.Seal(buf, esp.HeaderRoom, size, nextHeaderUDP)
			return err
		},
	}, nil
}

// openWorkload returns a workload that opens batches of packets from one
// Inbound, re-sealing each batch with fresh sequence numbers (untimed)
// before it is opened in place, and a copy of the first batch for the
// baseline. With perCall > 1, OpenBatch opens perCall packets per call.
func openWorkload(cfg esp.Config, size, perCall int) (workload, [][]byte, error) {
	out, err := esp.NewOutbound(cfg)
	if err != nil {
		return workload{}, nil, err
	}
	in, err := esp.NewInbound(cfg)
	if err != nil {
		return workload{}, nil, err
	}
	batch := batchFor(size)
	batch = max(batch/perCall, 1) * perCall
	bufs := make([][]byte, batch)
	pkts := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, esp.HeaderRoom+size+esp.TailRoom)
		for j := range bufs[i] {
			bufs[i][j] = byte(i + j)
		}
	}
	prepare := func() error {
		for i, buf := range bufs {
			p, err := out.Seal(buf, esp.HeaderRoom, size, nextHeaderUDP)
			if err != nil {
				return err
			}
			pkts[i] = p
		}
		return nil
	}
	if err := prepare(); err != nil {
		return workload{}, nil, err
	}
	pristine := make([][]byte, batch)
	for i, p := range pkts {
		pristine[i] = append([]byte(nil), p...)
	}
	jobs := make([]esp.OpenJob, perCall)
	w := workload{
		batch:   batch,
		prepare: prepare,
		op: func(i int) error {
			if perCall > 1 {
				if i%perCall != 0 {
					return nil
				}
				for k := range jobs {
					jobs[k] = esp.OpenJob{Pkt: pkts[i+k]}
				}
				in.OpenBatch(jobs)
				for _, j := range jobs {
					if j.Err != nil {
						return j.Err
					}
					if len(j.Payload) != size || j.NextHeader != nextHeaderUDP {
						return fmt.Errorf("open returned %d bytes, next header %d; want %d, %d", len(j.Payload), j.NextHeader, size, nextHeaderUDP)
					}
				}
				return nil
			}
			payload, nh, _, err := in.Open(pkts[i])
			if err == nil && (len(payload) != size || nh != nextHeaderUDP) {
				err = fmt.Errorf("open returned %d bytes, next header %d; want %d, %d", len(payload), nh, size, nextHeaderUDP)
			}
			return err
		},
	}
	return w, pristine, nil
}

// errBaselineICV means the baseline's HMAC or GCM check failed: the
// baseline is not doing the same job as esp (a bug in this file).
var errBaselineICV = errors.New("baseline ICV check failed")

// baseline is the standard library doing an ESP packet's crypto.
type baseline struct {
	spi    uint32
	ivLen  int
	align  int
	icvLen int
	enc    cipher.BlockMode // CBC encrypter, or nil
	dec    cipher.BlockMode // CBC decrypter, or nil
	aead   cipher.AEAD      // GCM, or nil
	salt   [esp.GCMSaltLen]byte
	mac    hash.Hash // HMAC, or nil
	seq    uint64
	sum    [sha256.Size]byte
	nonce  [12]byte
}

// ivSetter is crypto/cipher's CBC modes' SetIV, which lets one mode serve
// every packet as crypto/tls does.
type ivSetter interface{ SetIV([]byte) }

func newBaseline(cfg esp.Config) (*baseline, error) {
	b := &baseline{spi: uint32(cfg.SPI), align: esp.PadAlign}
	var blk cipher.Block
	var err error
	switch cfg.Encryption {
	case esp.EncAESCBC:
		blk, err = aes.NewCipher(cfg.EncKey)
	case esp.EncDES3CBC:
		blk, err = des.NewTripleDESCipher(cfg.EncKey)
	case esp.EncAESGCM:
		k := len(cfg.EncKey) - esp.GCMSaltLen
		if blk, err = aes.NewCipher(cfg.EncKey[:k]); err == nil {
			b.aead, err = cipher.NewGCM(blk)
		}
		copy(b.salt[:], cfg.EncKey[k:])
		b.ivLen, b.icvLen, blk = esp.GCMIVLen, esp.GCMICVLen, nil
	case esp.EncNull:
	default:
		return nil, fmt.Errorf("baseline: no encryption %q", cfg.Encryption)
	}
	if err != nil {
		return nil, err
	}
	if blk != nil {
		iv := make([]byte, blk.BlockSize())
		b.enc = cipher.NewCBCEncrypter(blk, iv)
		b.dec = cipher.NewCBCDecrypter(blk, iv)
		b.ivLen, b.align = blk.BlockSize(), blk.BlockSize()
	}
	switch cfg.Integrity {
	case esp.AuthHMACSHA196:
		b.mac, b.icvLen = hmac.New(sha1.New, cfg.AuthKey), esp.ICV96Len
	case esp.AuthHMACMD596:
		b.mac, b.icvLen = hmac.New(md5.New, cfg.AuthKey), esp.ICV96Len
	case esp.AuthHMACSHA256128:
		b.mac, b.icvLen = hmac.New(sha256.New, cfg.AuthKey), esp.ICV128Len
	case esp.AuthNull:
	default:
		return nil, fmt.Errorf("baseline: no integrity %q", cfg.Integrity)
	}
	return b, nil
}

// seal builds the ESP packet around buf[off:off+n] (Transport mode, Next
// Header UDP) and returns it.
func (b *baseline) seal(buf []byte, off, n int) []byte {
	hdr := esp.ESPHeaderLen + b.ivLen
	pad := (b.align - (n+esp.TrailerLen)%b.align) % b.align
	ptEnd := off + n + pad + esp.TrailerLen
	p := buf[off-hdr : ptEnd+b.icvLen]
	b.seq++
	binary.BigEndian.PutUint32(p[0:4], b.spi)
	binary.BigEndian.PutUint32(p[4:8], uint32(b.seq))
	t := buf[off+n : ptEnd]
	for i := range pad {
		t[i] = byte(i + 1)
	}
	t[pad] = byte(pad)
	t[pad+1] = nextHeaderUDP
	pt := buf[off:ptEnd]
	if b.aead != nil {
		copy(b.nonce[:], b.salt[:])
		binary.BigEndian.PutUint64(b.nonce[4:], b.seq)
		copy(p[esp.ESPHeaderLen:hdr], b.nonce[4:])
		b.aead.Seal(pt[:0], b.nonce[:], pt, p[:esp.ESPHeaderLen])
		return p
	}
	if b.enc != nil {
		iv := p[esp.ESPHeaderLen:hdr]
		binary.BigEndian.PutUint64(iv, b.seq) // a counter: see RunCodec
		b.enc.(ivSetter).SetIV(iv)
		b.enc.CryptBlocks(pt, pt)
	}
	b.mac.Reset()
	b.mac.Write(p[:ptEnd-(off-hdr)])
	copy(p[ptEnd-(off-hdr):], b.mac.Sum(b.sum[:0])[:b.icvLen])
	return p
}

// open authenticates and decrypts pkt into scratch (leaving pkt intact, so
// the same packets serve every batch) and returns the plaintext.
func (b *baseline) open(pkt, scratch []byte) ([]byte, error) {
	hdr := esp.ESPHeaderLen + b.ivLen
	ctEnd := len(pkt) - b.icvLen
	ct := pkt[hdr:ctEnd]
	if b.aead != nil {
		copy(b.nonce[:], b.salt[:])
		copy(b.nonce[4:], pkt[esp.ESPHeaderLen:hdr])
		pt, err := b.aead.Open(scratch[:0], b.nonce[:], pkt[hdr:], pkt[:esp.ESPHeaderLen])
		if err != nil {
			return nil, errBaselineICV
		}
		return pt, nil
	}
	b.mac.Reset()
	b.mac.Write(pkt[:ctEnd])
	if !hmac.Equal(b.mac.Sum(b.sum[:0])[:b.icvLen], pkt[ctEnd:]) {
		return nil, errBaselineICV
	}
	if b.dec == nil {
		return ct, nil
	}
	b.dec.(ivSetter).SetIV(pkt[esp.ESPHeaderLen:hdr])
	b.dec.CryptBlocks(scratch[:len(ct)], ct)
	return scratch[:len(ct)], nil
}

func (b *baseline) sealWorkload(size int) workload {
	buf := make([]byte, esp.HeaderRoom+size+esp.TailRoom)
	return workload{
		batch: 64,
		op: func(int) error {
			b.seal(buf, esp.HeaderRoom, size)
			return nil
		},
	}
}

func (b *baseline) openWorkload(pkts [][]byte) workload {
	scratch := make([]byte, len(pkts[0]))
	return workload{
		batch: len(pkts),
		op: func(i int) error {
			_, err := b.open(pkts[i], scratch)
			return err
		},
	}
}
