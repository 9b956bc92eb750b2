package pcap

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/tun/tuntest"
)

// ---- a reader written from the format description, for the tests ----

type record struct {
	ts   time.Time
	data []byte
}

// readFile parses a classic pcap file as this package writes it.
func readFile(b []byte) ([]record, error) {
	if len(b) < fileHeaderLen {
		return nil, errors.New("short file header")
	}
	le := binary.LittleEndian
	if le.Uint32(b) != magicMicroseconds || le.Uint16(b[4:]) != 2 || le.Uint16(b[6:]) != 4 ||
		le.Uint32(b[16:]) != SnapLen || le.Uint32(b[20:]) != LinkTypeRaw {
		return nil, fmt.Errorf("file header % x", b[:fileHeaderLen])
	}
	var recs []record
	for b = b[fileHeaderLen:]; len(b) > 0; {
		if len(b) < recordHeaderLen {
			return nil, errors.New("short record header")
		}
		incl, orig := le.Uint32(b[8:]), le.Uint32(b[12:])
		if incl != orig || incl > SnapLen || int(incl) > len(b)-recordHeaderLen {
			return nil, fmt.Errorf("record lengths %d/%d with %d bytes left", incl, orig, len(b)-recordHeaderLen)
		}
		if usec := le.Uint32(b[4:]); usec >= 1e6 {
			return nil, fmt.Errorf("usec %d", usec)
		}
		ts := time.Unix(int64(le.Uint32(b)), int64(le.Uint32(b[4:]))*1000)
		recs = append(recs, record{ts, b[recordHeaderLen : recordHeaderLen+incl]})
		b = b[recordHeaderLen+incl:]
	}
	return recs, nil
}

// slowChecksum is RFC 1071 the obvious way: add all 16-bit words in a
// uint64, fold at the end.
func slowChecksum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint64
	for i := 0; i < len(all); i += 2 {
		s += uint64(all[i])<<8 | uint64(all[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// parseUDP checks an IPv4 or IPv6 packet with one UDP datagram: version,
// lengths, header checksum, UDP checksum (which must be present), and
// returns its addresses and payload.
func parseUDP(pkt []byte) (src, dst netip.AddrPort, payload []byte, err error) {
	be := binary.BigEndian
	var pseudo, u []byte
	switch {
	case len(pkt) >= 20 && pkt[0] == 0x45:
		if int(be.Uint16(pkt[2:])) != len(pkt) || pkt[9] != 17 || pkt[8] != 64 || be.Uint16(pkt[6:]) != 0x4000 {
			return src, dst, nil, fmt.Errorf("IPv4 header % x (len %d)", pkt[:20], len(pkt))
		}
		if slowChecksum(pkt[:20]) != 0xffff {
			return src, dst, nil, errors.New("IPv4 header checksum")
		}
		s, d := netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		u = pkt[20:]
		pseudo = append(append(append([]byte{}, pkt[12:20]...), 0, 17), byte(len(u)>>8), byte(len(u)))
		src, dst = netip.AddrPortFrom(s, 0), netip.AddrPortFrom(d, 0)
	case len(pkt) >= 40 && pkt[0] == 0x60 && pkt[1] == 0 && pkt[2] == 0 && pkt[3] == 0:
		if int(be.Uint16(pkt[4:])) != len(pkt)-40 || pkt[6] != 17 || pkt[7] != 64 {
			return src, dst, nil, fmt.Errorf("IPv6 header % x", pkt[:8])
		}
		s, d := netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		u = pkt[40:]
		pseudo = append(append([]byte{}, pkt[8:40]...), 0, 0, byte(len(u)>>8), byte(len(u)), 0, 0, 0, 17)
		src, dst = netip.AddrPortFrom(s, 0), netip.AddrPortFrom(d, 0)
	default:
		return src, dst, nil, errors.New("not an IPv4 or IPv6 packet")
	}
	if len(u) < 8 || int(be.Uint16(u[4:])) != len(u) {
		return src, dst, nil, errors.New("UDP length")
	}
	if be.Uint16(u[6:]) == 0 {
		return src, dst, nil, errors.New("UDP checksum absent")
	}
	if slowChecksum(pseudo, u) != 0xffff {
		return src, dst, nil, errors.New("UDP checksum")
	}
	src = netip.AddrPortFrom(src.Addr(), be.Uint16(u[0:]))
	dst = netip.AddrPortFrom(dst.Addr(), be.Uint16(u[2:]))
	return src, dst, u[8:], nil
}

// ---- tests ----

var (
	a4 = netip.MustParseAddrPort("192.0.2.1:4500")
	b4 = netip.MustParseAddrPort("198.51.100.2:34567")
	a6 = netip.MustParseAddrPort("[2001:db8::1]:4500")
	b6 = netip.MustParseAddrPort("[2001:db8:1::2]:5060")
)

func fixedClock() func() time.Time {
	t := time.Unix(1_700_000_000, 123456000)
	var mu sync.Mutex
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Millisecond)
		return t
	}
}

func TestFileHeader(t *testing.T) {
	var buf bytes.Buffer
	if _, err := NewWriter(&buf, Options{}); err != nil {
		t.Fatal(err)
	}
	// draft-ietf-opsawg-pcap §4: magic, 2.4, reserved, snaplen, link type 101.
	want, _ := hex.DecodeString("d4c3b2a1" + "0200" + "0400" + "00000000" + "00000000" + "00000400" + "65000000")
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("header % x\nwant   % x", buf.Bytes(), want)
	}
}

func TestWriteAndReadBack(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Options{Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		src, dst netip.AddrPort
		payload  []byte
		v6       bool
		wsrc     netip.AddrPort // as it should read back; zero: src
		wdst     netip.AddrPort
	}{
		{src: a4, dst: b4, payload: []byte("hello")},
		{src: b4, dst: a4, payload: nil},
		{src: a4, dst: b4, payload: bytes.Repeat([]byte{0xab}, 1401)},
		{src: a6, dst: b6, payload: []byte("odd"), v6: true},
		{src: netip.MustParseAddrPort("[::ffff:192.0.2.9]:1"), dst: b4, payload: []byte{1, 2},
			wsrc: netip.MustParseAddrPort("192.0.2.9:1")},
		// Mixed families: IPv6 with the IPv4 address mapped.
		{src: a4, dst: b6, payload: []byte{9}, v6: true,
			wsrc: netip.MustParseAddrPort("[::ffff:192.0.2.1]:4500")},
		// A wildcard-bound socket's local side.
		{src: netip.AddrPortFrom(netip.IPv4Unspecified(), 4500), dst: b4, payload: []byte{7}},
		{src: netip.AddrPort{}, dst: b6, payload: []byte{8}, v6: true, wsrc: netip.MustParseAddrPort("[::]:0")},
		{src: netip.AddrPort{}, dst: netip.AddrPort{}, payload: []byte{8}, wsrc: netip.MustParseAddrPort("0.0.0.0:0"),
			wdst: netip.MustParseAddrPort("0.0.0.0:0")},
	}
	for _, c := range cases {
		if err := w.WriteUDP(c.src, c.dst, c.payload); err != nil {
			t.Fatal(err)
		}
	}
	if w.Records() != uint64(len(cases)) {
		t.Fatalf("Records %d", w.Records())
	}
	recs, err := readFile(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(cases) {
		t.Fatalf("%d records, wrote %d", len(recs), len(cases))
	}
	for i, c := range cases {
		r := recs[i]
		if want := time.Unix(1_700_000_000, 123456000).Add(time.Duration(i+1) * time.Millisecond); !r.ts.Equal(want) {
			t.Errorf("case %d: time %v, want %v", i, r.ts, want)
		}
		if (r.data[0]>>4 == 6) != c.v6 {
			t.Errorf("case %d: IP version %d", i, r.data[0]>>4)
		}
		src, dst, payload, err := parseUDP(r.data)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		wsrc, wdst := c.wsrc, c.wdst
		if !wsrc.IsValid() {
			wsrc = c.src
		}
		if !wdst.IsValid() {
			wdst = c.dst
		}
		if src != wsrc || dst != wdst || !bytes.Equal(payload, c.payload) {
			t.Errorf("case %d: read %v -> %v %x", i, src, dst, payload)
		}
	}
}

// TestAppendUDPMatchesModel checks AppendUDP against tuntest.UDPPacket,
// written separately, over random same-family input, and every result
// against the slow checksum in parseUDP.
func TestAppendUDPMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addr := func(v6 bool) netip.AddrPort {
		if v6 {
			var a [16]byte
			for i := range a {
				a[i] = byte(rng.Uint32())
			}
			return netip.AddrPortFrom(netip.AddrFrom16(a), uint16(rng.Uint32()))
		}
		var a [4]byte
		for i := range a {
			a[i] = byte(rng.Uint32())
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), uint16(rng.Uint32()))
	}
	prefix := []byte("keep")
	for i := 0; i < 2000; i++ {
		v6 := i%2 == 1
		src, dst := addr(v6), addr(v6)
		if src.Addr().Is4In6() || dst.Addr().Is4In6() {
			continue
		}
		n := rng.IntN(1600)
		if i%97 == 0 {
			n = 0xffff - 48 - rng.IntN(3) // the most tuntest.UDPPacket builds
		}
		payload := make([]byte, n)
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		got, err := AppendUDP(append([]byte{}, prefix...), src, dst, payload)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(prefix)], prefix) {
			t.Fatal("AppendUDP overwrote its prefix")
		}
		want := tuntest.UDPPacket(src, dst, payload)
		if !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("%v -> %v, %d bytes: AppendUDP differs from tuntest.UDPPacket\n% x\n% x", src, dst, n, got[len(prefix):min(len(got), 80)], want[:min(len(want), 76)])
		}
		if s, d, p, err := parseUDP(got[len(prefix):]); err != nil || s != src || d != dst || !bytes.Equal(p, payload) {
			t.Fatalf("read back: %v %v %v", s, d, err)
		}
	}
}

// TestChecksumZeroIsAllOnes builds a datagram whose checksum computes to
// zero: RFC 768 says it goes out as 0xffff (0 means "no checksum").
func TestChecksumZeroIsAllOnes(t *testing.T) {
	for _, pair := range [][2]netip.AddrPort{{a4, b4}, {a6, b6}} {
		payload := []byte{1, 2, 3, 4, 0, 0}
		pkt, _ := AppendUDP(nil, pair[0], pair[1], payload)
		c := pkt[len(pkt)-len(payload)-2:]
		copy(payload[4:], c[:2]) // this word cancels the rest of the sum
		pkt, _ = AppendUDP(nil, pair[0], pair[1], payload)
		if got := binary.BigEndian.Uint16(pkt[len(pkt)-len(payload)-2:]); got != 0xffff {
			t.Fatalf("%v: checksum %#04x, want 0xffff", pair[0], got)
		}
		if _, _, _, err := parseUDP(pkt); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFlippedBitRejected makes sure the checks above can fail: any single
// flipped bit in the IP/UDP headers or payload of a written packet breaks a
// checksum or a length.
func TestFlippedBitRejected(t *testing.T) {
	for _, pair := range [][2]netip.AddrPort{{a4, b4}, {a6, b6}} {
		pkt, _ := AppendUDP(nil, pair[0], pair[1], []byte("flip me, any bit"))
		for i := range len(pkt) * 8 {
			bad := append([]byte{}, pkt...)
			bad[i/8] ^= 1 << (i % 8)
			if _, _, _, err := parseUDP(bad); err == nil {
				t.Fatalf("%v: bit %d flipped, packet still accepted", pair[0], i)
			}
		}
	}
}

func TestTooLarge(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Options{})
	size := buf.Len()
	if err := w.WriteUDP(a4, b4, make([]byte, MaxPayload4+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("IPv4 %d bytes: %v", MaxPayload4+1, err)
	}
	if err := w.WriteUDP(a6, b6, make([]byte, MaxPayload6+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("IPv6 %d bytes: %v", MaxPayload6+1, err)
	}
	if buf.Len() != size || w.Records() != 0 {
		t.Fatal("an oversized datagram left bytes in the file")
	}
	// Not sticky, and the largest ones fit.
	if err := w.WriteUDP(a4, b4, make([]byte, MaxPayload4)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteUDP(a6, b6, make([]byte, MaxPayload6)); err != nil {
		t.Fatal(err)
	}
	recs, err := readFile(buf.Bytes())
	if err != nil || len(recs) != 2 || len(recs[0].data) != 0xffff || len(recs[1].data) != 40+0xffff {
		t.Fatalf("%d records, err %v", len(recs), err)
	}
	for _, r := range recs {
		if _, _, _, err := parseUDP(r.data); err != nil {
			t.Fatal(err)
		}
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(b []byte) (int, error) {
	if f.n == 0 {
		return 0, io.ErrShortWrite
	}
	f.n--
	return len(b), nil
}

func TestStickyError(t *testing.T) {
	if _, err := NewWriter(&failWriter{}, Options{}); err == nil {
		t.Fatal("header write failure not reported")
	}
	w, err := NewWriter(&failWriter{n: 2}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteUDP(a4, b4, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := w.WriteUDP(a4, b4, nil); !errors.Is(err, io.ErrShortWrite) {
			t.Fatalf("err %v", err)
		}
	}
	if !errors.Is(w.Err(), io.ErrShortWrite) || !errors.Is(w.Close(), io.ErrShortWrite) || w.Records() != 1 {
		t.Fatalf("Err %v Records %d", w.Err(), w.Records())
	}
}

func TestClosed(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Options{})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteUDP(a4, b4, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v", err)
	}
	if buf.Len() != fileHeaderLen {
		t.Fatal("record written after Close")
	}
}

// TestConcurrentWriters: records from many goroutines never interleave.
func TestConcurrentWriters(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Options{})
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := netip.AddrPortFrom(a4.Addr(), uint16(1000+g))
			for i := range each {
				payload := bytes.Repeat([]byte{byte(g)}, 1+(i*37)%1500)
				if err := w.WriteUDP(src, b4, payload); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	recs, err := readFile(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != goroutines*each {
		t.Fatalf("%d records", len(recs))
	}
	perSrc := map[uint16]int{}
	for _, r := range recs {
		src, _, payload, err := parseUDP(r.data)
		if err != nil {
			t.Fatal(err)
		}
		g := int(src.Port()) - 1000
		if !bytes.Equal(payload, bytes.Repeat([]byte{byte(g)}, 1+(perSrc[src.Port()]*37)%1500)) {
			t.Fatalf("goroutine %d record %d: payload mixed up", g, perSrc[src.Port()])
		}
		perSrc[src.Port()]++
	}
}

func TestWriteDoesNotAllocate(t *testing.T) {
	w, _ := NewWriter(io.Discard, Options{})
	payload := make([]byte, 1400)
	w.WriteUDP(a4, b4, payload) // grow the buffer once
	if n := testing.AllocsPerRun(100, func() { w.WriteUDP(a4, b4, payload) }); n != 0 {
		t.Fatalf("%v allocations per record", n)
	}
}

// TestTshark: Wireshark reads the file, finds the addresses and ports, and
// finds every header and UDP checksum good.
func TestTshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed (Debian: apt-get install tshark); CI installs it")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "udp.pcap")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(f, Options{Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	type dg struct {
		src, dst netip.AddrPort
		payload  []byte
	}
	zero := []byte{0xde, 0xad, 0xbe, 0xef, 0, 0}
	pkt, _ := AppendUDP(nil, a4, b4, zero)
	copy(zero[4:], pkt[26:28]) // checksum computes to 0: sent as 0xffff
	dgs := []dg{
		{a4, b4, []byte("one")},
		{b4, a4, bytes.Repeat([]byte{0x55}, 1400)},
		{a6, b6, []byte("three, odd")},
		{b6, a6, []byte{}},
		{a4, b4, zero},
		{netip.AddrPortFrom(netip.IPv4Unspecified(), 4500), b4, []byte{0xff}},
	}
	for _, d := range dgs {
		if err := w.WriteUDP(d.src, d.dst, d.payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tshark, "-r", file, "-n",
		"-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
		"-T", "fields", "-E", "separator=|",
		"-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst",
		"-e", "udp.srcport", "-e", "udp.dstport", "-e", "udp.length",
		"-e", "ip.checksum.status", "-e", "udp.checksum.status", "-e", "udp.payload")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(dgs) {
		t.Fatalf("tshark read %d packets, we wrote %d:\n%s", len(lines), len(dgs), out)
	}
	for i, d := range dgs {
		f := strings.Split(lines[i], "|")
		if len(f) != 10 {
			t.Fatalf("packet %d: %q", i+1, lines[i])
		}
		var src, dst string
		if d.src.Addr().Is4() {
			src, dst = f[0], f[1]
			if f[7] != "1" { // PROTO_CHECKSUM_E_GOOD
				t.Errorf("packet %d: IPv4 checksum status %q", i+1, f[7])
			}
		} else {
			src, dst = f[2], f[3]
		}
		if src != d.src.Addr().String() || dst != d.dst.Addr().String() ||
			f[4] != fmt.Sprint(d.src.Port()) || f[5] != fmt.Sprint(d.dst.Port()) || f[6] != fmt.Sprint(8+len(d.payload)) {
			t.Errorf("packet %d: tshark %q, wrote %v -> %v (%d bytes)", i+1, lines[i], d.src, d.dst, len(d.payload))
		}
		if f[8] != "1" {
			t.Errorf("packet %d: UDP checksum status %q", i+1, f[8])
		}
		if f[9] != hex.EncodeToString(d.payload) {
			t.Errorf("packet %d: payload %s", i+1, f[9])
		}
	}
}

func BenchmarkWriteUDP(b *testing.B) {
	for _, n := range []int{64, 512, 1400, 8000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			w, _ := NewWriter(io.Discard, Options{})
			payload := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				w.WriteUDP(a4, b4, payload)
			}
		})
	}
}

func FuzzAppendUDP(f *testing.F) {
	f.Add([]byte("x"), uint16(4500), uint16(5060), false, false)
	f.Add([]byte{}, uint16(0), uint16(0), true, false)
	f.Add([]byte{0xde, 0xad, 0xbe, 0xef, 0x49, 0x8a}, uint16(4500), uint16(34567), false, true)
	f.Fuzz(func(t *testing.T, payload []byte, sp, dp uint16, v6, mixed bool) {
		src, dst := netip.AddrPortFrom(a4.Addr(), sp), netip.AddrPortFrom(b4.Addr(), dp)
		if v6 {
			src, dst = netip.AddrPortFrom(a6.Addr(), sp), netip.AddrPortFrom(b6.Addr(), dp)
		}
		if mixed {
			dst = netip.AddrPortFrom(b6.Addr(), dp)
		}
		pkt, err := AppendUDP(nil, src, dst, payload)
		if err != nil {
			t.Fatal(err)
		}
		s, d, p, err := parseUDP(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if s.Port() != sp || d.Port() != dp || s.Addr().Unmap() != src.Addr() || d.Addr() != dst.Addr() || !bytes.Equal(p, payload) {
			t.Fatalf("read back %v %v", s, d)
		}
	})
}
