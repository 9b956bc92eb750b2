package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// parseTCP checks an IPv4 or IPv6 packet with one TCP segment (no options)
// the slow way: lengths, header checksum, TCP checksum over the
// pseudo-header (RFC 9293 §3.1), and returns what the header says.
func parseTCP(pkt []byte) (src, dst netip.AddrPort, seg TCPSegment, payload []byte, err error) {
	be := binary.BigEndian
	var pseudo, h []byte
	var s, d netip.Addr
	switch {
	case len(pkt) >= 20 && pkt[0] == 0x45:
		if int(be.Uint16(pkt[2:])) != len(pkt) || pkt[9] != 6 || pkt[8] != 64 || be.Uint16(pkt[6:]) != 0x4000 {
			return src, dst, seg, nil, fmt.Errorf("IPv4 header % x (len %d)", pkt[:20], len(pkt))
		}
		if slowChecksum(pkt[:20]) != 0xffff {
			return src, dst, seg, nil, errors.New("IPv4 header checksum")
		}
		s, d = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		h = pkt[20:]
		pseudo = append(append([]byte{}, pkt[12:20]...), 0, 6, byte(len(h)>>8), byte(len(h)))
	case len(pkt) >= 40 && pkt[0] == 0x60 && pkt[1] == 0 && pkt[2] == 0 && pkt[3] == 0:
		if int(be.Uint16(pkt[4:])) != len(pkt)-40 || pkt[6] != 6 || pkt[7] != 64 {
			return src, dst, seg, nil, fmt.Errorf("IPv6 header % x", pkt[:8])
		}
		s, d = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		h = pkt[40:]
		pseudo = append(append([]byte{}, pkt[8:40]...), 0, 0, byte(len(h)>>8), byte(len(h)), 0, 0, 0, 6)
	default:
		return src, dst, seg, nil, errors.New("not an IPv4 or IPv6 packet")
	}
	if len(h) < 20 || h[12] != 5<<4 || be.Uint16(h[14:]) != 0xffff || be.Uint16(h[18:]) != 0 {
		return src, dst, seg, nil, fmt.Errorf("TCP header % x", h[:min(len(h), 20)])
	}
	if slowChecksum(pseudo, h) != 0xffff {
		return src, dst, seg, nil, errors.New("TCP checksum")
	}
	src, dst = netip.AddrPortFrom(s, be.Uint16(h[0:])), netip.AddrPortFrom(d, be.Uint16(h[2:]))
	seg = TCPSegment{Seq: be.Uint32(h[4:]), Ack: be.Uint32(h[8:]), Flags: TCPFlags(h[13])}
	return src, dst, seg, h[20:], nil
}

func TestAppendTCPMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	prefix := []byte("keep")
	for i := range 1000 {
		src, dst := a4, b4
		if i%2 == 1 {
			src, dst = a6, b6
		}
		seg := TCPSegment{Seq: rng.Uint32(), Ack: rng.Uint32(), Flags: TCPFlags(rng.UintN(0x20))}
		payload := make([]byte, rng.IntN(1600))
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		got, err := AppendTCP(append([]byte{}, prefix...), src, dst, seg, payload)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(prefix)], prefix) {
			t.Fatal("AppendTCP overwrote its prefix")
		}
		s, d, gs, p, err := parseTCP(got[len(prefix):])
		if err != nil || s != src || d != dst || gs != seg || !bytes.Equal(p, payload) {
			t.Fatalf("read back %v %v %+v (wrote %+v): %v", s, d, gs, seg, err)
		}
		// Flip one bit anywhere in the packet: some check must notice.
		pkt := got[len(prefix):]
		bit := rng.IntN(8 * len(pkt))
		pkt[bit/8] ^= 1 << (bit % 8)
		if s2, d2, gs2, p2, err := parseTCP(pkt); err == nil && s2 == src && d2 == dst && gs2 == seg && bytes.Equal(p2, payload) {
			t.Fatalf("bit %d flipped and still read back the same", bit)
		}
	}
}

func TestAppendTCPTooLarge(t *testing.T) {
	b := []byte("keep")
	big := make([]byte, 0xffff-40+1)
	if got, err := AppendTCP(b, a4, b4, TCPSegment{}, big); !errors.Is(err, ErrTooLarge) || !bytes.Equal(got, b) {
		t.Fatalf("IPv4, %d bytes: %v", len(big), err)
	}
	if _, err := AppendTCP(nil, a4, b4, TCPSegment{}, big[1:]); err != nil {
		t.Fatalf("IPv4, %d bytes: %v", len(big)-1, err)
	}
	big = make([]byte, 0xffff-20+1)
	if _, err := AppendTCP(nil, a6, b6, TCPSegment{}, big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("IPv6, %d bytes: %v", len(big), err)
	}
	if _, err := AppendTCP(nil, a6, b6, TCPSegment{}, big[1:]); err != nil {
		t.Fatalf("IPv6, %d bytes: %v", len(big)-1, err)
	}
}

func TestWriteTCPDoesNotAllocate(t *testing.T) {
	w, _ := NewWriter(io.Discard, Options{})
	payload := make([]byte, 1400)
	seg := TCPSegment{Seq: 1, Ack: 2, Flags: TCPAck | TCPPsh}
	w.WriteTCP(a4, b4, seg, payload)
	if n := testing.AllocsPerRun(100, func() { w.WriteTCP(a4, b4, seg, payload) }); n != 0 {
		t.Fatalf("%v allocations per record", n)
	}
}

// TestTsharkTCP: Wireshark follows a handshake, data both ways and a
// close, finds every checksum good and no TCP analysis warning (lost
// segment, out of order, ACKed unseen data...).
func TestTsharkTCP(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed (Debian: apt-get install tshark); CI installs it")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "tcp.pcap")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(f, Options{Now: fixedClock()})
	if err != nil {
		t.Fatal(err)
	}
	c, s := netip.MustParseAddrPort("192.0.2.1:49152"), netip.MustParseAddrPort("198.51.100.2:3868")
	cs, ss := uint32(0xfffffff0), uint32(1000) // the client's numbers wrap
	seg := func(from, to netip.AddrPort, flags TCPFlags, payload []byte) {
		t.Helper()
		seq, ack := &cs, &ss
		if from == s {
			seq, ack = &ss, &cs
		}
		if err := w.WriteTCP(from, to, TCPSegment{Seq: *seq, Ack: *ack, Flags: flags}, payload); err != nil {
			t.Fatal(err)
		}
		*seq += uint32(len(payload))
		if flags&(TCPSyn|TCPFin) != 0 {
			*seq++
		}
	}
	seg(c, s, TCPSyn, nil)
	seg(s, c, TCPSyn|TCPAck, nil)
	seg(c, s, TCPAck, nil)
	seg(c, s, TCPAck|TCPPsh, []byte("request, odd length"))
	seg(s, c, TCPAck|TCPPsh, bytes.Repeat([]byte{0x55}, 1400))
	seg(s, c, TCPAck|TCPFin, nil)
	seg(c, s, TCPAck|TCPFin, nil)
	seg(s, c, TCPAck, nil)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tshark, "-r", file, "-n",
		"-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
		"-T", "fields", "-E", "separator=|",
		"-e", "tcp.srcport", "-e", "tcp.len", "-e", "tcp.flags",
		"-e", "ip.checksum.status", "-e", "tcp.checksum.status", "-e", "tcp.analysis.flags", "-e", "_ws.expert.message")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"49152|0|0x0002", "3868|0|0x0012", "49152|0|0x0010", "49152|19|0x0018", "3868|1400|0x0018", "3868|0|0x0011", "49152|0|0x0011", "3868|0|0x0010"}
	if len(lines) != len(want) {
		t.Fatalf("tshark read %d packets, we wrote %d:\n%s", len(lines), len(want), out)
	}
	for i, l := range lines {
		f := strings.Split(l, "|")
		if len(f) != 7 || strings.Join(f[:3], "|") != want[i] ||
			f[3] != "1" || f[4] != "1" || f[5] != "" {
			t.Errorf("packet %d: %q, want %s, checksums good (1), no analysis flags", i+1, l, want[i])
		}
	}
}
