package hmacsha1

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// want is HMAC-SHA1(key, msg || tail) from crypto/hmac.
func want(key, msg, tail []byte) []byte {
	m := hmac.New(sha1.New, key)
	m.Write(msg)
	m.Write(tail)
	return m.Sum(nil)
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// keyLens are the key lengths tested: empty, shorter than, equal to and
// longer than the 20-byte digest and the 64-byte block.
var keyLens = []int{0, 1, 20, 63, 64, 65, 100, 200}

func TestRFC2202(t *testing.T) {
	vectors := []struct {
		src       string
		key, data []byte
		digest    string
	}{
		{
			src:    "RFC 2202 section 3, test_case 1",
			key:    bytes.Repeat([]byte{0x0b}, 20),
			data:   []byte("Hi There"),
			digest: "b617318655057264e28bc0b6fb378c8ef146be00",
		},
		{
			src:    "RFC 2202 section 3, test_case 2",
			key:    []byte("Jefe"),
			data:   []byte("what do ya want for nothing?"),
			digest: "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
		},
		{
			src:    "RFC 2202 section 3, test_case 3",
			key:    bytes.Repeat([]byte{0xaa}, 20),
			data:   bytes.Repeat([]byte{0xdd}, 50),
			digest: "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
		},
		{
			src:    "RFC 2202 section 3, test_case 4",
			key:    unhex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
			data:   bytes.Repeat([]byte{0xcd}, 50),
			digest: "4c9007f4026250c6bc8414f9bf50c86c2d7235da",
		},
		{
			src:    "RFC 2202 section 3, test_case 5",
			key:    bytes.Repeat([]byte{0x0c}, 20),
			data:   []byte("Test With Truncation"),
			digest: "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04",
		},
		{
			src:    "RFC 2202 section 3, test_case 6",
			key:    bytes.Repeat([]byte{0xaa}, 80),
			data:   []byte("Test Using Larger Than Block-Size Key - Hash Key First"),
			digest: "aa4ae5e15272d00e95705637ce8a3b55ed402112",
		},
		{
			src:    "RFC 2202 section 3, test_case 7",
			key:    bytes.Repeat([]byte{0xaa}, 80),
			data:   []byte("Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"),
			digest: "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
		},
	}
	forEachPath(t, func(t *testing.T) {
		for _, v := range vectors {
			k := New(v.key)
			d := unhex(v.digest)
			var out [Size]byte
			k.Sum(&out, v.data, nil)
			if !bytes.Equal(out[:], d) {
				t.Errorf("%s: Sum = %x, want %s", v.src, out, v.digest)
			}
			// The same input split into Msg and a Tail of up to 8 bytes,
			// alone and paired in SumN.
			cut := max(0, len(v.data)-8)
			jobs := []Job{
				{Key: k, Msg: v.data[:cut], Tail: v.data[cut:]},
				{Key: k, Msg: v.data},
			}
			SumN(jobs)
			for i, j := range jobs {
				if !bytes.Equal(j.Sum[:], d) {
					t.Errorf("%s: SumN job %d = %x, want %s", v.src, i, j.Sum, v.digest)
				}
			}
		}
	})
}

// TestBlockGeneric checks the portable compression function against the
// SHA-1 examples of FIPS 180-4 (NIST CSRC "Examples with Intermediate
// Values", SHA1.pdf): one block for "abc" and two for the 448-bit message.
func TestBlockGeneric(t *testing.T) {
	for _, v := range []struct{ msg, digest string }{
		{"abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
		{"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
	} {
		var f [2 * blockSize]byte
		// final counts a 64-byte ipad block in the length; the plain hash
		// has none, so give it 64 bytes less.
		n := final(&f, []byte(v.msg), nil, len(v.msg)-blockSize)
		h := initState
		blockGeneric(&h, f[:n])
		var got [Size]byte
		putDigest(got[:], &h)
		if hex.EncodeToString(got[:]) != v.digest {
			t.Errorf("SHA-1(%q) = %x, want %s", v.msg, got, v.digest)
		}
	}
}

// TestEveryLength compares with crypto/hmac for every message length 0..300
// (each position of the end of the message and of the padding in the last
// blocks), for every key length in keyLens and a random tail of 0..8 bytes.
func TestEveryLength(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	msg := randBytes(r, 300)
	forEachPath(t, func(t *testing.T) {
		for _, kl := range keyLens {
			key := randBytes(r, kl)
			k := New(key)
			for n := 0; n <= len(msg); n++ {
				tail := randBytes(r, r.IntN(9))
				var out [Size]byte
				k.Sum(&out, msg[:n], tail)
				if w := want(key, msg[:n], tail); !bytes.Equal(out[:], w) {
					t.Fatalf("key %d bytes, msg %d, tail %d: Sum = %x, want %x", kl, n, len(tail), out, w)
				}
			}
		}
	})
}

func TestRandomLengths(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	forEachPath(t, func(t *testing.T) {
		for range 200 {
			key := randBytes(r, keyLens[r.IntN(len(keyLens))])
			msg := randBytes(r, r.IntN(9001))
			tail := randBytes(r, r.IntN(9))
			var out [Size]byte
			New(key).Sum(&out, msg, tail)
			if w := want(key, msg, tail); !bytes.Equal(out[:], w) {
				t.Fatalf("key %d bytes, msg %d, tail %d: Sum = %x, want %x", len(key), len(msg), len(tail), out, w)
			}
		}
	})
}

// TestLongestTail checks a tail of maxTail bytes after every length of the
// last partial block, and that a longer one panics.
func TestLongestTail(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	key := randBytes(r, 20)
	k := New(key)
	tail := randBytes(r, maxTail+1)
	msg := randBytes(r, 2*blockSize)
	forEachPath(t, func(t *testing.T) {
		for n := blockSize; n <= len(msg); n++ {
			var out [Size]byte
			k.Sum(&out, msg[:n], tail[:maxTail])
			if w := want(key, msg[:n], tail[:maxTail]); !bytes.Equal(out[:], w) {
				t.Fatalf("msg %d, tail %d: Sum = %x, want %x", n, maxTail, out, w)
			}
		}
	})
	defer func() {
		if recover() == nil {
			t.Errorf("Sum with a %d-byte tail did not panic", len(tail))
		}
	}()
	var out [Size]byte
	k.Sum(&out, msg, tail)
}

// TestTailLengths crosses every tail length up to maxTail with message
// lengths 64..192, where both decide whether the last whole block is hashed
// in place or with the final blocks (inPlace), through Sum and through SumN.
func TestTailLengths(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	key := randBytes(r, 20)
	k := New(key)
	msg := randBytes(r, 3*blockSize)
	tail := randBytes(r, maxTail)
	forEachPath(t, func(t *testing.T) {
		for tl := 0; tl <= maxTail; tl++ {
			for n := blockSize; n <= len(msg); n++ {
				var out [Size]byte
				k.Sum(&out, msg[:n], tail[:tl])
				jobs := []Job{
					{Key: k, Msg: msg[:n], Tail: tail[:tl]},
					{Key: k, Msg: msg[:n], Tail: tail[:maxTail-tl]},
					{Key: k, Msg: msg[1:n], Tail: tail[:tl]},
					{Key: k, Msg: msg[:blockSize], Tail: tail[tl:]},
				}
				SumN(jobs)
				w := want(key, msg[:n], tail[:tl])
				if !bytes.Equal(out[:], w) {
					t.Fatalf("msg %d, tail %d: Sum = %x, want %x", n, tl, out, w)
				}
				for i, j := range jobs {
					if w := want(key, j.Msg, j.Tail); !bytes.Equal(j.Sum[:], w) {
						t.Fatalf("msg %d, tail %d: SumN job %d = %x, want %x", n, tl, i, j.Sum, w)
					}
				}
			}
		}
	})
}

// TestSumN runs batches of 0..17 jobs with mixed keys against crypto/hmac:
// all of one length (the streams in step to the end), of random lengths
// (streams finishing early, in the message blocks or in the final ones), and
// of short and long lengths mixed (groups of four with one, two or three
// streams left).
func TestSumN(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	keys := make([][]byte, len(keyLens))
	ks := make([]*Key, len(keyLens))
	for i, kl := range keyLens {
		keys[i] = randBytes(r, kl)
		ks[i] = New(keys[i])
	}
	forEachPath(t, func(t *testing.T) {
		for count := range 18 {
			for _, lengths := range []string{"equal", "random", "mixed"} {
				t.Run(fmt.Sprintf("%d/%s", count, lengths), func(t *testing.T) {
					for range 20 {
						n := r.IntN(1500)
						jobs := make([]Job, count)
						ki := make([]int, count)
						for i := range jobs {
							switch lengths {
							case "random":
								n = r.IntN(1500)
							case "mixed":
								n = []int{r.IntN(120), 1400 + r.IntN(100)}[r.IntN(2)]
							}
							ki[i] = r.IntN(len(ks))
							jobs[i] = Job{Key: ks[ki[i]], Msg: randBytes(r, n), Tail: randBytes(r, r.IntN(9))}
							jobs[i].Sum[0] = 0xff // stale output to overwrite
						}
						msgs := make([][]byte, count)
						for i := range jobs {
							msgs[i] = bytes.Clone(jobs[i].Msg)
						}
						SumN(jobs)
						for i, j := range jobs {
							if w := want(keys[ki[i]], j.Msg, j.Tail); !bytes.Equal(j.Sum[:], w) {
								t.Fatalf("job %d (key %d bytes, msg %d, tail %d) = %x, want %x",
									i, len(keys[ki[i]]), len(j.Msg), len(j.Tail), j.Sum, w)
							}
							if !bytes.Equal(j.Msg, msgs[i]) {
								t.Fatalf("job %d: Msg modified", i)
							}
						}
					}
				})
			}
		}
	})
}

// TestBitFlip checks that flipping any single bit of the message or tail
// changes the HMAC, through Sum and through SumN, the flipped message among
// three unflipped ones (so in a group of four).
func TestBitFlip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	k := New(randBytes(r, 20))
	forEachPath(t, func(t *testing.T) {
		for _, n := range []int{0, 1, 55, 56, 64, 119, 200} {
			msg := randBytes(r, n)
			tail := randBytes(r, 4)
			var ref [Size]byte
			k.Sum(&ref, msg, tail)
			in := append(bytes.Clone(msg), tail...)
			for bit := range 8 * len(in) {
				in[bit/8] ^= 1 << (bit % 8)
				m, tl := in[:n], in[n:]
				var out [Size]byte
				k.Sum(&out, m, tl)
				jobs := []Job{{Key: k, Msg: msg, Tail: tail}, {Key: k, Msg: m, Tail: tl}, {Key: k, Msg: msg, Tail: tail}, {Key: k, Msg: msg, Tail: tail}}
				SumN(jobs)
				if out == ref || jobs[1].Sum == ref || jobs[0].Sum != ref || jobs[2].Sum != ref || jobs[3].Sum != ref {
					t.Fatalf("msg %d bytes, bit %d flipped: Sum %x, SumN %x, unflipped %x", n, bit, out, jobs[1].Sum, ref)
				}
				in[bit/8] ^= 1 << (bit % 8)
			}
		}
	})
}

// TestConcurrent shares one Key between goroutines (for go test -race).
func TestConcurrent(t *testing.T) {
	key := []byte("concurrent key")
	k := New(key)
	msg := make([]byte, 1400)
	w := want(key, msg, nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for range 100 {
				jobs := []Job{{Key: k, Msg: msg}, {Key: k, Msg: msg[:g]}, {Key: k, Msg: msg}}
				SumN(jobs)
				var out [Size]byte
				k.Sum(&out, msg, nil)
				if !bytes.Equal(out[:], w) || !bytes.Equal(jobs[0].Sum[:], w) || !bytes.Equal(jobs[2].Sum[:], w) {
					t.Error("concurrent Sum mismatch")
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestAllocs(t *testing.T) {
	k := New([]byte("key"))
	msg := make([]byte, 1400)
	tail := []byte{1, 2, 3, 4}
	var out [Size]byte
	if a := testing.AllocsPerRun(100, func() { k.Sum(&out, msg, tail) }); a != 0 {
		t.Errorf("Sum: %v allocations, want 0", a)
	}
	jobs := make([]Job, 7)
	for i := range jobs {
		jobs[i] = Job{Key: k, Msg: msg[:100*i], Tail: tail}
	}
	if a := testing.AllocsPerRun(100, func() { SumN(jobs) }); a != 0 {
		t.Errorf("SumN: %v allocations, want 0", a)
	}
}

// FuzzSumN splits data into five messages for two keys (a group of four and
// a single) and compares SumN with crypto/hmac.
func FuzzSumN(f *testing.F) {
	f.Add([]byte("key"), []byte("other key"), []byte("message"), uint16(3), []byte{0, 0, 0, 1})
	f.Add([]byte{}, bytes.Repeat([]byte{0xaa}, 80), make([]byte, 1400), uint16(700), []byte{})
	f.Fuzz(func(t *testing.T, key1, key2, data []byte, cut uint16, tail []byte) {
		c := int(cut) % (len(data) + 1)
		tail = tail[:min(len(tail), maxTail)]
		k1, k2 := New(key1), New(key2)
		jobs := []Job{
			{Key: k1, Msg: data[:c], Tail: tail},
			{Key: k2, Msg: data[c:]},
			{Key: k2, Msg: data, Tail: tail},
			{Key: k1, Msg: data[c:], Tail: tail},
			{Key: k2, Msg: data[:c]},
		}
		keys := [][]byte{key1, key2, key2, key1, key2}
		SumN(jobs)
		for i, j := range jobs {
			if w := want(keys[i], j.Msg, j.Tail); !bytes.Equal(j.Sum[:], w) {
				t.Fatalf("job %d: %x, want %x", i, j.Sum, w)
			}
		}
	})
}
