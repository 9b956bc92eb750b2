package demo

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/internal/tsharktest"
	"github.com/imsec/imsec/sip"
)

// Inner SIP ports: the P-CSCF's port-s and two port-c, the UE's port-s and
// two port-c (the ServerConfig.PortS and UEConfig.PortS defaults the demo
// keeps).
var innerSIPPorts = []uint16{sip.DefaultPortS, sip.DefaultPortS + 1, sip.DefaultPortS + 2,
	sip.DefaultUEPortS, sip.DefaultUEPortS - 6, sip.DefaultUEPortS - 5}

// TestCaptureAccessIsOnlyESP runs the demo with Config.Capture (both UEs'
// signalling and media ESP-in-UDP sockets) and the key log, then asks
// Wireshark's dissectors what went over the access side:
//
//   - every frame is ESP that decrypts (next header IPv4: tunnel mode) with
//     a good ICV on an SA of the key log, or a one-octet NAT keepalive (a
//     datagram in clear would show as ESP that does not decrypt, since the
//     sockets' ports are decoded as ESP-in-UDP; SIP text is looked for
//     in the raw datagrams too); with one integrity key flipped, the ICVs
//     of that SA turn bad;
//   - the protected REGISTER, INVITE, 180, 200, ACK and BYE are all there,
//     only inside ESP;
//   - RTP audio (PT 0) and video (PT 96) are there, only inside ESP;
//   - the SPIs that carry SIP and the SPIs that carry RTP are disjoint (the
//     key log does not say which SA is for what: the media SAs are the ones
//     whose payloads decrypt to RTP), and so are the sockets (outer
//     conversations) that carry them.
func TestCaptureAccessIsOnlyESP(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed (Debian: apt-get install tshark); CI installs it")
	}
	var c *accessCapture
	// Tshark's decode-as goes by port at every layer, so an inner (netstack)
	// port equal to an outer (kernel) one would be dissected as the wrong
	// layer. Both are random; when they meet (about one run in a thousand),
	// run again.
	for attempt := 1; ; attempt++ {
		c = runCapturedDemo(t)
		c.pass1 = c.tshark(t, tshark, c.uat, nil)
		for _, r := range c.pass1 {
			for _, p := range strings.Split(r[colSDPPort], ",") {
				if p != "" && p != "0" {
					c.sdpPorts = append(c.sdpPorts, p)
				}
			}
		}
		slices.Sort(c.sdpPorts)
		c.sdpPorts = slices.Compact(c.sdpPorts)
		clash := ""
		for _, p := range c.sdpPorts {
			if slices.Contains(c.outerPorts, p) {
				clash = p
			}
		}
		if clash == "" {
			break
		}
		if attempt == 3 {
			t.Fatalf("inner media port %s equals an outer ESP port in three runs", clash)
		}
		t.Logf("inner media port %s equals an outer ESP port: running the demo again", clash)
	}
	// The SDP of the INVITE and 200 in each tunnel names both ends of each
	// inner media flow: a UE's RTP port and its P-CSCF relay's.
	if len(c.sdpPorts) != 8 {
		t.Fatalf("SDP media ports in the capture: %v, want 8 (audio and video of two UEs and two relays)", c.sdpPorts)
	}
	rows := c.tshark(t, tshark, c.uat, c.sdpPorts)
	if len(rows) != c.records {
		t.Fatalf("tshark read %d frames, the capture has %d", len(rows), c.records)
	}
	if testing.Verbose() {
		for _, f := range rows {
			t.Logf("tshark: %s", strings.Join(f, "|"))
		}
	}

	sipSPIs, rtpSPIs := map[string]bool{}, map[string]bool{}
	sipConvs, rtpConvs := map[string]bool{}, map[string]bool{}
	// What was seen inside ESP: message kind -> outer conversations.
	sipSeen := map[string]map[string]bool{}
	rtpSeen := map[string]map[string]bool{} // payload type -> SPIs
	espFrames, keepalives := 0, 0
	for _, f := range rows {
		frame, spi := f[colFrame], f[colSPI]
		layers := strings.Split(f[colProtocols], ":")
		espAt := slices.Index(layers, "esp")
		sipAt := slices.Index(layers, "sip")
		rtpAt := slices.Index(layers, "rtp")
		conv := conversation(f[colSrcPort], f[colDstPort])
		switch {
		case espAt >= 0:
			espFrames++
			if f[colNextHeader] != "0x04" {
				t.Errorf("frame %s (spi %s): next header %q, not IPv4: not decrypted (%s)", frame, spi, f[colNextHeader], f[colExpert])
			}
			if f[colICVGood] != "1" || f[colICVBad] == "1" {
				t.Errorf("frame %s (spi %s): ICV good=%q bad=%q (%s)", frame, spi, f[colICVGood], f[colICVBad], f[colExpert])
			}
			if !c.logged[spi] {
				t.Errorf("frame %s: spi %s is not in the key log", frame, spi)
			}
		case strings.Join(layers, ":") == "raw:ip:udp:udpencap" && first(f[colUDPLen]) == "9":
			keepalives++ // RFC 3948 §2.2 NAT-keepalive: one 0xff octet
		default:
			t.Errorf("frame %s on a UE's ESP socket is neither ESP nor a NAT keepalive: %s", frame, f[colProtocols])
		}
		if sipAt >= 0 {
			if espAt < 0 || sipAt < espAt {
				t.Errorf("frame %s: SIP in clear on a UE's ESP socket (%s)", frame, f[colProtocols])
				continue
			}
			sipSPIs[spi], sipConvs[conv] = true, true
			kind := f[colMethod]
			if kind == "" {
				kind = f[colStatus] + " " + f[colCSeqMethod]
			}
			if sipSeen[kind] == nil {
				sipSeen[kind] = map[string]bool{}
			}
			sipSeen[kind][conv] = true
		}
		if rtpAt >= 0 {
			if espAt < 0 || rtpAt < espAt {
				t.Errorf("frame %s: RTP in clear on a UE's ESP socket (%s)", frame, f[colProtocols])
				continue
			}
			rtpSPIs[spi], rtpConvs[conv] = true, true
			pt := f[colPT]
			if rtpSeen[pt] == nil {
				rtpSeen[pt] = map[string]bool{}
			}
			rtpSeen[pt][spi] = true
		}
	}
	t.Logf("%d frames: %d ESP (every one decrypted with a good ICV unless reported above), %d NAT keepalives; SIP on SPIs %v, RTP on SPIs %v",
		len(rows), espFrames, keepalives, slices.Sorted(maps.Keys(sipSPIs)), slices.Sorted(maps.Keys(rtpSPIs)))

	// Signalling: each message of the registration and the call, inside
	// ESP, in both UEs' signalling tunnels (both UEs register and
	// de-register; the call's requests and final responses cross both).
	// (The 180 once reached UE B's tunnel only: sent back to back with the
	// 200, sipgo handled the 200 first and dropped the 180; the UE now rings
	// for UEConfig.RingTime before it answers.)
	for kind, tunnels := range map[string]int{
		"REGISTER": 2, "200 REGISTER": 2,
		"INVITE": 2, "180 INVITE": 2, "200 INVITE": 2, "ACK": 2, "BYE": 2, "200 BYE": 2,
	} {
		if got := len(sipSeen[kind]); got < tunnels {
			t.Errorf("%s inside ESP in %d UE tunnels, want %d; seen: %v", kind, got, tunnels, sipSeen)
		}
	}
	if len(sipConvs) != 2 {
		t.Errorf("SIP inside ESP on %d outer conversations %v, want 2 (one signalling tunnel per UE)", len(sipConvs), slices.Sorted(maps.Keys(sipConvs)))
	}
	// Media: both kinds, both directions of both UEs' media tunnels.
	if len(rtpSeen) != 2 || len(rtpSeen["0"]) != 4 || len(rtpSeen["96"]) != 4 {
		t.Errorf("RTP payload types -> SPIs %v, want PT 0 and PT 96 each on 4 SPIs (to and from each UE)", rtpSeen)
	}
	if len(rtpSPIs) != 4 {
		t.Errorf("RTP on %d SPIs %v, want 4 (the media SA pairs of UE A and UE B)", len(rtpSPIs), slices.Sorted(maps.Keys(rtpSPIs)))
	}
	if len(rtpConvs) != 2 {
		t.Errorf("RTP inside ESP on %d outer conversations %v, want 2 (one media tunnel per UE)", len(rtpConvs), slices.Sorted(maps.Keys(rtpConvs)))
	}
	// Signalling SAs and media SAs, and their sockets, are apart.
	for spi := range sipSPIs {
		if rtpSPIs[spi] {
			t.Errorf("spi %s carries both SIP and RTP", spi)
		}
	}
	for conv := range sipConvs {
		if rtpConvs[conv] {
			t.Errorf("outer conversation %s carries both SIP and RTP", conv)
		}
	}
	if len(sipSPIs) == 0 || len(rtpSPIs) == 0 {
		t.Fatal("nothing to corrupt for the negative control")
	}

	// The ICV check can fail: flip one bit of the integrity key of one
	// signalling SA and one media SA; every frame on those SAs must then
	// have a bad ICV, and the others still good ones.
	victims := map[string]bool{slices.Min(slices.Collect(maps.Keys(sipSPIs))): true, slices.Min(slices.Collect(maps.Keys(rtpSPIs))): true}
	bad := slices.Clone(c.uat)
	for i, l := range bad {
		f := strings.Split(l, ",")
		if victims[strings.Trim(f[3], `"`)] {
			k := []byte(f[7]) // "0x<hex>"
			d := strings.IndexByte("0123456789abcdef", k[3])
			k[3] = "0123456789abcdef"[d^1]
			f[7] = string(k)
			bad[i] = strings.Join(f, ",")
		}
	}
	flipped := map[string]int{}
	for _, f := range c.tshark(t, tshark, bad, c.sdpPorts) {
		spi := f[colSPI]
		switch {
		case spi == "":
		case victims[spi]:
			if f[colICVGood] == "1" || f[colICVBad] != "1" {
				t.Errorf("frame %s (spi %s): ICV good=%q bad=%q with a wrong integrity key", f[colFrame], spi, f[colICVGood], f[colICVBad])
			}
			flipped[spi]++
		case f[colICVGood] != "1":
			t.Errorf("frame %s (spi %s): ICV good=%q though its key is intact", f[colFrame], spi, f[colICVGood])
		}
	}
	if len(flipped) != 2 {
		t.Errorf("frames on the SAs with a flipped key: %v, want some on each of %v", flipped, slices.Sorted(maps.Keys(victims)))
	}
}

// tshark -T fields columns (see accessCapture.tshark).
const (
	colFrame = iota
	colProtocols
	colSrcPort
	colDstPort
	colUDPLen
	colSPI
	colNextHeader
	colICVGood
	colICVBad
	colMethod
	colStatus
	colCSeqMethod
	colSDPPort
	colPT
	colExpert
	nCols
)

var tsharkFields = [nCols]string{ // the order of the col constants
	"frame.number", "frame.protocols", "udp.srcport", "udp.dstport", "udp.length",
	"esp.spi", "esp.protocol", "esp.icv_good", "esp.icv_bad",
	"sip.Method", "sip.Status-Code", "sip.CSeq.method", "sdp.media.port",
	"rtp.p_type", "_ws.expert.message",
}

// accessCapture is one demo run's capture and key log.
type accessCapture struct {
	dir        string
	file       string
	records    int
	outerPorts []string        // the UDP ports of the UEs' ESP sockets and of their peers
	uat        []string        // distinct esp_sa lines
	logged     map[string]bool // their SPIs, 0x%08x
	pass1      [][]string
	sdpPorts   []string
}

func runCapturedDemo(t *testing.T) *accessCapture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, kl, capture bytes.Buffer
	// Capture needs no lock of its own: the pcap.Writer writes each record
	// in one call under its mutex, and stops before Run returns.
	if _, err := Run(ctx, Config{Out: &out, KeyLog: &lockedWriter{w: &kl}, Capture: &capture, CallDuration: time.Second}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	c := &accessCapture{dir: t.TempDir(), logged: map[string]bool{}}
	c.file = filepath.Join(c.dir, "access.pcap")
	if err := os.WriteFile(c.file, capture.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	ports := map[string]bool{}
	err := eachUDP(capture.Bytes(), func(src, dst uint16, payload []byte) {
		c.records++
		ports[fmt.Sprint(src)], ports[fmt.Sprint(dst)] = true, true
		// Tshark decodes these ports as ESP-in-UDP, so a datagram in clear
		// would show there as ESP that does not decrypt; SIP text is also
		// named here for what it is.
		if looksLikeSIP(payload) {
			t.Errorf("record %d: SIP in clear on a UE's ESP socket (%d -> %d): %.40q", c.records, src, dst, payload)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	c.outerPorts = slices.Sorted(maps.Keys(ports))
	for _, l := range strings.Split(strings.TrimSpace(kl.String()), "\n") {
		f := strings.Split(l, ",")
		if len(f) != 8 {
			t.Fatalf("key log line %q", l)
		}
		c.logged[strings.Trim(f[3], `"`)] = true
		if !slices.Contains(c.uat, l) { // UE and P-CSCF both log each SA
			c.uat = append(c.uat, l)
		}
	}
	// Three registrations (A, B, A again), each four signalling SAs and a
	// media pair.
	if len(c.uat) != 18 || len(c.logged) != 18 {
		t.Fatalf("key log has %d distinct SAs on %d SPIs, want 18:\n%s", len(c.uat), len(c.logged), kl.String())
	}
	// 4 UE sockets; UE A's two peers are the NAT's inside addresses, UE B's
	// its P-CSCF's ESP sockets.
	if len(c.outerPorts) != 8 {
		t.Fatalf("outer UDP ports %v, want 8 (four UE ESP sockets and their peers)", c.outerPorts)
	}
	t.Logf("capture: %d datagrams on outer ports %v; key log: %d SAs", c.records, c.outerPorts, len(c.uat))
	return c
}

// tshark dissects the capture with the esp_sa lines given: the outer ports
// as ESP-in-UDP, the inner SIP ports as SIP, the rtpPorts as RTP and any
// other UDP that looks like RTP as RTP (its heuristic). It returns one row
// of tsharkFields per frame.
func (c *accessCapture) tshark(t *testing.T, tshark string, uat []string, rtpPorts []string) [][]string {
	t.Helper()
	var decode []string
	for _, p := range c.outerPorts {
		decode = append(decode, "udp.port=="+p+",udpencap")
	}
	for _, p := range innerSIPPorts {
		decode = append(decode, fmt.Sprintf("udp.port==%d,sip", p))
	}
	for _, p := range rtpPorts {
		decode = append(decode, "udp.port=="+p+",rtp")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return tsharktest.Rows(ctx, t, tsharktest.Spec{Tshark: tshark, File: c.file, UAT: uat, DecodeAs: decode,
		Args: []string{"--enable-heuristic", "rtp_udp"}, Fields: tsharkFields[:]})
}

// eachUDP walks a pcap file as tun/pcap writes it (LINKTYPE_RAW, IPv4,
// one UDP datagram per record) and calls fn with each record's ports and
// payload.
func eachUDP(b []byte, fn func(src, dst uint16, payload []byte)) error {
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 || binary.LittleEndian.Uint32(b[20:]) != 101 {
		return fmt.Errorf("not a little-endian LINKTYPE_RAW pcap file")
	}
	for b = b[24:]; len(b) > 0; {
		if len(b) < 16 {
			return fmt.Errorf("pcap: truncated record header")
		}
		n := int(binary.LittleEndian.Uint32(b[8:]))
		if len(b) < 16+n {
			return fmt.Errorf("pcap: truncated record")
		}
		p := b[16 : 16+n]
		b = b[16+n:]
		if len(p) < 20 || p[0]>>4 != 4 || p[9] != 17 {
			return fmt.Errorf("pcap: record is not IPv4/UDP")
		}
		ihl := int(p[0]&0x0f) * 4
		if len(p) < ihl+8 {
			return fmt.Errorf("pcap: truncated UDP header")
		}
		fn(binary.BigEndian.Uint16(p[ihl:]), binary.BigEndian.Uint16(p[ihl+2:]), p[ihl+8:])
	}
	return nil
}

// looksLikeSIP reports whether a datagram opens like a SIP request or
// response (RFC 3261 §7.1, §7.2): "SIP/2.0 " or a method token, a space and
// a sip: or sips: URI.
func looksLikeSIP(b []byte) bool {
	if bytes.HasPrefix(b, []byte("SIP/2.0 ")) {
		return true
	}
	method, rest, ok := bytes.Cut(b, []byte(" "))
	if !ok || len(method) == 0 || len(method) > 16 {
		return false
	}
	for _, ch := range method {
		if ch < 'A' || ch > 'Z' {
			return false
		}
	}
	return bytes.HasPrefix(rest, []byte("sip:")) || bytes.HasPrefix(rest, []byte("sips:"))
}

// conversation names an outer UDP conversation by its two ports.
func conversation(src, dst string) string {
	p := []string{first(src), first(dst)}
	sort.Strings(p)
	return p[0] + "<->" + p[1]
}

// first is the first of tshark's comma-separated occurrences (the outer
// layer's).
func first(s string) string {
	a, _, _ := strings.Cut(s, ",")
	return a
}
