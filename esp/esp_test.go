package esp

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

type pair struct {
	enc    EncAlg
	encLen int
	auth   AuthAlg
}

func (p pair) String() string {
	if p.enc == EncAESGCM || p.enc == EncAESCBC {
		return fmt.Sprintf("%s-%d/%s", p.enc, (p.encLen/8)*64, p.auth)
	}
	return fmt.Sprintf("%s/%s", p.enc, p.auth)
}

// allPairs is every algorithm pair we accept, with the key sizes we care about.
var allPairs = []pair{
	{EncNull, 0, AuthHMACSHA196}, {EncNull, 0, AuthHMACMD596}, {EncNull, 0, AuthHMACSHA256128},
	{EncAESCBC, 16, AuthHMACSHA196}, {EncAESCBC, 16, AuthHMACMD596}, {EncAESCBC, 16, AuthHMACSHA256128},
	{EncAESCBC, 32, AuthHMACSHA256128},
	{EncDES3CBC, 24, AuthHMACSHA196}, {EncDES3CBC, 24, AuthHMACMD596}, {EncDES3CBC, 24, AuthHMACSHA256128},
	{EncAESGCM, 16 + 4, AuthNull}, {EncAESGCM, 32 + 4, AuthNull},
}

func keyBytes(n int, seed byte) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = seed + byte(i)*7
	}
	return k
}

func (p pair) config(mode Mode, esn bool) Config {
	return Config{SPI: 0xC0FFEE01, Mode: mode, Encryption: p.enc, EncKey: keyBytes(p.encLen, 1),
		Integrity: p.auth, AuthKey: keyBytes(AuthKeyLen(p.auth), 100), ESN: esn}
}

func mustSA(t testing.TB, c Config) (*Outbound, *Inbound) {
	t.Helper()
	o, err := NewOutbound(c)
	if err != nil {
		t.Fatal(err)
	}
	in, err := NewInbound(c)
	if err != nil {
		t.Fatal(err)
	}
	return o, in
}

// ipPayload is an n-byte payload that passes as an IP packet of version v
// in tunnel mode (only the version nibble matters to ESP).
func ipPayload(n int, v byte, r *rand.Rand) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if n > 0 {
		b[0] = v<<4 | b[0]&0x0f
	}
	return b
}

func seal(t testing.TB, o *Outbound, payload []byte, nh byte) []byte {
	t.Helper()
	buf := make([]byte, HeaderRoom+len(payload)+TailRoom)
	copy(buf[HeaderRoom:], payload)
	p, err := o.Seal(buf, HeaderRoom, len(payload), nh)
	if err != nil {
		t.Fatalf("Seal(%d bytes): %v", len(payload), err)
	}
	return p
}

// sealPadded seals payload with SealBatch and pad bytes of extra padding.
func sealPadded(t testing.TB, o *Outbound, payload []byte, nh byte, pad int) []byte {
	t.Helper()
	buf := make([]byte, HeaderRoom+len(payload)+TailRoom+pad)
	copy(buf[HeaderRoom:], payload)
	jobs := []SealJob{{Buf: buf, Off: HeaderRoom, N: len(payload), NextHeader: nh, Pad: pad}}
	if o.SealBatch(jobs) != 1 {
		t.Fatalf("SealBatch(%d bytes, pad %d): %v", len(payload), pad, jobs[0].Err)
	}
	return jobs[0].Pkt
}

// refSeal is a slow, obvious ESP encapsulation written straight from
// RFC 4303/3602/2451/4106 with the standard library, independent of Seal.
// pt is the ESP plaintext: payload, padding, pad length, next header.
func refSeal(t testing.TB, c Config, seq uint64, iv, pt []byte) []byte {
	t.Helper()
	hdr := binary.BigEndian.AppendUint32(nil, uint32(c.SPI))
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(seq))
	var body []byte
	switch c.Encryption {
	case EncNull:
		body = append([]byte(nil), pt...)
	case EncAESCBC, EncDES3CBC:
		var b cipher.Block
		var err error
		if c.Encryption == EncAESCBC {
			b, err = aes.NewCipher(c.EncKey)
		} else {
			b, err = des.NewTripleDESCipher(c.EncKey)
		}
		if err != nil {
			t.Fatal(err)
		}
		body = append(append([]byte(nil), iv...), pt...)
		cipher.NewCBCEncrypter(b, iv).CryptBlocks(body[len(iv):], body[len(iv):])
	case EncAESGCM:
		k := len(c.EncKey) - 4
		b, _ := aes.NewCipher(c.EncKey[:k])
		g, _ := cipher.NewGCM(b)
		nonce := append(append([]byte(nil), c.EncKey[k:]...), iv...)
		aad := hdr
		if c.ESN {
			aad = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(c.SPI)), uint32(seq>>32))
			aad = binary.BigEndian.AppendUint32(aad, uint32(seq))
		}
		return append(append(hdr, iv...), g.Seal(nil, nonce, pt, aad)...)
	}
	pkt := append(hdr, body...)
	if h, icv := macHash(c.Integrity); h != nil {
		m := hmac.New(h, c.AuthKey)
		m.Write(pkt)
		if c.ESN {
			m.Write(binary.BigEndian.AppendUint32(nil, uint32(seq>>32)))
		}
		pkt = append(pkt, m.Sum(nil)[:icv]...)
	}
	return pkt
}

// espPlaintext builds payload || 1,2,...,pad || pad || nh.
func espPlaintext(payload []byte, pad int, nh byte) []byte {
	pt := append([]byte(nil), payload...)
	for i := 1; i <= pad; i++ {
		pt = append(pt, byte(i))
	}
	return append(pt, byte(pad), nh)
}

func ivOf(c Config, pkt []byte) []byte {
	n := map[EncAlg]int{EncNull: 0, EncAESCBC: 16, EncDES3CBC: 8, EncAESGCM: 8}[c.Encryption]
	return pkt[8 : 8+n]
}

// TestSealMatchesReference checks Seal against refSeal and Open against
// both, for every pair, mode, ESN setting and payload sizes 0..80 plus
// some large ones, and that Overhead, HeaderLen and the padding are exact.
func TestSealMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, p := range allPairs {
		for _, mode := range []Mode{Transport, Tunnel} {
			for _, esn := range []bool{false, true} {
				c := p.config(mode, esn)
				o, in := mustSA(t, c)
				if esn {
					o.seq.Store(math.MaxUint32 - 40) // cross into the second 2^32 subspace
					in.win.top.Store(math.MaxUint32 - 40)
				}
				sizes := []int{1000, 1400, 1500, 8000}
				for n := range 81 {
					sizes = append(sizes, n)
				}
				for _, n := range sizes {
					if mode == Tunnel && n == 0 {
						continue
					}
					v := byte(4 + 2*(n%2)) // alternate IPv4 and IPv6
					payload := ipPayload(n, v, r)
					nh := byte(17)
					wantNH := nh
					if mode == Tunnel {
						wantNH = map[byte]byte{4: 4, 6: 41}[v]
					}
					pkt := seal(t, o, payload, nh)
					seq := o.Seq()
					if len(pkt) != n+o.Overhead(n) {
						t.Fatalf("%v n=%d: len %d, Overhead says %d", p, n, len(pkt), n+o.Overhead(n))
					}
					pad := o.Overhead(n) - o.HeaderLen() - TrailerLen - o.a.icvLen
					if (n+pad+TrailerLen)%o.a.align != 0 || pad >= o.a.align {
						t.Fatalf("%v n=%d: padding %d is not minimal to %d", p, n, pad, o.a.align)
					}
					ref := refSeal(t, c, seq, ivOf(c, pkt), espPlaintext(payload, pad, wantNH))
					if !bytes.Equal(pkt, ref) {
						t.Fatalf("%v %v esn=%v n=%d: Seal\n%x\nreference\n%x", p, mode, esn, n, pkt, ref)
					}
					got, gotNH, gotSeq, err := in.Open(pkt)
					if err != nil || gotNH != wantNH || gotSeq != seq || !bytes.Equal(got, payload) {
						t.Fatalf("%v %v esn=%v n=%d: Open = %d, %d, %v", p, mode, esn, n, gotNH, gotSeq, err)
					}
					if n > 0 && &got[0] != &pkt[o.HeaderLen()] {
						t.Fatalf("%v: payload is not in place", p)
					}
				}
			}
		}
	}
}

// TestIVs checks that IVs never repeat, within an SA or across two SAs
// with the same key (TS 33.203 gives every SA of a registration the same
// keys): for CBC they must differ per packet, for GCM the nonce must.
func TestIVs(t *testing.T) {
	for _, p := range allPairs {
		if p.enc == EncNull {
			continue
		}
		seen := map[string]bool{}
		for range 2 {
			c := p.config(Transport, false)
			o, _ := mustSA(t, c)
			for range 300 {
				iv := string(ivOf(c, seal(t, o, []byte("x"), 17)))
				if seen[iv] {
					t.Fatalf("%v: IV %x repeated", p, iv)
				}
				seen[iv] = true
			}
		}
	}
}

// TestTamper flips every bit of a packet, header to ICV, and requires
// rejection, then checks that the untouched packet still opens (the
// window did not move) and that a second copy is a replay.
func TestTamper(t *testing.T) {
	for _, p := range allPairs {
		c := p.config(Transport, false)
		o, in := mustSA(t, c)
		payload := []byte("the quick brown fox jumps over the lazy dog")
		pkt := seal(t, o, payload, 6)
		regions := map[string][2]int{"spi": {0, 4}, "seq": {4, 8}, "iv": {8, o.HeaderLen()},
			"ciphertext": {o.HeaderLen(), len(pkt) - o.a.icvLen}, "icv": {len(pkt) - o.a.icvLen, len(pkt)}}
		for name, rg := range regions {
			for i := rg[0]; i < rg[1]; i++ {
				for bit := range 8 {
					bad := append([]byte(nil), pkt...)
					bad[i] ^= 1 << bit
					_, _, _, err := in.Open(bad)
					switch {
					case name == "spi" && err != ErrUnknownSPI,
						name == "seq" && err != ErrAuth && err != ErrReplay,
						name != "spi" && name != "seq" && err != ErrAuth:
						t.Fatalf("%v: flipping %s byte %d bit %d: err = %v", p, name, i, bit, err)
					}
				}
			}
		}
		if got, _, _, err := in.Open(append([]byte(nil), pkt...)); err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("%v: genuine packet after tampering: %v", p, err)
		}
		if _, _, _, err := in.Open(append([]byte(nil), pkt...)); err != ErrReplay {
			t.Fatalf("%v: replayed packet: err = %v, want ErrReplay", p, err)
		}
	}
}

// TestTruncation opens every prefix (and some extensions) of a valid
// packet: each must fail cleanly.
func TestTruncation(t *testing.T) {
	for _, p := range allPairs {
		o, in := mustSA(t, p.config(Tunnel, true))
		pkt := seal(t, o, ipPayload(100, 4, rand.New(rand.NewPCG(3, 4))), 0)
		for n := range len(pkt) {
			if _, _, _, err := in.Open(append([]byte(nil), pkt[:n]...)); err == nil {
				t.Fatalf("%v: prefix of %d/%d bytes opened", p, n, len(pkt))
			}
		}
		for _, extra := range []int{1, 4, 16} {
			long := append(append([]byte(nil), pkt...), make([]byte, extra)...)
			if _, _, _, err := in.Open(long); err == nil {
				t.Fatalf("%v: packet with %d extra bytes opened", p, extra)
			}
		}
		if _, _, _, err := in.Open(pkt); err != nil {
			t.Fatalf("%v: the packet itself: %v", p, err)
		}
	}
}

// TestAuthenticBadTrailers builds authentic packets (right keys, right
// ICV) with wrong padding or next header and requires the right error and
// an unmoved window.
func TestAuthenticBadTrailers(t *testing.T) {
	for _, p := range allPairs {
		for _, tc := range []struct {
			name string
			mode Mode
			pt   func(align int) []byte
			want error
		}{
			{"padding 1,2,4", Transport, func(a int) []byte { return append(bytes.Repeat([]byte{9}, a-5), 1, 2, 4, 3, 17) }, ErrBadPadding},
			{"padding zeros", Transport, func(a int) []byte { return append(bytes.Repeat([]byte{9}, a-4), 0, 0, 2, 17) }, ErrBadPadding},
			{"pad length too long", Transport, func(a int) []byte { return append(bytes.Repeat([]byte{1}, a-2), 200, 17) }, ErrBadPadding},
			{"pad length = all", Transport, func(a int) []byte {
				b := espPlaintext(nil, a-2, 17)
				b[a-2]++ // claims one more byte than there is
				return b
			}, ErrBadPadding},
			{"tunnel nh 4, IPv6 inner", Tunnel, func(a int) []byte { return espPlaintext([]byte{0x60, 0, 0, 0, 0, 0}, a-8, 4) }, ErrBadNextHeader},
			{"tunnel nh 41, IPv4 inner", Tunnel, func(a int) []byte { return espPlaintext([]byte{0x45, 0, 0, 0, 0, 0}, a-8, 41) }, ErrBadNextHeader},
			{"tunnel nh 17", Tunnel, func(a int) []byte { return espPlaintext([]byte{0x45, 0, 0, 0, 0, 0}, a-8, 17) }, ErrBadNextHeader},
			{"tunnel empty", Tunnel, func(a int) []byte { return espPlaintext(nil, a-2, 4) }, ErrBadNextHeader},
			{"dummy", Tunnel, func(a int) []byte { return espPlaintext(nil, a-2, NextHeaderNone) }, ErrDummy},
		} {
			c := p.config(tc.mode, false)
			_, in := mustSA(t, c)
			align := in.a.align
			if align < 8 {
				align = 8
			}
			iv := make([]byte, in.a.ivLen)
			pkt := refSeal(t, c, 7, iv, tc.pt(align))
			_, _, _, err := in.Open(pkt)
			if err != tc.want {
				t.Errorf("%v %s: err = %v, want %v", p, tc.name, err, tc.want)
			}
			moved := tc.want == ErrDummy
			if got := in.Highest(); (got == 7) != moved {
				t.Errorf("%v %s: window top = %d after %v", p, tc.name, got, err)
			}
		}
	}
}

// TestLongPadding: a receiver must accept any RFC 4303 padding up to 255.
func TestLongPadding(t *testing.T) {
	for _, p := range allPairs {
		c := p.config(Transport, false)
		_, in := mustSA(t, c)
		payload := []byte("abc")
		pad := 255
		for (len(payload)+pad+2)%in.a.align != 0 {
			pad--
		}
		pkt := refSeal(t, c, 1, make([]byte, in.a.ivLen), espPlaintext(payload, pad, 17))
		got, nh, _, err := in.Open(pkt)
		if err != nil || nh != 17 || !bytes.Equal(got, payload) {
			t.Errorf("%v pad %d: %q %d %v", p, pad, got, nh, err)
		}
	}
}

func TestSealErrors(t *testing.T) {
	c := allPairs[3].config(Tunnel, false) // aes-cbc
	o, _ := mustSA(t, c)
	buf := make([]byte, 200)
	buf[HeaderRoom] = 0x45
	for _, tc := range []struct {
		name   string
		off, n int
		want   error
	}{
		{"no headroom", 10, 20, ErrNoRoom},
		{"no tailroom", HeaderRoom, 200 - HeaderRoom - 5, ErrNoRoom},
		{"payload past end", HeaderRoom, 300, ErrNoRoom},
		{"negative n", HeaderRoom, -1, ErrNoRoom},
		{"off past end", 300, 0, ErrNoRoom},
		{"tunnel empty", HeaderRoom, 0, ErrNotIP},
	} {
		if _, err := o.Seal(buf, tc.off, tc.n, 0); err != tc.want {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	buf[HeaderRoom] = 0x55
	if _, err := o.Seal(buf, HeaderRoom, 20, 0); err != ErrNotIP {
		t.Errorf("version 5: err = %v, want ErrNotIP", err)
	}
	if o.Seq() != 0 {
		t.Errorf("failed Seals used sequence numbers: %d", o.Seq())
	}
	// Exactly enough room works.
	n := 37
	buf = make([]byte, o.HeaderLen()+n+o.Overhead(n)-o.HeaderLen())
	buf[o.HeaderLen()] = 0x45
	if p, err := o.Seal(buf, o.HeaderLen(), n, 0); err != nil || len(p) != len(buf) {
		t.Errorf("exact room: %v", err)
	}
}

func TestSeqExhausted(t *testing.T) {
	for _, esn := range []bool{false, true} {
		o, in := mustSA(t, allPairs[3].config(Transport, esn))
		o.seq.Store(math.MaxUint32 - 2)
		in.win.top.Store(math.MaxUint32 - 3)
		for i := range 5 {
			buf := make([]byte, 100)
			p, err := o.Seal(buf, HeaderRoom, 10, 17)
			want := uint64(math.MaxUint32-1) + uint64(i)
			if !esn && want > math.MaxUint32 {
				if err != ErrSeqExhausted {
					t.Fatalf("esn=%v seal #%d: err = %v, want ErrSeqExhausted", esn, i, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("esn=%v seal #%d: %v", esn, i, err)
			}
			_, _, seq, err := in.Open(p)
			if err != nil || seq != want {
				t.Fatalf("esn=%v open #%d: seq %#x, %v; want %#x", esn, i, seq, err, want)
			}
		}
	}
	o, _ := mustSA(t, allPairs[3].config(Transport, true))
	o.seq.Store(math.MaxUint64)
	if _, err := o.Seal(make([]byte, 100), HeaderRoom, 10, 17); err != ErrSeqExhausted {
		t.Fatalf("ESN wrap: err = %v", err)
	}
}

// TestESNOutOfOrder delivers packets around the 2^32 boundary out of order.
func TestESNOutOfOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, p := range []pair{allPairs[3], allPairs[10]} {
		o, in := mustSA(t, p.config(Transport, true))
		o.seq.Store(math.MaxUint32 - 500)
		in.win.top.Store(math.MaxUint32 - 500)
		var pkts [][]byte
		for range 1000 {
			pkts = append(pkts, seal(t, o, []byte("esn"), 17))
		}
		// Shuffle within a distance well inside the window.
		for i := range pkts {
			j := i + r.IntN(min(200, len(pkts)-i))
			pkts[i], pkts[j] = pkts[j], pkts[i]
		}
		seen := map[uint64]bool{}
		for _, pkt := range pkts {
			_, _, seq, err := in.Open(pkt)
			if err != nil || seen[seq] {
				t.Fatalf("%v: seq %#x: %v", p, seq, err)
			}
			seen[seq] = true
		}
		if in.Highest() != math.MaxUint32+500 {
			t.Fatalf("%v: top %#x", p, in.Highest())
		}
	}
}

func TestConfigErrors(t *testing.T) {
	good := allPairs[3].config(Transport, false)
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"spi 0", func(c *Config) { c.SPI = 0 }, "SPI 0"},
		{"spi reserved", func(c *Config) { c.SPI = 255 }, "reserved"},
		{"mode", func(c *Config) { c.Mode = 0 }, "mode"},
		{"window", func(c *Config) { c.ReplayWindow = -1 }, "replay window"},
		{"window big", func(c *Config) { c.ReplayWindow = MaxReplayWindow + 1 }, "replay window"},
		{"enc", func(c *Config) { c.Encryption = "aes-ctr" }, "unknown encryption"},
		{"auth", func(c *Config) { c.Integrity = "hmac-sha-1" }, "unknown integrity"},
		{"aes key", func(c *Config) { c.EncKey = make([]byte, 15) }, "aes-cbc key is 15 bytes"},
		{"3des key", func(c *Config) { c.Encryption, c.EncKey = EncDES3CBC, make([]byte, 16) }, "des-ede3-cbc key"},
		{"null key", func(c *Config) { c.Encryption, c.EncKey = EncNull, make([]byte, 1) }, "null key"},
		{"gcm key", func(c *Config) {
			c.Encryption, c.EncKey, c.Integrity, c.AuthKey = EncAESGCM, make([]byte, 16), AuthNull, nil
		}, "aes-gcm key"},
		{"sha1 key", func(c *Config) { c.AuthKey = make([]byte, 16) }, "hmac-sha-1-96 key"},
		{"md5 key", func(c *Config) { c.Integrity = AuthHMACMD596 }, "hmac-md5-96 key"},
		{"sha256 key", func(c *Config) { c.Integrity = AuthHMACSHA256128 }, "hmac-sha-256-128 key"},
		{"gcm+hmac", func(c *Config) { c.Encryption, c.EncKey = EncAESGCM, make([]byte, 20) }, "combined-mode"},
		{"cbc+null", func(c *Config) { c.Integrity, c.AuthKey = AuthNull, nil }, "integrity null is not allowed"},
		{"null+null", func(c *Config) { c.Encryption, c.EncKey, c.Integrity, c.AuthKey = EncNull, nil, AuthNull, nil }, "integrity null is not allowed"},
	} {
		c := good
		tc.edit(&c)
		_, err1 := NewOutbound(c)
		_, err2 := NewInbound(c)
		for _, err := range []error{err1, err2} {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
			}
		}
	}
	for _, p := range allPairs {
		if _, err := NewInbound(p.config(Tunnel, true)); err != nil {
			t.Errorf("%v: %v", p, err)
		}
	}
}

func TestReplayWindowConfig(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{0, 1024}, {1, 64}, {64, 64}, {65, 128}, {1000, 1024}, {4096, 4096}, {MaxReplayWindow, MaxReplayWindow}} {
		c := allPairs[0].config(Transport, false)
		c.ReplayWindow = tc.in
		_, in := mustSA(t, c)
		if in.Window() != tc.want {
			t.Errorf("ReplayWindow %d: window %d, want %d", tc.in, in.Window(), tc.want)
		}
	}
}

func TestMaxPayload(t *testing.T) {
	for _, p := range allPairs {
		o, _ := mustSA(t, p.config(Transport, false))
		for size := 0; size < 200; size++ {
			m := o.MaxPayload(size)
			if m >= 0 && m+o.Overhead(m) > size {
				t.Fatalf("%v size %d: MaxPayload %d needs %d", p, size, m, m+o.Overhead(m))
			}
			if m+1+o.Overhead(m+1) <= size {
				t.Fatalf("%v size %d: MaxPayload %d but %d fits", p, size, m, m+1)
			}
		}
	}
}

func TestPacketSPIAndModeString(t *testing.T) {
	if _, err := PacketSPI([]byte{1, 2, 3}); err != ErrShort {
		t.Error(err)
	}
	if s, _ := PacketSPI([]byte{1, 2, 3, 4, 0, 0, 0, 1}); s != 0x01020304 {
		t.Error(s)
	}
	if Tunnel.String() != "tunnel" || Transport.String() != "transport" || Mode(9).String() != "Mode(9)" {
		t.Error("Mode.String")
	}
}

func TestReasons(t *testing.T) {
	errs := []error{ErrShort, ErrBadLength, ErrUnknownSPI, ErrReplay, ErrAuth, ErrBadPadding, ErrBadNextHeader, ErrDummy, ErrSeqExhausted, ErrNoRoom, ErrNotIP}
	seen := map[Reason]bool{}
	for _, err := range errs {
		r := ReasonOf(err)
		if r == ReasonNone || r == ReasonOther || seen[r] || r.String() == "unknown" {
			t.Errorf("%v: reason %v", err, r)
		}
		seen[r] = true
		if !errors.Is(err, err) {
			t.Error("errors.Is")
		}
	}
	if ReasonOf(nil) != ReasonNone || ReasonOf(errors.New("x")) != ReasonOther || Reason(200).String() != "unknown" {
		t.Error("ReasonOf")
	}
	if len(seen) != int(NumReasons)-2 {
		t.Errorf("%d reasons for %d sentinels", NumReasons, len(seen))
	}
	if ErrAuth.Error() != "esp: authentication failed" {
		t.Error(ErrAuth)
	}
}

// TestNoAllocs is the allocation budget: Seal and Open allocate nothing
// per packet, for every pair.
func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race; run without -race to check the budget")
	}
	for _, p := range allPairs {
		for _, esn := range []bool{false, true} {
			o, in := mustSA(t, p.config(Tunnel, esn))
			payload := ipPayload(1400, 4, rand.New(rand.NewPCG(7, 8)))
			buf := make([]byte, HeaderRoom+len(payload)+TailRoom)
			pkts := make([][]byte, 0, 200)
			for range 200 {
				copy(buf[HeaderRoom:], payload)
				pkt, _ := o.Seal(buf, HeaderRoom, len(payload), 0)
				pkts = append(pkts, append([]byte(nil), pkt...))
			}
			if a := testing.AllocsPerRun(100, func() {
				copy(buf[HeaderRoom:], payload)
				if _, err := o.Seal(buf, HeaderRoom, len(payload), 0); err != nil {
					t.Fatal(err)
				}
			}); a != 0 {
				t.Errorf("%v esn=%v: Seal allocates %v per packet", p, esn, a)
			}
			i := 0
			if a := testing.AllocsPerRun(100, func() {
				if _, _, _, err := in.Open(pkts[i]); err != nil {
					t.Fatal(err)
				}
				i++
			}); a != 0 {
				t.Errorf("%v esn=%v: Open allocates %v per packet", p, esn, a)
			}
			bad := append([]byte(nil), pkts[len(pkts)-1]...)
			bad[len(bad)-1] ^= 1
			if a := testing.AllocsPerRun(100, func() {
				if _, _, _, err := in.Open(bad); err != ErrAuth {
					t.Fatal(err)
				}
			}); a != 0 {
				t.Errorf("%v esn=%v: failing Open allocates %v per packet", p, esn, a)
			}
		}
	}
}

// TestConcurrent seals on several goroutines and opens on several others
// (run with -race): every sequence number is used once and every packet
// opens exactly once.
func TestConcurrent(t *testing.T) {
	for _, p := range []pair{allPairs[3], allPairs[10], allPairs[7]} {
		c := p.config(Tunnel, false)
		c.ReplayWindow = 4096 // > G*N: sealers may deliver late, never out of the window
		o, in := mustSA(t, c)
		const G, N = 4, 300
		ch := make(chan []byte, G*N)
		var wg sync.WaitGroup
		for g := range G {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), 9))
				for range N {
					payload := ipPayload(1+r.IntN(300), 6, r)
					buf := make([]byte, HeaderRoom+len(payload)+TailRoom)
					copy(buf[HeaderRoom:], payload)
					pkt, err := o.Seal(buf, HeaderRoom, len(payload), 0)
					if err != nil {
						t.Error(err)
						return
					}
					ch <- pkt
				}
			}()
		}
		wg.Wait()
		close(ch)
		var all [][]byte
		for pkt := range ch {
			all = append(all, pkt, append([]byte(nil), pkt...)) // each twice: one must be a replay
		}
		var mu sync.Mutex
		seen := map[uint64]int{}
		replays := 0
		work := make(chan []byte)
		for range G {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for pkt := range work {
					_, _, seq, err := in.Open(pkt)
					mu.Lock()
					switch err {
					case nil:
						seen[seq]++
					case ErrReplay:
						replays++
					default:
						t.Error(err)
					}
					mu.Unlock()
				}
			}()
		}
		for _, pkt := range all {
			work <- pkt
		}
		close(work)
		wg.Wait()
		if len(seen) != G*N || replays != G*N {
			t.Fatalf("%v: %d distinct seqs opened, %d replays; want %d each", p, len(seen), replays, G*N)
		}
		for seq, n := range seen {
			if n != 1 || seq == 0 || seq > G*N {
				t.Fatalf("%v: seq %d opened %d times", p, seq, n)
			}
		}
	}
}
