package tun

import (
	"net/netip"
	"testing"

	"github.com/imsec/imsec/internal/inet"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestEcho6: the ICMPv6 echo the pump builds for a UE with an inner IPv6
// address parses back, carries the checksum gVisor computes for it (a
// second implementation), fails with any bit of it flipped, and gets an
// echo reply from a responder of its destination only.
func TestEcho6(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8:64::2"), netip.MustParseAddr("2001:db8:64::1")
	payload := []byte("imsec pinhole, odd length")
	p := inet.AppendEcho(nil, inet.EchoRequest, src, dst, 0x1ec, 7, payload)
	if len(p) != 48+len(payload) || p[0]>>4 != 6 || p[6] != inet.ProtoICMPv6 {
		t.Fatalf("not an ICMPv6 packet: % x", p[:8])
	}
	ic := header.ICMPv6(p[40:])
	want := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: ic[:8], Src: tcpip.AddrFrom16(src.As16()), Dst: tcpip.AddrFrom16(dst.As16()),
		PayloadCsum: checksum.Checksum(ic[8:], 0), PayloadLen: len(ic) - 8})
	if got := ic.Checksum(); got != want {
		t.Fatalf("checksum %#04x, gVisor computes %#04x", got, want)
	}
	typ, s, d, id, seq, pl, ok := parseEcho(p)
	if !ok || typ != inet.EchoRequest || s != src || d != dst || id != 0x1ec || seq != 7 || string(pl) != string(payload) {
		t.Fatalf("parse: %v %v %v %v %v %v %q", ok, typ, s, d, id, seq, pl)
	}
	for i := range len(p) * 8 {
		q := append([]byte(nil), p...)
		q[i/8] ^= 1 << (i % 8)
		if _, _, _, _, _, _, ok := parseEcho(q); ok && i/8 >= 8 && i/8 != 4 && i/8 != 5 && i/8 != 6 {
			t.Fatalf("bit %d flipped: still a valid echo", i)
		}
	}
	for i := range len(p) {
		if _, _, _, _, _, _, ok := parseEcho(p[:i]); ok {
			t.Fatalf("cut at %d: parsed", i)
		}
	}
	if echoReplyFor(nil, p, src) != nil {
		t.Fatal("a responder answered an echo for another address")
	}
	r := echoReplyFor(nil, p, dst)
	if id, seq, ok := parseEchoReply(r); !ok || id != 0x1ec || seq != 7 {
		t.Fatalf("reply: %v %v %v", id, seq, ok)
	}
}
