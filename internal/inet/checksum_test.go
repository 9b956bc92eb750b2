package inet

import "testing"

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
