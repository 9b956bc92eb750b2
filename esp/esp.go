package esp

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash"
	"math"
	"sync"
	"sync/atomic"

	"github.com/imsec/imsec/esp/internal/aescbc"
	"github.com/imsec/imsec/esp/internal/hmacsha1"
)

// SPI is a Security Parameters Index (RFC 4303 §2.1).
type SPI uint32

// Mode is the SA mode. It decides the Next Header of sealed packets and
// what Open accepts.
type Mode uint8

const (
	// Tunnel mode carries whole IP packets: Seal takes the Next Header from
	// the inner packet's version nibble (4 for IPv4, 41 for IPv6) and Open
	// requires the Next Header to match the inner packet's version.
	Tunnel Mode = 1
	// Transport mode carries an upper-layer payload: the caller gives its
	// protocol number as the Next Header, and Open returns it.
	Transport Mode = 2
)

func (m Mode) String() string {
	switch m {
	case Tunnel:
		return "tunnel"
	case Transport:
		return "transport"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// Implementation constants.
const (
	// HeaderRoom is the headroom Seal needs before the payload for every
	// algorithm: SPI, sequence number and the largest IV (AES-CBC).
	HeaderRoom = ESPHeaderLen + AESBlockSize
	// TailRoom is the tailroom Seal needs after the payload for every
	// algorithm: the largest padding (15 for AES-CBC), pad length, next
	// header and the largest ICV (16).
	TailRoom = AESBlockSize - 1 + TrailerLen + 16
	// DefaultReplayWindow is the anti-replay window used when
	// Config.ReplayWindow is 0.
	DefaultReplayWindow = 1024
	// MaxReplayWindow is the largest anti-replay window accepted.
	MaxReplayWindow = 1 << 16
)

// Config describes one direction of an SA. Keys are copied; the caller may
// reuse the slices.
type Config struct {
	SPI        SPI
	Mode       Mode
	Encryption EncAlg
	EncKey     []byte // for aes-gcm: AES key || 4-octet salt
	Integrity  AuthAlg
	AuthKey    []byte
	// ReplayWindow is the anti-replay window of an inbound SA in packets.
	// 0 means DefaultReplayWindow (1024). Other values are rounded up to a
	// multiple of 64, at least 64 (RFC 4303 §3.4.3 asks for 32 at least and
	// 64 by default); at most MaxReplayWindow. Ignored for outbound SAs.
	ReplayWindow int
	// ESN turns on 64-bit extended sequence numbers (RFC 4303 §2.2.1): only
	// the low 32 bits go on the wire, the high 32 bits are covered by the
	// ICV (and by the GCM AAD, RFC 4106 §5).
	ESN bool
	// Keys, if set, are Encryption, EncKey, Integrity and AuthKey already
	// prepared (NewKeys): SAs with the same keys share them instead of
	// each expanding its own. TS 33.203 §7.1 gives all four SAs of a set
	// one key pair, and a P-CSCF holds sets for every UE. The other key
	// fields must still name the same algorithms (the key log reads them).
	Keys *Keys
}

// Keys are an encryption and an integrity key prepared once (AES key
// schedules, HMAC pads) for any number of SAs. They are immutable and safe
// for concurrent use.
type Keys struct {
	a algs // in the Keys: one object per key set, not two
}

// NewKeys prepares keys for Config.Keys; the arguments are checked as
// NewOutbound checks them.
func NewKeys(enc EncAlg, encKey []byte, auth AuthAlg, authKey []byte) (*Keys, error) {
	k := &Keys{}
	if err := k.a.init(&Config{Encryption: enc, EncKey: encKey, Integrity: auth, AuthKey: authKey}, false); err != nil {
		return nil, err
	}
	return k, nil
}

// Raw returns copies of the keys as given to NewKeys: for Config's EncKey
// and AuthKey, and key logs (Wireshark's ESP SA table).
func (k *Keys) Raw() (encKey, authKey []byte) {
	a := &k.a
	if a.encKeyLen > 0 {
		encKey = append([]byte(nil), a.encKey[:a.encKeyLen]...)
		if a.enc == EncAESGCM {
			encKey = append(encKey, a.salt[:]...)
		}
	}
	if a.authKeyLen > 0 {
		authKey = append([]byte(nil), a.authKey[:a.authKeyLen]...)
	}
	return encKey, authKey
}

func (c *Config) validate() error {
	if c.SPI == 0 {
		return fmt.Errorf("esp: SPI 0 is reserved and never sent on the wire (RFC 4303 §2.1)")
	}
	if c.SPI <= SPIReservedMax {
		return fmt.Errorf("esp: SPI %d is in the IANA-reserved range 1..255 (RFC 4303 §2.1)", c.SPI)
	}
	if c.Mode != Tunnel && c.Mode != Transport {
		return fmt.Errorf("esp: mode must be Tunnel or Transport, got %v", c.Mode)
	}
	if c.ReplayWindow < 0 || c.ReplayWindow > MaxReplayWindow {
		return fmt.Errorf("esp: replay window %d out of range 0..%d", c.ReplayWindow, MaxReplayWindow)
	}
	return nil
}

// cbcMode is a CBC BlockMode whose IV can be reset per packet
// (crypto/cipher's encrypters and decrypters have SetIV).
type cbcMode interface {
	CryptBlocks(dst, src []byte)
	SetIV(iv []byte)
}

// state is the mutable per-packet crypto state, pooled per SA so that Seal
// and Open can run on several goroutines without allocating.
type state struct {
	cbc     cbcMode
	mac     hash.Hash
	scratch [64]byte
}

// sa is what both directions share.
type sa struct {
	spi  SPI
	mode Mode
	esn  bool
	// decrypt: the SA opens packets (its CBC states decrypt).
	decrypt bool
	a       *algs
	pool    *sync.Pool // of *state, empty until the first packet; nil when scratchOnly
}

func (s *sa) init(c *Config, decrypt, allowNoAuth bool) error {
	if err := c.validate(); err != nil {
		return err
	}
	var a *algs
	if c.Keys != nil {
		a = &c.Keys.a
		if a.enc != c.Encryption || a.auth != c.Integrity {
			return fmt.Errorf("esp: Config.Keys are for %s/%s, the config names %s/%s", a.enc, a.auth, c.Encryption, c.Integrity)
		}
	} else {
		var err error
		if a, err = newAlgs(c, allowNoAuth); err != nil {
			return err
		}
	}
	s.spi, s.mode, s.esn, s.a = c.SPI, c.Mode, c.ESN, a
	s.decrypt = decrypt
	if !s.scratchOnly() {
		s.pool = new(sync.Pool)
	}
	// Only the 3DES mode can fail: fail at setup rather than per packet.
	// Otherwise no state is made (nor pooled) until the SA's first
	// packet: a P-CSCF holds many SAs that carry none.
	if a.block != nil {
		if _, err := s.newState(); err != nil {
			return err
		}
	}
	return nil
}

// newState makes a per-packet crypto state.
func (s *sa) newState() (*state, error) {
	a := s.a
	st := &state{}
	if a.block != nil { // 3DES; AES-CBC needs no per-packet state
		iv := make([]byte, a.cbcSize)
		var m cipher.BlockMode
		if s.decrypt {
			m = cipher.NewCBCDecrypter(a.block, iv)
		} else {
			m = cipher.NewCBCEncrypter(a.block, iv)
		}
		cm, ok := m.(cbcMode)
		if !ok {
			return nil, fmt.Errorf("esp: %T has no SetIV", m)
		}
		st.cbc = cm
	}
	if a.macHash != nil && !a.sha1Fast { // HMAC-SHA-1 has its own precomputed pads
		st.mac = a.newMAC()
	}
	return st, nil
}

// scratchStates holds the states of the SAs whose packets need nothing of
// their own, only scratch space (AES-CBC, GCM and null, with no MAC or with
// hmac-sha-1-96's own pads): one pool for all of them, so that such an SA
// never fills a pool of its own (a per-P array and a state each).
var scratchStates = sync.Pool{New: func() any { return new(state) }}

// scratchOnly reports whether s's states are scratch space only (newState
// makes no cipher mode and no MAC for it).
func (s *sa) scratchOnly() bool {
	return s.a.block == nil && (s.a.macHash == nil || s.a.sha1Fast)
}

// getState takes a state from the SA's pool, or makes one; putState gives
// it back.
func (s *sa) getState() *state {
	if s.scratchOnly() {
		return scratchStates.Get().(*state)
	}
	if st, ok := s.pool.Get().(*state); ok {
		return st
	}
	st, err := s.newState()
	if err != nil {
		panic(err) // unreachable: the same construction succeeded in init
	}
	return st
}

func (s *sa) putState(st *state) {
	if s.scratchOnly() {
		scratchStates.Put(st)
		return
	}
	s.pool.Put(st)
}

// SPI returns the SA's SPI.
func (s *sa) SPI() SPI { return s.spi }

// Idle frees what the SA's keys prepared on its first packet (the AES-CBC
// key schedule, the hmac-sha-1-96 pads: about 500 bytes), for an SA that
// will likely carry nothing for a while; the next packet prepares them
// again. SAs made with the same Config.Keys share them: Idle on one is Idle
// on all. Safe to call while packets are sealed or opened.
func (s *sa) Idle() { s.a.idle() }

// Prepared reports whether the SA's keys hold what Idle frees (a packet
// was sealed or opened since they were made or last idled). For AES-GCM,
// 3DES and null, which prepare everything up front, it is always false.
func (s *sa) Prepared() bool { return s.a.aesCBC.Load() != nil || s.a.sha1.Load() != nil }

// Mode returns the SA's mode.
func (s *sa) Mode() Mode { return s.mode }

// Overhead is the exact number of bytes ESP adds to an n-byte payload:
// header, IV, padding, pad length, next header and ICV.
func (s *sa) Overhead(n int) int { return s.a.overhead(n) }

// HeaderLen is the headroom this SA needs before the payload (≤ HeaderRoom).
func (s *sa) HeaderLen() int { return ESPHeaderLen + s.a.ivLen }

// MaxPayload is the largest payload whose ESP packet fits in size bytes, or
// -1 if none does.
func (s *sa) MaxPayload(size int) int {
	room := size - ESPHeaderLen - s.a.ivLen - s.a.icvLen
	if room < TrailerLen {
		return -1
	}
	if n := room - room%s.a.align - TrailerLen; n >= 0 {
		return n
	}
	return -1
}

// Outbound is the sending side of an SA. Seal is safe for concurrent use.
type Outbound struct {
	sa
	seq      atomic.Uint64  // last sequence number used
	ivCipher *aescbc.Cipher // the process's CBC IV cipher (ivKey)
	ivNonce  uint64         // random per SA, in every IV block (cbcIV)
	ivMask   uint64         // random per SA, XORed into GCM IVs
	testIV   []byte         // known-answer tests only: use this IV instead
}

// NewOutbound validates c and returns the sending side of the SA.
func NewOutbound(c Config) (*Outbound, error) {
	return newOutbound(c, false)
}

func newOutbound(c Config, allowNoAuth bool) (*Outbound, error) {
	o := &Outbound{}
	if err := o.init(&c, false, allowNoAuth); err != nil {
		return nil, err
	}
	if o.a.cbcSize > 0 {
		c, err := ivKey()
		if err != nil {
			return nil, err
		}
		var n [8]byte
		if _, err := rand.Read(n[:]); err != nil {
			return nil, fmt.Errorf("esp: IV nonce: %w", err)
		}
		o.ivCipher, o.ivNonce = c, binary.BigEndian.Uint64(n[:])
	}
	if o.a.aead != nil {
		var m [8]byte
		if _, err := rand.Read(m[:]); err != nil {
			return nil, fmt.Errorf("esp: IV mask: %w", err)
		}
		o.ivMask = binary.BigEndian.Uint64(m[:])
	}
	return o, nil
}

// Seq returns the last sequence number used (0 before the first packet).
func (o *Outbound) Seq() uint64 { return o.seq.Load() }

// Seal builds an ESP packet in place around the payload buf[off:off+n] and
// returns it as a sub-slice of buf, starting HeaderLen() bytes before off.
// buf needs at least HeaderLen() (≤ HeaderRoom) bytes before off and
// Overhead(n)-HeaderLen() (≤ TailRoom) bytes after off+n.
//
// In Transport mode nextHeader is the payload's protocol number; in Tunnel
// mode it is ignored and taken from the IP version of the payload.
//
// Seal writes the SPI, the next sequence number, the IV, the RFC 4303
// padding (1, 2, 3, ...), pad length, next header and ICV, and encrypts.
// It returns ErrSeqExhausted instead of wrapping the 32-bit sequence number
// of a non-ESN SA (RFC 4303 §3.3.3): the SA needs rekeying.
func (o *Outbound) Seal(buf []byte, off, n int, nextHeader byte) ([]byte, error) {
	nextHeader, err := o.check(buf, off, n, nextHeader)
	if err != nil {
		return nil, err
	}
	return o.seal(buf, off, n, nextHeader)
}

// check validates Seal's arguments and returns the Next Header to send.
func (o *Outbound) check(buf []byte, off, n int, nextHeader byte) (byte, error) {
	if off < ESPHeaderLen+o.a.ivLen || n < 0 || off > len(buf) || n > len(buf)-off {
		return 0, ErrNoRoom
	}
	if o.mode == Tunnel {
		if n == 0 {
			return 0, ErrNotIP
		}
		switch buf[off] >> 4 {
		case 4:
			return NextHeaderIPv4, nil
		case 6:
			return NextHeaderIPv6, nil
		default:
			return 0, ErrNotIP
		}
	}
	return nextHeader, nil
}

// SealDummy builds an RFC 4303 §2.6 dummy packet (Next Header 59, no
// payload) at buf[off:], in either mode: authenticated like any packet, and
// dropped by the receiver after the check (Open returns ErrDummy). A data
// plane sends one to prove liveness from its current address, which an
// unauthenticated NAT-keepalive cannot (RFC 3948 §2.3).
func (o *Outbound) SealDummy(buf []byte, off int) ([]byte, error) {
	if off < ESPHeaderLen+o.a.ivLen || off > len(buf) {
		return nil, ErrNoRoom
	}
	return o.seal(buf, off, 0, NextHeaderNone)
}

func (o *Outbound) seal(buf []byte, off, n int, nextHeader byte) ([]byte, error) {
	if o.sealEnd(off, n) > len(buf) {
		return nil, ErrNoRoom
	}
	seq := o.seq.Add(1)
	if !o.seqOK(seq) {
		return nil, ErrSeqExhausted
	}
	return o.sealSeq(buf, off, n, o.a.padLen(n), nextHeader, seq), nil
}

// sealEnd is where the sealed packet of a payload at buf[off:off+n] ends.
func (o *Outbound) sealEnd(off, n int) int {
	return off + n + o.a.padLen(n) + TrailerLen + o.a.icvLen
}

// MaxPad is the most extra padding (SealJob.Pad) an n-byte payload can
// take: the RFC 4303 §2.4 Pad Length octet holds at most 255, and the
// padding stays a multiple of the cipher's alignment.
func (o *Outbound) MaxPad(n int) int {
	a := o.a
	return (255 - a.padLen(n)) / a.align * a.align
}

// seqOK reports whether seq may be sent: sequence numbers never cycle
// (RFC 4303 §3.3.3), a 32-bit one stops at 2^32-1.
func (o *Outbound) seqOK(seq uint64) bool {
	return seq != 0 && (o.esn || seq <= math.MaxUint32)
}

// frame writes the ESP header and the trailer (padding, pad length, next
// header) of a payload at buf[off:off+n] and returns the whole packet and
// the plaintext to encrypt (payload and trailer). buf must be long enough
// (sealEnd).
func (o *Outbound) frame(buf []byte, off, n, pad int, nextHeader byte, seq uint64) (p, pt []byte) {
	a := o.a
	ptEnd := off + n + pad + TrailerLen
	end := ptEnd + a.icvLen
	p = buf[off-ESPHeaderLen-a.ivLen : end : end]
	binary.BigEndian.PutUint32(p[0:4], uint32(o.spi))
	binary.BigEndian.PutUint32(p[4:8], uint32(seq))
	t := buf[off+n : ptEnd]
	for i := range pad {
		t[i] = byte(i + 1)
	}
	t[pad] = byte(pad)
	t[pad+1] = nextHeader
	return p, buf[off:ptEnd]
}

// sealSeq seals with the given sequence number; the arguments are checked.
func (o *Outbound) sealSeq(buf []byte, off, n, pad int, nextHeader byte, seq uint64) []byte {
	a := o.a
	hdr := ESPHeaderLen + a.ivLen
	p, pt := o.frame(buf, off, n, pad, nextHeader, seq)
	ptEnd := off + len(pt)
	start := off - hdr

	st := o.getState()
	if a.aead != nil {
		nonce := st.scratch[0:12]
		copy(nonce, a.salt[:])
		// IV = seq XOR a random per-SA mask: unique per packet like the
		// bare counter RFC 4106 §3.1 allows, but not repeated by another SA
		// that shares the key (TS 33.203 derives one key for all the SAs of
		// a registration, and each of them starts at sequence number 1).
		binary.BigEndian.PutUint64(nonce[4:], seq^o.ivMask)
		if o.testIV != nil {
			copy(nonce[4:], o.testIV)
		}
		copy(p[ESPHeaderLen:hdr], nonce[4:])
		aad := p[0:ESPHeaderLen]
		if o.esn {
			aad = esnAAD(st.scratch[16:28], o.spi, seq)
		}
		a.aead.Seal(pt[:0], nonce, pt, aad)
	} else {
		if a.cbcSize > 0 {
			iv := p[ESPHeaderLen:hdr]
			o.cbcIV(iv, seq, st.scratch[:])
			if c := a.cbc(); c != nil {
				c.EncryptCBC(pt, pt, iv)
			} else {
				st.cbc.SetIV(iv)
				st.cbc.CryptBlocks(pt, pt)
			}
		}
		if a.macHash != nil {
			sum := o.mac(st, p[:ptEnd-start], seq)
			copy(p[ptEnd-start:], sum[:a.icvLen])
		}
	}
	o.putState(st)
	return p
}

// ivKey is the AES key CBC IVs are made with: random, made once per
// process and shared by every outbound SA (an SA's own would cost a key
// schedule per SA, and a P-CSCF holds three outbound SAs per UE).
var ivKey = sync.OnceValues(func() (*aescbc.Cipher, error) {
	var k [16]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("esp: IV key: %w", err)
	}
	return aescbc.New(k[:])
})

// cbcIV writes the CBC IV of sequence number seq: AES_K'(seq || nonce),
// with K' the process's random ivKey and nonce random per SA. It is unique
// within the SA because the sequence number is (AES is a permutation), and
// unpredictable without K' (RFC 3602 §3 asks for both); the nonce keeps
// SAs with equal sequence numbers from sharing IVs. A CBC encryption of one
// block with a zero IV is that one AES encryption. A 3DES IV is the first
// 8 bytes of the block, made in scratch (16 bytes).
func (o *Outbound) cbcIV(iv []byte, seq uint64, scratch []byte) {
	if o.testIV != nil {
		copy(iv, o.testIV)
		return
	}
	if len(iv) < AESBlockSize {
		b := scratch[:AESBlockSize]
		ivBlock(b, seq, o.ivNonce)
		o.ivCipher.EncryptCBC(b, b, zeroIV[:])
		copy(iv, b)
		return
	}
	ivBlock(iv, seq, o.ivNonce)
	o.ivCipher.EncryptCBC(iv, iv, zeroIV[:])
}

// ivBlock writes the block that cbcIV encrypts: seq, then the SA's nonce.
func ivBlock(iv []byte, seq, nonce uint64) {
	binary.BigEndian.PutUint64(iv[0:8], seq)
	binary.BigEndian.PutUint64(iv[8:16], nonce)
}

// zeroIV chains the single-block CBC encryptions that make CBC IVs.
var zeroIV [AESBlockSize]byte

// esnAAD writes the RFC 4106 §5 AAD for extended sequence numbers: SPI,
// high 32 bits, low 32 bits.
func esnAAD(b []byte, spi SPI, seq uint64) []byte {
	binary.BigEndian.PutUint32(b[0:4], uint32(spi))
	binary.BigEndian.PutUint64(b[4:12], seq)
	return b[:12]
}

// Inbound is the receiving side of an SA. Open is safe for concurrent use.
type Inbound struct {
	sa
	win window
}

// NewInbound validates c and returns the receiving side of the SA.
func NewInbound(c Config) (*Inbound, error) {
	return newInbound(c, false)
}

func newInbound(c Config, allowNoAuth bool) (*Inbound, error) {
	in := &Inbound{}
	if err := in.init(&c, true, allowNoAuth); err != nil {
		return nil, err
	}
	w := c.ReplayWindow
	if w == 0 {
		w = DefaultReplayWindow
	}
	in.win.init(w, c.ESN)
	return in, nil
}

// Highest returns the highest authenticated sequence number received (0 before any).
func (in *Inbound) Highest() uint64 { return in.win.top.Load() }

// Window returns the effective anti-replay window size in packets.
func (in *Inbound) Window() int { return int(in.win.size) }

// Open checks, authenticates and decrypts the ESP packet pkt in place and
// returns the payload (a sub-slice of pkt), its Next Header and the full
// (ESN-inferred) sequence number.
//
// The order is: length and SPI; the replay window (cheap, before any
// crypto); the ICV in constant time (before decrypting); decryption; the
// padding, which must be 1, 2, 3, ... (RFC 4303 §2.4: the receiver SHOULD
// inspect it; we reject anything else with ErrBadPadding); the Next Header
// (tunnel mode: 4 or 41 matching the inner IP version); and only then the
// window moves. An authentic dummy packet (Next Header 59) moves the window
// and returns ErrDummy. On any error the packet is garbage and the window
// has not moved (except ErrDummy).
func (in *Inbound) Open(pkt []byte) (payload []byte, nextHeader byte, seq uint64, err error) {
	seq, err = in.precheck(pkt)
	if err != nil {
		return nil, 0, 0, err
	}
	a := in.a
	st := in.getState()
	if a.aead != nil {
		err = in.openAEAD(pkt, seq, st)
	} else if a.macHash != nil {
		sum := in.mac(st, pkt[:len(pkt)-a.icvLen], seq)
		err = in.verify(pkt, sum)
	}
	if err == nil && a.aead == nil {
		in.decrypt(pkt, st)
	}
	in.putState(st)
	if err != nil {
		return nil, 0, 0, err
	}
	payload, nextHeader, err = in.finish(pkt, seq)
	return payload, nextHeader, seq, err
}

// precheck makes Open's checks that need no crypto: length, SPI and the
// replay window (not moved). It returns the full sequence number.
func (in *Inbound) precheck(pkt []byte) (uint64, error) {
	a := in.a
	hdr := ESPHeaderLen + a.ivLen
	if len(pkt) < hdr+TrailerLen+a.icvLen {
		return 0, ErrShort
	}
	if a.cbcSize > 0 && (len(pkt)-hdr-a.icvLen)%a.cbcSize != 0 {
		return 0, ErrBadLength
	}
	if SPI(binary.BigEndian.Uint32(pkt[0:4])) != in.spi {
		return 0, ErrUnknownSPI
	}
	seq, ok := in.win.check(binary.BigEndian.Uint32(pkt[4:8]))
	if !ok {
		return 0, ErrReplay
	}
	return seq, nil
}

// openAEAD authenticates and decrypts a GCM packet in place.
func (in *Inbound) openAEAD(pkt []byte, seq uint64, st *state) error {
	a := in.a
	hdr := ESPHeaderLen + a.ivLen
	nonce := st.scratch[0:12]
	copy(nonce, a.salt[:])
	copy(nonce[4:], pkt[ESPHeaderLen:hdr])
	aad := pkt[0:ESPHeaderLen]
	if in.esn {
		aad = esnAAD(st.scratch[16:28], in.spi, seq)
	}
	ct := pkt[hdr : len(pkt)-a.icvLen]
	if _, err := a.aead.Open(ct[:0], nonce, pkt[hdr:], aad); err != nil {
		return ErrAuth
	}
	return nil
}

// mac computes the full HMAC of msg (and, with ESN, the high 32 bits of
// seq, RFC 4303 §2.2.1) in st.scratch.
func (s *sa) mac(st *state, msg []byte, seq uint64) []byte {
	if k := s.a.hmacSHA1(); k != nil {
		sum := (*[hmacsha1.Size]byte)(st.scratch[:hmacsha1.Size])
		k.Sum(sum, msg, s.esnTail(st.scratch[hmacsha1.Size:], seq))
		return sum[:]
	}
	st.mac.Reset()
	st.mac.Write(msg)
	st.mac.Write(s.esnTail(st.scratch[:], seq))
	return st.mac.Sum(st.scratch[:0])
}

// esnTail writes into b what follows the packet in the ICV input: with
// ESN the high 32 bits of seq (RFC 4303 §2.2.1), else nothing.
func (s *sa) esnTail(b []byte, seq uint64) []byte {
	if !s.esn {
		return nil
	}
	binary.BigEndian.PutUint32(b[:4], uint32(seq>>32))
	return b[:4]
}

// verify compares the packet's ICV with sum, truncated, in constant time.
func (in *Inbound) verify(pkt, sum []byte) error {
	icv := len(pkt) - in.a.icvLen
	if !hmac.Equal(sum[:in.a.icvLen], pkt[icv:]) {
		return ErrAuth
	}
	return nil
}

// decrypt decrypts a CBC packet's ciphertext in place (nothing for null).
func (in *Inbound) decrypt(pkt []byte, st *state) {
	a := in.a
	hdr := ESPHeaderLen + a.ivLen
	ct := pkt[hdr : len(pkt)-a.icvLen]
	if c := a.cbc(); c != nil {
		c.DecryptCBC(ct, ct, pkt[ESPHeaderLen:hdr])
	} else if a.cbcSize > 0 {
		st.cbc.SetIV(pkt[ESPHeaderLen:hdr])
		st.cbc.CryptBlocks(ct, ct)
	}
}

// finish checks the decrypted trailer of an authentic packet and moves the
// window: Open's last steps.
func (in *Inbound) finish(pkt []byte, seq uint64) (payload []byte, nh byte, err error) {
	ct := pkt[ESPHeaderLen+in.a.ivLen : len(pkt)-in.a.icvLen]
	padLen := int(ct[len(ct)-2])
	nh = ct[len(ct)-1]
	if padLen+TrailerLen > len(ct) {
		return nil, 0, ErrBadPadding
	}
	n := len(ct) - TrailerLen - padLen
	for i, b := range ct[n : n+padLen] {
		if b != byte(i+1) {
			return nil, 0, ErrBadPadding
		}
	}
	payload = ct[:n:n]
	if in.mode == Tunnel && nh != NextHeaderNone {
		if n == 0 {
			return nil, 0, ErrBadNextHeader
		}
		v := payload[0] >> 4
		if !(nh == NextHeaderIPv4 && v == 4) && !(nh == NextHeaderIPv6 && v == 6) {
			return nil, 0, ErrBadNextHeader
		}
	}
	if !in.win.update(seq) {
		return nil, 0, ErrReplay
	}
	if nh == NextHeaderNone {
		return nil, nh, ErrDummy
	}
	return payload, nh, nil
}

// PacketSPI returns the SPI of an ESP packet (its first four octets).
func PacketSPI(pkt []byte) (SPI, error) {
	if len(pkt) < ESPHeaderLen {
		return 0, ErrShort
	}
	return SPI(binary.BigEndian.Uint32(pkt)), nil
}
