package hmacsha1

import (
	"crypto/hmac"
	"crypto/sha1"
	"strconv"
	"testing"
)

var benchSizes = []int{64, 512, 1400}

func benchKey() []byte { return []byte("0123456789abcdef0123") }

// BenchmarkStdlib is crypto/hmac the way a per-packet user runs it: one
// hash.Hash per key, Reset, Write and Sum into a reused buffer.
func BenchmarkStdlib(b *testing.B) {
	m := hmac.New(sha1.New, benchKey())
	out := make([]byte, 0, Size)
	eachSize(b, func(msg []byte) {
		m.Reset()
		m.Write(msg)
		out = m.Sum(out[:0])
	})
}

func BenchmarkSum(b *testing.B) {
	k := New(benchKey())
	var out [Size]byte
	eachSize(b, func(msg []byte) { k.Sum(&out, msg, nil) })
}

// eachSize runs a sub-benchmark of mac on a message of each benchSizes.
func eachSize(b *testing.B, mac func(msg []byte)) {
	for _, size := range benchSizes {
		msg := make([]byte, size)
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				mac(msg)
			}
		})
	}
}

func BenchmarkSumN(b *testing.B) {
	k := New(benchKey())
	for _, n := range []int{2, 3, 4, 8} {
		for _, size := range benchSizes {
			jobs := make([]Job, n)
			for i := range jobs {
				jobs[i] = Job{Key: k, Msg: make([]byte, size)}
			}
			b.Run(strconv.Itoa(n)+"x"+strconv.Itoa(size), func(b *testing.B) {
				b.SetBytes(int64(n * size))
				b.ReportAllocs()
				for b.Loop() {
					SumN(jobs)
				}
			})
		}
	}
}
