package esp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imsec/imsec/internal/inet"
)

// Interoperability with implementations we did not write: Wireshark's ESP
// dissector (libgcrypt) decrypts and authenticates what we seal, and
// scapy's SecurityAssociation (python cryptography) seals what we open.

var (
	interopSrc = netip.MustParseAddr("192.0.2.1")
	interopDst = netip.MustParseAddr("198.51.100.2")
)

// innerUDP builds an IPv4/UDP packet (ports 40000→40001, no checksum)
// around payload: what tunnel mode carries.
func innerUDP(payload []byte) []byte {
	ip := make([]byte, 20+8, 28+len(payload))
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	copy(ip[12:], netip.MustParseAddr("10.45.0.2").AsSlice())
	copy(ip[16:], netip.MustParseAddr("10.45.0.1").AsSlice())
	binary.BigEndian.PutUint16(ip[10:], inet.Checksum(inet.Sum(0, ip[:20])))
	binary.BigEndian.PutUint16(ip[20:], 40000)
	binary.BigEndian.PutUint16(ip[22:], 40001)
	binary.BigEndian.PutUint16(ip[24:], uint16(8+len(payload)))
	return append(ip, payload...)
}

// pcapWriter writes the classic libpcap format (24-byte file header,
// 16-byte record headers), Ethernet link type, by hand: no cgo.
type pcapWriter struct{ buf bytes.Buffer }

func newPcap() *pcapWriter {
	w := &pcapWriter{}
	h := make([]byte, 24)
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], 65535)
	binary.LittleEndian.PutUint32(h[20:], 1) // LINKTYPE_ETHERNET
	w.buf.Write(h)
	return w
}

// addESPinUDP frames an ESP packet as Ethernet/IPv4/UDP 4500→4500 (RFC 3948).
func (w *pcapWriter) addESPinUDP(src, dst netip.Addr, esp []byte) {
	frame := make([]byte, 14+20+8, 42+len(esp))
	copy(frame[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(frame[6:12], []byte{2, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(frame[12:], 0x0800)
	ip := frame[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(esp)))
	copy(ip[12:], src.AsSlice())
	copy(ip[16:], dst.AsSlice())
	binary.BigEndian.PutUint16(ip[10:], inet.Checksum(inet.Sum(0, ip)))
	udp := frame[34:42]
	binary.BigEndian.PutUint16(udp[0:], UDPEncapPort)
	binary.BigEndian.PutUint16(udp[2:], UDPEncapPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(esp)))
	frame = append(frame, esp...)
	rec := make([]byte, 16)
	n := uint32(w.buf.Len())
	binary.LittleEndian.PutUint32(rec[0:], 1_700_000_000)
	binary.LittleEndian.PutUint32(rec[4:], n%1_000_000)
	binary.LittleEndian.PutUint32(rec[8:], uint32(len(frame)))
	binary.LittleEndian.PutUint32(rec[12:], uint32(len(frame)))
	w.buf.Write(rec)
	w.buf.Write(frame)
}

type sealedFrame struct {
	pair    pair
	mode    Mode
	spi     SPI
	seq     uint64
	nh      byte
	payload []byte // the UDP payload tshark should show as data
	padLen  int    // the Pad Length tshark should read
}

func TestInteropTshark(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed (Debian: apt-get install tshark); CI installs it")
	}
	pc := newPcap()
	var uat []string
	var frames []sealedFrame
	var keylog bytes.Buffer
	kl := NewKeyLog(&keylog)
	spi := SPI(0x1000)
	for _, p := range allPairs {
		for _, mode := range []Mode{Tunnel, Transport} {
			spi++
			c := p.config(mode, false)
			c.SPI = spi
			c.EncKey = keyBytes(len(c.EncKey), byte(spi))
			o, err := NewOutbound(c)
			if err != nil {
				t.Fatal(err)
			}
			line, err := KeyLogLine(c, interopSrc, interopDst)
			if err != nil {
				t.Fatal(err)
			}
			uat = append(uat, line)
			if err := kl.Log(c, interopSrc, interopDst); err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{1, 30, 333, 1300} {
				payload := bytes.Repeat([]byte{byte(n), byte(spi)}, n)[:n]
				var inner []byte
				if mode == Tunnel {
					inner = innerUDP(payload)
				} else {
					inner = innerUDP(payload)[20:] // the UDP datagram alone
				}
				nh := byte(17)
				if mode == Tunnel {
					nh = 4
				}
				pc.addESPinUDP(interopSrc, interopDst, seal(t, o, inner, 17))
				minPad := (o.a.align - (len(inner)+TrailerLen)%o.a.align) % o.a.align
				frames = append(frames, sealedFrame{p, mode, spi, o.Seq(), nh, payload, minPad})
				if n == 30 {
					// The same with all the padding SealJob.Pad can add
					// (tun.Config.BatchPad): tshark must find the payload
					// and read the padding's length.
					pad := o.MaxPad(len(inner))
					pc.addESPinUDP(interopSrc, interopDst, sealPadded(t, o, inner, 17, pad))
					frames = append(frames, sealedFrame{p, mode, spi, o.Seq(), nh, payload, minPad + pad})
				}
			}
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "esp.pcap")
	if err := os.WriteFile(file, pc.buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// Run 1 reads the SAs from the profile's esp_sa UAT file, as written
	// by KeyLog; run 2 passes the same lines with -o uat:esp_sa:...
	if err := os.MkdirAll(filepath.Join(dir, "wireshark"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "wireshark", "esp_sa"), keylog.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for run, fromFile := range []bool{true, false} {
		args := []string{"-r", file, "-n",
			"-o", "esp.enable_encryption_decode:TRUE",
			"-o", "esp.enable_authentication_check:TRUE",
			"-o", "esp.do_esp_sequence_analysis:FALSE",
			"-d", "udp.port==40001,data",
			"-T", "fields", "-E", "separator=|",
			"-e", "frame.number", "-e", "esp.spi", "-e", "esp.sequence", "-e", "esp.protocol",
			"-e", "esp.icv_good", "-e", "esp.icv_bad", "-e", "data.data", "-e", "esp.pad_len", "-e", "_ws.expert.message"}
		if !fromFile {
			for _, l := range uat {
				args = append(args, "-o", "uat:esp_sa:"+l)
			}
		}
		cmd := exec.Command(tshark, args...)
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir)
		if !fromFile {
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tshark: %v\n%s", err, out)
		}
		checkTsharkRows(t, run, string(out), frames)
	}
}

func checkTsharkRows(t *testing.T, run int, out string, frames []sealedFrame) {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var rows [][]string
	for _, l := range lines {
		if f := strings.Split(l, "|"); len(f) == 9 {
			rows = append(rows, f)
		} else if !strings.Contains(l, "could be dangerous") {
			t.Logf("tshark: %s", l)
		}
	}
	if len(rows) != len(frames) {
		t.Fatalf("tshark printed %d packets, we wrote %d:\n%s", len(rows), len(frames), out)
	}
	for i, f := range frames {
		r := rows[i]
		name := fmt.Sprintf("run %d frame %d (%v %v, %d bytes)", run+1, i+1, f.pair, f.mode, len(f.payload))
		if r[1] != fmt.Sprintf("0x%08x", uint32(f.spi)) || r[2] != fmt.Sprint(f.seq) {
			t.Errorf("%s: tshark spi %s seq %s", name, r[1], r[2])
		}
		if r[3] != fmt.Sprintf("0x%02x", f.nh) {
			t.Errorf("%s: tshark next header %q, want %d (not decrypted?) %s", name, r[3], f.nh, r[8])
		}
		if r[4] != "1" || r[5] == "1" {
			t.Errorf("%s: tshark ICV good=%q bad=%q %s", name, r[4], r[5], r[8])
		}
		if r[7] != fmt.Sprint(f.padLen) {
			t.Errorf("%s: tshark pad length %q, want %d", name, r[7], f.padLen)
		}
		if r[6] != hex.EncodeToString(f.payload) {
			t.Errorf("%s: tshark inner payload\n%s\nwant\n%s", name, r[6], hex.EncodeToString(f.payload))
		}
	}
}

var scapyEnc = map[EncAlg]string{EncNull: "NULL", EncAESCBC: "AES-CBC", EncDES3CBC: "3DES", EncAESGCM: "AES-GCM"}
var scapyAuth = map[AuthAlg]string{AuthNull: "NULL", AuthHMACSHA196: "HMAC-SHA1-96", AuthHMACMD596: "HMAC-MD5-96", AuthHMACSHA256128: "SHA2-256-128"}

// TestInteropScapy: scapy seals (testdata/scapy_esp.py), we open, byte-exact.
func TestInteropScapy(t *testing.T) {
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skip("no /usr/bin/python3 (Debian: apt-get install python3-scapy); CI installs it")
	}
	if err := exec.Command(python, "-c", "import scapy.layers.ipsec").Run(); err != nil {
		t.Skip("python3-scapy not installed (Debian: apt-get install python3-scapy); CI installs it")
	}
	type saSpec struct {
		SPI     SPI    `json:"spi"`
		Mode    string `json:"mode"`
		Enc     string `json:"enc"`
		EncKey  string `json:"enc_key"`
		Auth    string `json:"auth"`
		AuthKey string `json:"auth_key"`
		ESN     bool   `json:"esn"`
		ESNHi   uint32 `json:"esn_hi"`
		Seq     uint32 `json:"seq"`
		Sizes   []int  `json:"sizes"`
	}
	var specs []saSpec
	ins := map[SPI]*Inbound{}
	spi := SPI(0x2000)
	add := func(p pair, mode Mode, esn bool, esnHi, seq uint32) {
		spi++
		c := p.config(mode, esn)
		c.SPI = spi
		c.EncKey = keyBytes(len(c.EncKey), byte(spi))
		c.AuthKey = keyBytes(len(c.AuthKey), byte(spi)+50)
		in, err := NewInbound(c)
		if err != nil {
			t.Fatal(err)
		}
		if esn {
			in.win.top.Store(uint64(esnHi)<<32 | uint64(seq-1)) // where a receiver would be
		}
		ins[spi] = in
		specs = append(specs, saSpec{spi, mode.String(), scapyEnc[p.enc], hex.EncodeToString(c.EncKey),
			scapyAuth[p.auth], hex.EncodeToString(c.AuthKey), esn, esnHi, seq, []int{0, 1, 2, 3, 13, 100, 1000, 1400}})
	}
	for _, p := range allPairs {
		for _, mode := range []Mode{Tunnel, Transport} {
			add(p, mode, false, 0, 1)
			if p.enc == EncAESGCM { // scapy ignores ESN in HMACs; see the script
				add(p, mode, true, 1, 5)
				add(p, mode, true, 0x12345678, 0xfffffff0)
			}
		}
	}
	in, err := json.Marshal(specs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, filepath.Join("testdata", "scapy_esp.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scapy: %v\n%s", err, stderr.String())
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct {
			SPI   SPI    `json:"spi"`
			Seq   uint64 `json:"seq"`
			NH    byte   `json:"nh"`
			ESP   string `json:"esp"`
			Inner string `json:"inner"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("scapy output %q: %v", line, err)
		}
		pkt, inner := unhex(t, r.ESP), unhex(t, r.Inner)
		sa := ins[r.SPI]
		if Classify(pkt) != KindESP {
			t.Fatalf("spi %#x: classified %v", r.SPI, Classify(pkt))
		}
		payload, nh, seq, err := sa.Open(pkt)
		if err != nil || nh != r.NH || seq != r.Seq || !bytes.Equal(payload, inner) {
			t.Errorf("spi %#x (%s/%s %v esn=%v) seq %#x: Open = nh %d seq %#x err %v, payload match %v",
				r.SPI, sa.a.enc, sa.a.auth, sa.mode, sa.esn, r.Seq, nh, seq, err, bytes.Equal(payload, inner))
		}
		n++
	}
	if want := len(specs) * len(specs[0].Sizes); n != want {
		t.Fatalf("opened %d scapy packets, want %d", n, want)
	}
}
