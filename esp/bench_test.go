package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"fmt"
	"hash"
	"testing"

	"github.com/imsec/imsec/esp/internal/aescbc"
)

var benchSizes = []int{64, 512, 1400, 8000}

func benchPairs(b *testing.B, f func(b *testing.B, p pair, n int)) {
	for _, p := range allPairs {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%v/%d", p, n), func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				f(b, p, n)
			})
		}
	}
}

// BenchmarkSeal seals an n-byte payload in place (transport mode, so the
// ciphertext left by the previous round is a valid payload).
func BenchmarkSeal(b *testing.B) {
	benchPairs(b, func(b *testing.B, p pair, n int) {
		o, _ := mustSA(b, p.config(Transport, false))
		buf := make([]byte, HeaderRoom+n+TailRoom)
		for b.Loop() {
			if _, err := o.Seal(buf, HeaderRoom, n, 17); err != nil {
				b.Fatal(err)
			}
			if o.seq.Load() > 1<<31 {
				o.seq.Store(0)
			}
		}
	})
}

// BenchmarkOpen opens an n-byte payload's packet in place. Each round
// restores the packet (one copy, also in the baseline) and forgets the
// sequence number in the window.
func BenchmarkOpen(b *testing.B) {
	benchPairs(b, func(b *testing.B, p pair, n int) {
		o, in := mustSA(b, p.config(Transport, false))
		tmpl := append([]byte(nil), seal(b, o, make([]byte, n), 17)...)
		pkt := make([]byte, len(tmpl))
		for b.Loop() {
			copy(pkt, tmpl)
			in.win.top.Store(0)
			if in.win.bits != nil { // nil before the first packet
				in.win.bits[0].Store(0)
			}
			if _, _, _, err := in.Open(pkt); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// baseline holds the raw standard-library primitives doing the same work
// as Seal/Open on the same bytes: CBC with a reused BlockMode plus HMAC
// reset per packet, or one GCM call.
type baseline struct {
	enc, dec interface {
		CryptBlocks(dst, src []byte)
		SetIV([]byte)
	}
	aesCBC *aescbc.Cipher // set for the "primitives" variant
	mac    hash.Hash
	icv    int
	aead   cipher.AEAD
	sum    [64]byte
}

func newBaseline(b *testing.B, p pair, ours bool) *baseline {
	c := p.config(Transport, false)
	bl := &baseline{}
	switch p.enc {
	case EncAESCBC, EncDES3CBC:
		var blk cipher.Block
		if p.enc == EncAESCBC {
			blk, _ = aes.NewCipher(c.EncKey)
		} else {
			blk, _ = des.NewTripleDESCipher(c.EncKey)
		}
		iv := make([]byte, blk.BlockSize())
		bl.enc = cipher.NewCBCEncrypter(blk, iv).(interface {
			CryptBlocks(dst, src []byte)
			SetIV([]byte)
		})
		bl.dec = cipher.NewCBCDecrypter(blk, iv).(interface {
			CryptBlocks(dst, src []byte)
			SetIV([]byte)
		})
		if ours && p.enc == EncAESCBC {
			bl.aesCBC, _ = aescbc.New(c.EncKey)
		}
	case EncAESGCM:
		blk, _ := aes.NewCipher(c.EncKey[:len(c.EncKey)-4])
		bl.aead, _ = cipher.NewGCM(blk)
	}
	if h, icv := macHash(p.auth); h != nil {
		bl.mac, bl.icv = hmac.New(h, c.AuthKey), icv
	}
	return bl
}

// BenchmarkBaselineSeal: the raw standard-library primitives doing Seal's
// work on the same bytes: encrypt the padded payload, MAC
// header+IV+ciphertext (or one GCM seal).
func BenchmarkBaselineSeal(b *testing.B) { benchPairs(b, baselineSeal(false)) }

// BenchmarkPrimitivesSeal is BenchmarkBaselineSeal with the AES-CBC that
// Seal really uses (esp/internal/aescbc); Seal's own overhead is the gap
// between the two. Only AES-CBC pairs differ from the baseline.
func BenchmarkPrimitivesSeal(b *testing.B) { benchPairs(b, baselineSeal(true)) }

func baselineSeal(ours bool) func(b *testing.B, p pair, n int) {
	return func(b *testing.B, p pair, n int) {
		if ours && p.enc != EncAESCBC {
			b.Skip("same as BenchmarkBaselineSeal")
		}
		bl := newBaseline(b, p, ours)
		o, _ := mustSA(b, p.config(Transport, false))
		hdr := o.HeaderLen()
		ptLen := n + o.a.padLen(n) + TrailerLen
		buf := make([]byte, hdr+ptLen+16)
		pt := buf[hdr : hdr+ptLen]
		var nonce [12]byte
		for b.Loop() {
			if bl.aead != nil {
				bl.aead.Seal(pt[:0], nonce[:], pt, buf[:8])
				continue
			}
			if bl.aesCBC != nil {
				bl.aesCBC.EncryptCBC(pt, pt, buf[8:hdr])
			} else if bl.enc != nil {
				bl.enc.SetIV(buf[8:hdr])
				bl.enc.CryptBlocks(pt, pt)
			}
			bl.mac.Reset()
			bl.mac.Write(buf[:hdr+ptLen])
			copy(buf[hdr+ptLen:], bl.mac.Sum(bl.sum[:0])[:bl.icv])
		}
	}
}

// BenchmarkBaselineOpen: the raw standard-library primitives doing Open's
// work: copy the packet, MAC it, decrypt it (or one GCM open).
func BenchmarkBaselineOpen(b *testing.B) { benchPairs(b, baselineOpen(false)) }

// BenchmarkPrimitivesOpen is BenchmarkBaselineOpen with esp/internal/aescbc.
func BenchmarkPrimitivesOpen(b *testing.B) { benchPairs(b, baselineOpen(true)) }

func baselineOpen(ours bool) func(b *testing.B, p pair, n int) {
	return func(b *testing.B, p pair, n int) {
		if ours && p.enc != EncAESCBC {
			b.Skip("same as BenchmarkBaselineOpen")
		}
		bl := newBaseline(b, p, ours)
		c := p.config(Transport, false)
		o, _ := mustSA(b, c)
		hdr := o.HeaderLen()
		ptLen := n + o.a.padLen(n) + TrailerLen
		var nonce [12]byte
		copy(nonce[:], c.EncKey[len(c.EncKey)-min(4, len(c.EncKey)):])
		tmpl := make([]byte, hdr+ptLen+o.a.icvLen)
		if bl.aead != nil {
			copy(nonce[4:], tmpl[8:16])
			bl.aead.Seal(tmpl[hdr:hdr], nonce[:], tmpl[hdr:hdr+ptLen], tmpl[:8])
		}
		pkt := make([]byte, len(tmpl))
		for b.Loop() {
			copy(pkt, tmpl)
			ct := pkt[hdr : hdr+ptLen]
			if bl.aead != nil {
				if _, err := bl.aead.Open(ct[:0], nonce[:], pkt[hdr:], pkt[:8]); err != nil {
					b.Fatal(err)
				}
				continue
			}
			bl.mac.Reset()
			bl.mac.Write(pkt[:hdr+ptLen])
			if hmac.Equal(bl.mac.Sum(bl.sum[:0])[:bl.icv], pkt[hdr+ptLen:]) {
				b.Fatal("zero packet authenticated")
			}
			if bl.aesCBC != nil {
				bl.aesCBC.DecryptCBC(ct, ct, pkt[8:hdr])
			} else if bl.dec != nil {
				bl.dec.SetIV(pkt[8:hdr])
				bl.dec.CryptBlocks(ct, ct)
			}
		}
	}
}

// BenchmarkParallelSeal seals on every P at once on one SA: the cost of
// sharing the sequence counter and the state pool.
func BenchmarkParallelSeal(b *testing.B) {
	for _, p := range []pair{allPairs[3], allPairs[10]} {
		b.Run(fmt.Sprintf("%v/1400", p), func(b *testing.B) {
			o, _ := mustSA(b, p.config(Transport, true))
			b.SetBytes(1400)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, HeaderRoom+1400+TailRoom)
				for pb.Next() {
					if _, err := o.Seal(buf, HeaderRoom, 1400, 17); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func BenchmarkClassify(b *testing.B) {
	pkt := []byte{0, 0, 0x10, 0, 0, 0, 0, 1, 2, 3}
	for b.Loop() {
		if Classify(pkt) != KindESP {
			b.Fatal()
		}
	}
}
