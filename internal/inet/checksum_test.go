package inet

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestChecksum: RFC 1071 §3's example, an odd length, a chained sum, and a
// header that checks out with its own checksum in it.
func TestChecksum(t *testing.T) {
	// RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 (folded).
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := Checksum(Sum(0, b)); got != ^uint16(0xddf2) {
		t.Fatalf("RFC 1071 example: %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	if Sum(Sum(0, b[:4]), b[4:]) != Sum(0, b) {
		t.Fatal("a chained sum differs")
	}
	if got := Sum(0, []byte{0xab}); got != 0xab00 {
		t.Fatalf("odd byte: %#x", got)
	}
	// An IPv4 header (RFC 791) with its checksum filled in checks out.
	h := []byte{0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 0x40, 1, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2}
	c := Checksum(Sum(0, h))
	h[10], h[11] = byte(c>>8), byte(c)
	if Checksum(Sum(0, h)) != 0 {
		t.Fatal("a header with its checksum does not check out")
	}
	h[3] ^= 1
	if Checksum(Sum(0, h)) == 0 {
		t.Fatal("a flipped bit still checks out")
	}
}

// TestAppendEcho: an IPv4 echo request whose header and ICMP checksums
// check out, and an IPv6 reply whose checksum covers the pseudo-header
// (flip the source and it no longer checks out).
func TestAppendEcho(t *testing.T) {
	src4, dst4 := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	p := AppendEcho([]byte("x"), EchoRequest, src4, dst4, 7, 9, []byte("ping"))[1:]
	if len(p) != 32 || p[9] != ProtoICMP || p[20] != EchoRequest || Checksum(Sum(0, p[:20])) != 0 || Checksum(Sum(0, p[20:])) != 0 {
		t.Fatalf("IPv4 echo % x", p)
	}
	src6, dst6 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	q := AppendEcho(nil, EchoReply, src6, dst6, 7, 9, []byte("pong"))
	ic := q[40:]
	if len(q) != 52 || q[6] != ProtoICMPv6 || ic[0] != Echo6Reply || Checksum(Sum(PseudoSum(src6, dst6, ProtoICMPv6, len(ic)), ic)) != 0 {
		t.Fatalf("IPv6 echo % x", q)
	}
	if Checksum(Sum(PseudoSum(dst6, dst6, ProtoICMPv6, len(ic)), ic)) == 0 {
		t.Fatal("the IPv6 checksum does not cover the source")
	}
}

// sumBytewise is RFC 1071's sum written out, one byte pair at a time: the
// reference Sum must agree with.
func sumBytewise(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return acc
}

// TestSumMatchesBytewise: every length from 0 to 300 and a 64 KiB buffer,
// at every alignment, with and without a running sum.
func TestSumMatchesBytewise(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 65536+8)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for off := range 8 {
		for n := range 301 {
			b := buf[off : off+n]
			for _, acc := range []uint32{0, 0xffff, 0x1fffe, rng.Uint32() >> 8} {
				if got, want := Sum(acc, b), sumBytewise(acc, b); got != want {
					t.Fatalf("offset %d, %d bytes, acc %#x: %#x, want %#x", off, n, acc, got, want)
				}
			}
		}
		if got, want := Sum(7, buf[off:off+65536]), sumBytewise(7, buf[off:off+65536]); got != want {
			t.Fatalf("64 KiB at offset %d: %#x, want %#x", off, got, want)
		}
	}
}

// BenchmarkSum: the checksum of a 1,400-byte packet.
func BenchmarkSum(b *testing.B) {
	p := make([]byte, 1400)
	for i := range p {
		p[i] = byte(i)
	}
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		Sum(0, p)
	}
}
