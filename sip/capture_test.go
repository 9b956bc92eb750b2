package sip

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/tsharktest"
	"github.com/imsec/imsec/tun/pcap"
)

// lockedBuffer is one key log written by both ends (each end's esp.KeyLog
// locks only itself).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Inner SIP ports: the P-CSCF's port-s and two port-c, the UE's port-s and
// two port-c (ServerConfig.PortS and UEConfig.PortS defaults).
var innerSIPPorts = []uint16{DefaultPortS, DefaultPortS + 1, DefaultPortS + 2,
	DefaultUEPortS, DefaultUEPortS - 6, DefaultUEPortS - 5}

// capturedSIP is one SIP message tshark found in the capture.
type capturedSIP struct {
	frame     string
	protocols string // frame.protocols, e.g. raw:ip:udp:udpencap:esp:ip:udp:sip
	spi       string
	method    string // request method, or "" for a response
	status    string // response code, or ""
	cseq      string // CSeq method
	expires   string
}

func (c capturedSIP) String() string {
	what := c.method
	if what == "" {
		what = c.status + " (" + c.cseq + ")"
	}
	if c.expires != "" {
		what += " Expires " + c.expires
	}
	return fmt.Sprintf("frame %s %s spi %s", c.frame, what, c.spi)
}

// TestCaptureDecryptsRegistration records the P-CSCF's ESP-in-UDP socket
// through a pcap tap while a UE registers, gets an OPTIONS, re-registers and
// de-registers; then Wireshark, given the key log both ends wrote, must
// decrypt every ESP packet with a good ICV and find each protected SIP
// message inside ESP, on the SPI TS 33.203 assigns to its direction, and no
// SIP in clear on that socket.
func TestCaptureDecryptsRegistration(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed (Debian: apt-get install tshark); CI installs it")
	}
	dir := t.TempDir()
	capFile := filepath.Join(dir, "pcscf-esp.pcap")
	f, err := os.Create(capFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	pw, err := pcap.NewWriter(bw, pcap.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var keys lockedBuffer
	r := newRig(t, func(c *ServerConfig) {
		c.WrapESP = pcap.TapFunc(pw)
		c.KeyLog = &keys
	})
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, func(c *UEConfig) { c.KeyLog = &keys })
	ctx := ctxT(t)

	activeSet := func() SetInfo {
		t.Helper()
		for _, s := range r.reg(alice.impi).Sets {
			if s.State == "active" {
				return s
			}
		}
		t.Fatalf("no active SA set: %+v", r.reg(alice.impi))
		return SetInfo{}
	}
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	set1 := activeSet()
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS: %v %v", res, err)
	}
	if err := u.Reregister(ctx); err != nil {
		t.Fatal(err)
	}
	set2 := activeSet()
	if set2.ID == set1.ID {
		t.Fatal("re-registration kept the same SA set")
	}
	if err := u.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return r.reg(alice.impi).IMPI == "" })
	espPort := r.srv.ESPAddr().Port()
	r.srv.Close() // the tap sees nothing more
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Logf("capture: %d packets; key log: %d lines", pw.Records(), strings.Count(keys.String(), "\n"))

	// The SPIs of each direction (TS 33.203 §7.1): UE port-c -> P-CSCF
	// port-s on the P-CSCF's spi-s, and back on the UE's spi-c; P-CSCF
	// port-c -> UE port-s on the UE's spi-s, and back on the P-CSCF's spi-c.
	hex := func(spi esp.SPI) string { return fmt.Sprintf("0x%08x", spi) }
	type want struct{ method, status, cseq, spi, expires string }
	wants := []want{
		{"REGISTER", "", "REGISTER", hex(set1.InboundSPI[0]), "600"}, // protected REGISTER with RES
		{"", "200", "REGISTER", hex(set1.OutSPI[0]), "600"},
		{"OPTIONS", "", "OPTIONS", hex(set1.OutSPI[1]), ""},
		{"", "200", "OPTIONS", hex(set1.InboundSPI[1]), ""},
		{"REGISTER", "", "REGISTER", hex(set1.InboundSPI[0]), "600"}, // re-registration, over set 1
		{"", "401", "REGISTER", hex(set1.OutSPI[0]), ""},
		{"REGISTER", "", "REGISTER", hex(set2.InboundSPI[0]), "600"}, // its answer, over set 2
		{"", "200", "REGISTER", hex(set2.OutSPI[0]), "600"},
		{"REGISTER", "", "REGISTER", hex(set2.InboundSPI[0]), "0"}, // de-registration
		{"", "200", "REGISTER", hex(set2.OutSPI[0]), "0"},
	}
	logged := map[string]bool{}
	var uat []string
	for _, l := range strings.Split(strings.TrimSpace(keys.String()), "\n") {
		if f := strings.Split(l, ","); len(f) == 8 {
			logged[strings.Trim(f[3], `"`)] = true
		}
		if !slices.Contains(uat, l) { // both ends log each SA
			uat = append(uat, l)
		}
	}
	// Two sets of four signalling SAs, and with each set the media tunnel's
	// pair (sip/mediatunnel.go).
	if len(uat) != 12 {
		t.Fatalf("key log has %d distinct SAs, want 12 (two sets of four, two media pairs):\n%s", len(uat), keys.String())
	}
	for _, w := range wants {
		if !logged[w.spi] {
			t.Fatalf("SPI %s not in the key log", w.spi)
		}
	}

	rows := tsharkRows(t, tshark, capFile, espPort, uat)
	if testing.Verbose() {
		for _, f := range rows {
			t.Logf("tshark: %s", strings.Join(f, "|"))
		}
	}

	// The check can fail: with one flipped bit in the integrity key of the
	// SA of the first protected REGISTER, tshark must call its ICVs bad.
	bad := slices.Clone(uat)
	for i, l := range bad {
		if strings.Contains(l, wants[0].spi) {
			f := strings.Split(l, ",")
			k := []byte(f[7]) // "0x<hex>"
			d := strings.IndexByte("0123456789abcdef", k[3])
			k[3] = "0123456789abcdef"[d^1] // one bit of the key's first octet
			f[7] = string(k)
			bad[i] = strings.Join(f, ",")
		}
	}
	flipped := 0
	for _, f := range tsharkRows(t, tshark, capFile, espPort, bad) {
		if f[4] == wants[0].spi {
			if f[6] == "1" || f[7] != "1" {
				t.Fatalf("frame %s: ICV good=%q bad=%q with a wrong key", f[0], f[6], f[7])
			}
			flipped++
		}
	}
	if flipped == 0 {
		t.Fatal("no frame on the SA whose key was flipped")
	}

	var sips []capturedSIP
	espFrames, keepalives := 0, 0
	espPortS := fmt.Sprint(espPort)
	for _, f := range rows {
		frame, protos, spi := f[0], f[1], f[4]
		// The outer UDP ports come first; one of them is the P-CSCF's.
		if first(f[2]) != espPortS && first(f[3]) != espPortS {
			t.Errorf("frame %s: outer ports %s -> %s, not the ESP socket's %d", frame, f[2], f[3], espPort)
		}
		layers := strings.Split(protos, ":")
		espAt := slices.Index(layers, "esp")
		sipAt := slices.Index(layers, "sip")
		switch {
		case espAt >= 0:
			espFrames++
			if f[5] != "0x04" {
				t.Errorf("frame %s (spi %s): next header %q, not IPv4: not decrypted (%s)", frame, spi, f[5], f[12])
			}
			if f[6] != "1" || f[7] == "1" {
				t.Errorf("frame %s (spi %s): ICV good=%q bad=%q (%s)", frame, spi, f[6], f[7], f[12])
			}
			if !logged[spi] {
				t.Errorf("frame %s: spi %s is not in the key log", frame, spi)
			}
		case slices.Contains(layers, "udpencap") && len(layers) == 4:
			keepalives++ // RFC 3948 NAT-keepalive: one 0xff byte
		default:
			t.Errorf("frame %s on the ESP socket is neither ESP nor a NAT-keepalive: %s", frame, protos)
		}
		if sipAt >= 0 && (espAt < 0 || sipAt < espAt) {
			t.Errorf("frame %s: SIP in clear on the ESP socket (%s)", frame, protos)
		}
		if sipAt >= 0 {
			sips = append(sips, capturedSIP{frame, protos, spi, f[8], f[9], f[10], f[11]})
		}
	}
	t.Logf("%d ESP packets (all decrypted, ICV good unless reported above), %d NAT-keepalives, %d SIP messages inside ESP",
		espFrames, keepalives, len(sips))

	// Each expected message in order; retransmissions may repeat one.
	i := 0
	for _, s := range sips {
		if i < len(wants) {
			w := wants[i]
			if s.method == w.method && s.status == w.status && s.cseq == w.cseq && s.spi == w.spi && s.expires == w.expires {
				i++
				continue
			}
		}
		if i > 0 {
			p := wants[i-1]
			if s.method == p.method && s.status == p.status && s.cseq == p.cseq && s.spi == p.spi {
				continue // a retransmission of the previous one
			}
		}
		t.Errorf("unexpected SIP inside ESP: %v", s)
	}
	if i != len(wants) {
		var seen []string
		for _, s := range sips {
			seen = append(seen, s.String())
		}
		w := wants[i]
		t.Fatalf("message %d not found inside ESP: %s%s (%s) expires %q on spi %s\nseen:\n%s",
			i+1, w.method, w.status, w.cseq, w.expires, w.spi, strings.Join(seen, "\n"))
	}
}

// tsharkRows runs tshark on the capture with the esp_sa lines given and
// returns its fields, one row per frame (see the -e list).
func tsharkRows(t *testing.T, tshark, capFile string, espPort uint16, uat []string) [][]string {
	t.Helper()
	decode := []string{fmt.Sprintf("udp.port==%d,udpencap", espPort)}
	for _, p := range innerSIPPorts {
		decode = append(decode, fmt.Sprintf("udp.port==%d,sip", p))
	}
	return tsharktest.Rows(context.Background(), t, tsharktest.Spec{Tshark: tshark, File: capFile, UAT: uat, DecodeAs: decode,
		Fields: []string{"frame.number", "frame.protocols", "udp.srcport", "udp.dstport", "esp.spi", "esp.protocol",
			"esp.icv_good", "esp.icv_bad", "sip.Method", "sip.Status-Code", "sip.CSeq.method", "sip.Expires", "_ws.expert.message"}})
}

// first is the first of tshark's comma-separated occurrences.
func first(s string) string {
	a, _, _ := strings.Cut(s, ",")
	return a
}
