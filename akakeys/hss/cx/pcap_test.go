package cx

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fiorix/go-diameter/v4/diam"
	"github.com/fiorix/go-diameter/v4/diam/datatype"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/tun/pcap"
)

// This file checks the Cx traffic against an independent dissector: a
// client and a server talk over loopback TCP through a recording listener,
// the bytes are written as a pcap of synthesized TCP segments, and
// tshark (whose Diameter dictionary has the 3GPP Cx AVPs) must dissect
// every message as well-formed. The test imports tun/pcap, a test-only
// dependency outside akakeys: the file format and checksums live there.

// chunk is one Read or Write on the server's side of the connection.
type chunk struct {
	at         time.Time
	fromServer bool
	data       []byte
}

// recording keeps the chunks of the connections a recListener accepts, in
// the order they happened: a Write is recorded before the bytes go out and
// a Read after they came in, so an answer is never recorded before its
// request.
type recording struct {
	mu      sync.Mutex
	accepts int
	chunks  []chunk
}

func (r *recording) add(fromServer bool, b []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.chunks = append(r.chunks, chunk{time.Now(), fromServer, slices.Clone(b)})
}

type recListener struct {
	net.Listener
	rec *recording
}

func (l recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.rec.mu.Lock()
	l.rec.accepts++
	l.rec.mu.Unlock()
	return &recConn{Conn: c, rec: l.rec}, nil
}

type recConn struct {
	net.Conn
	rec *recording
}

func (c *recConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.rec.add(false, b[:n])
	}
	return n, err
}

func (c *recConn) Write(b []byte) (int, error) {
	c.rec.add(true, b)
	return c.Conn.Write(b)
}

// message is one Diameter message found in the recorded streams; off is
// where it starts in its direction's stream.
type message struct {
	code       uint32
	request    bool
	app        uint32
	fromServer bool
	off        int
}

// messages frames the two streams (RFC 6733 §3 lengths) and lists the
// messages in the order tshark reports them: in the chunk that completes
// them.
func messages(t *testing.T, chunks []chunk) []message {
	t.Helper()
	var ms []message
	var buf [2][]byte
	var base [2]int // stream offset of buf[i][0]
	for _, c := range chunks {
		d := 0
		if c.fromServer {
			d = 1
		}
		buf[d] = append(buf[d], c.data...)
		for len(buf[d]) >= diam.HeaderLength {
			n := int(binary.BigEndian.Uint32(buf[d]) & 0xffffff)
			if n < diam.HeaderLength {
				t.Fatalf("message length %d at offset %d", n, base[d])
			}
			if len(buf[d]) < n {
				break
			}
			h := buf[d][:n]
			ms = append(ms, message{
				code: binary.BigEndian.Uint32(h[4:]) & 0xffffff, request: h[4]&0x80 != 0,
				app: binary.BigEndian.Uint32(h[8:]), fromServer: c.fromServer, off: base[d],
			})
			buf[d], base[d] = buf[d][n:], base[d]+n
		}
	}
	for d := range buf {
		if len(buf[d]) != 0 {
			t.Fatalf("%d bytes left over in direction %d", len(buf[d]), d)
		}
	}
	return ms
}

// Addresses of the synthesized capture (RFC 5737 TEST-NET-2).
var (
	pcapClient = netip.MustParseAddrPort("198.51.100.10:49152")
	pcapServer = netip.MustParseAddrPort("198.51.100.1:3868")
)

// writeCapture writes chunks as one TCP connection: handshake, data
// segments of at most 1448 bytes with consistent sequence and
// acknowledgment numbers, and the close (the server closes first, after
// DPA).
func writeCapture(t *testing.T, file string, chunks []chunk) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := pcap.NewWriter(f, pcap.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cseq, sseq := uint32(0x1000_0000), uint32(0xffff_f000) // the server's numbers wrap
	seg := func(at time.Time, fromServer bool, flags pcap.TCPFlags, payload []byte) {
		t.Helper()
		src, dst, seq, ack := pcapClient, pcapServer, &cseq, &sseq
		if fromServer {
			src, dst, seq, ack = pcapServer, pcapClient, &sseq, &cseq
		}
		if err := w.WriteTCPAt(at, src, dst, pcap.TCPSegment{Seq: *seq, Ack: *ack, Flags: flags}, payload); err != nil {
			t.Fatal(err)
		}
		*seq += uint32(len(payload))
		if flags&(pcap.TCPSyn|pcap.TCPFin) != 0 {
			*seq++
		}
	}
	first, last := chunks[0].at, chunks[len(chunks)-1].at
	seg(first.Add(-3*time.Millisecond), false, pcap.TCPSyn, nil)
	seg(first.Add(-2*time.Millisecond), true, pcap.TCPSyn|pcap.TCPAck, nil)
	seg(first.Add(-time.Millisecond), false, pcap.TCPAck, nil)
	for _, c := range chunks {
		for b := c.data; len(b) > 0; {
			n := min(len(b), 1448)
			seg(c.at, c.fromServer, pcap.TCPAck|pcap.TCPPsh, b[:n])
			b = b[n:]
		}
	}
	seg(last.Add(time.Millisecond), true, pcap.TCPFin|pcap.TCPAck, nil)
	seg(last.Add(2*time.Millisecond), false, pcap.TCPFin|pcap.TCPAck, nil)
	seg(last.Add(3*time.Millisecond), true, pcap.TCPAck, nil)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// frame is one line of tshark's output: the fields of one packet, each a
// list (a packet may carry several messages or AVPs).
type frame map[string][]string

var tsharkFields = []string{
	"frame.number", "diameter.cmd.code", "diameter.flags.request", "diameter.applicationId",
	"_ws.malformed", "_ws.expert.severity", "_ws.expert.message",
	"diameter.3GPP-SIP-Authentication-Scheme", "diameter.3GPP-SIP-Authorization", "diameter.3GPP-SIP-Authenticate",
	"diameter.Server-Assignment-Type", "diameter.Public-Identity",
}

func dissect(t *testing.T, tshark, file string) []frame {
	t.Helper()
	args := []string{"-r", file, "-n", "-d", "tcp.port==3868,diameter", "-T", "fields", "-E", "separator=|", "-E", "aggregator=;"}
	for _, f := range tsharkFields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command(tshark, args...)
	dir := filepath.Dir(file)
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s%s", err, out, stderr.String())
	}
	var frames []frame
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		vals := strings.Split(l, "|")
		if len(vals) != len(tsharkFields) {
			t.Fatalf("tshark line %q", l)
		}
		f := frame{}
		for i, v := range vals {
			if v != "" {
				f[tsharkFields[i]] = strings.Split(v, ";")
			}
		}
		frames = append(frames, f)
	}
	return frames
}

// all concatenates a field's values over the frames.
func all(frames []frame, field string) []string {
	var vs []string
	for _, f := range frames {
		vs = append(vs, f[field]...)
	}
	return vs
}

// Expert severities (PI_WARN, PI_ERROR in Wireshark's epan/proto.h).
const (
	severityWarn  = 0x00600000
	severityError = 0x00800000
)

func isError(sev string) bool {
	n, err := strconv.ParseUint(sev, 0, 32)
	return (err == nil && n >= severityError) || strings.EqualFold(sev, "Error")
}

// isWarning is PI_WARN or above.
func isWarning(sev string) bool {
	n, err := strconv.ParseUint(sev, 0, 32)
	return (err == nil && n >= severityWarn) || strings.EqualFold(sev, "Warning") || isError(sev)
}

func TestTsharkDissectsCx(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	if err != nil {
		t.Skip("tshark not installed (Debian: apt-get install tshark); CI installs it")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recording{}
	e := startOn(t, nil, recListener{ln, rec})
	ctx := context.Background()
	a := alice()

	// CER/CEA, SAR NO_ASSIGNMENT (the client learns the IMPUs), MAR/MAA.
	v, err := e.cli.Vector(ctx, a.IMPI)
	if err != nil {
		t.Fatal(err)
	}
	// MAR with RAND || AUTS, as TestResyncMovesSQN.
	auts := akakeys.NewMilenage(a.K, a.OPc).AUTS(v.RAND, e.h.Scheme().Join(1000, 3))
	nv, err := e.cli.Resync(ctx, a.IMPI, v.RAND, auts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.LookupIMPU(ctx, "tel:+15550100"); err != nil {
		t.Fatal(err)
	}
	un := base(avpUserName, datatype.UTF8String(a.IMPI))
	pi := tgpp(avpPublicIdentity, datatype.UTF8String("sip:alice@ims.example"))
	sn := tgpp(avpServerName, datatype.UTF8String("sip:scscf.ims.example:6060"))
	if _, err := request(t, e, CmdUserAuthorization, un, pi); err != nil {
		t.Fatal(err)
	}
	if _, err := request(t, e, CmdServerAssignment, un, pi, sn,
		tgpp(avpServerAssignmentType, datatype.Enumerated(Registration)), tgpp(avpUserDataAlreadyAvailable, datatype.Enumerated(0))); err != nil {
		t.Fatal(err)
	}
	if _, err := request(t, e, CmdLocationInfo, pi); err != nil {
		t.Fatal(err)
	}
	if _, err := request(t, e, CmdServerAssignment, un, pi, sn,
		tgpp(avpServerAssignmentType, datatype.Enumerated(UserDeregistration)), tgpp(avpUserDataAlreadyAvailable, datatype.Enumerated(0))); err != nil {
		t.Fatal(err)
	}
	cc, err := e.cli.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.roundTrip(ctx, cc, e.cli.newRequest(cmdDeviceWatchdog, 0, false)); err != nil {
		t.Fatal(err)
	}
	e.stop() // DPR/DPA; every goroutine that records has returned after it
	if rec.accepts != 1 {
		t.Fatalf("%d connections, want 1", rec.accepts)
	}
	chunks := rec.chunks

	type cmd struct {
		name    string
		code    uint32
		request bool
		app     uint32
	}
	pair := func(req, ans string, code, app uint32) []cmd {
		return []cmd{{req, code, true, app}, {ans, code, false, app}}
	}
	var want []cmd
	for _, p := range [][]cmd{
		pair("CER", "CEA", cmdCapabilitiesExch, 0),
		pair("SAR", "SAA", CmdServerAssignment, AppID), // NO_ASSIGNMENT, by IMPI
		pair("MAR", "MAA", CmdMultimediaAuth, AppID),
		pair("MAR", "MAA", CmdMultimediaAuth, AppID),   // resync
		pair("SAR", "SAA", CmdServerAssignment, AppID), // NO_ASSIGNMENT, by IMPU
		pair("UAR", "UAA", CmdUserAuthorization, AppID),
		pair("SAR", "SAA", CmdServerAssignment, AppID), // REGISTRATION
		pair("LIR", "LIA", CmdLocationInfo, AppID),
		pair("SAR", "SAA", CmdServerAssignment, AppID), // USER_DEREGISTRATION
		pair("DWR", "DWA", cmdDeviceWatchdog, 0),
		pair("DPR", "DPA", cmdDisconnectPeer, 0),
	} {
		want = append(want, p...)
	}
	ms := messages(t, chunks)
	if len(ms) != len(want) {
		t.Fatalf("recorded %d messages, want %d: %+v", len(ms), len(want), ms)
	}
	for i, m := range ms {
		if w := want[i]; m.code != w.code || m.request != w.request || m.app != w.app || m.fromServer == m.request {
			t.Fatalf("message %d: %+v, want %s", i+1, m, w.name)
		}
	}

	t.Run("well-formed", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "cx.pcap")
		writeCapture(t, file, chunks)
		frames := dissect(t, tshark, file)
		var seen []cmd
		var summary []string
		for _, f := range frames {
			if f["_ws.malformed"] != nil {
				t.Errorf("frame %s: malformed %v", f["frame.number"], f["_ws.expert.message"])
			}
			if slices.ContainsFunc(f["_ws.expert.severity"], isError) {
				t.Errorf("frame %s: expert error among %q", f["frame.number"], f["_ws.expert.message"])
			} else if slices.ContainsFunc(f["_ws.expert.severity"], isWarning) {
				// Not a failure: the UAA's Server-Capabilities is an empty
				// Grouped AVP (TS 29.229 §6.3.4 makes all of its members
				// optional), which Wireshark notes as "Data is empty".
				t.Logf("frame %s: expert info %q (severity %v)", f["frame.number"], f["_ws.expert.message"], f["_ws.expert.severity"])
			}
			codes, reqs, apps := f["diameter.cmd.code"], f["diameter.flags.request"], f["diameter.applicationId"]
			if len(reqs) != len(codes) || len(apps) != len(codes) {
				t.Fatalf("frame %s: %v %v %v", f["frame.number"], codes, reqs, apps)
			}
			for i := range codes {
				code, err1 := strconv.ParseUint(codes[i], 10, 32)
				app, err2 := strconv.ParseUint(apps[i], 10, 32)
				if err1 != nil || err2 != nil {
					t.Fatalf("frame %s: %v %v", f["frame.number"], codes, apps)
				}
				req := reqs[i] == "1" || reqs[i] == "True"
				if !req && reqs[i] != "0" && reqs[i] != "False" {
					t.Fatalf("frame %s: request flag %q", f["frame.number"], reqs[i])
				}
				seen = append(seen, cmd{"", uint32(code), req, uint32(app)})
				summary = append(summary, fmt.Sprintf("%s:%s/%v", f["frame.number"][0], codes[i], req))
			}
		}
		t.Logf("tshark: %d frames, Diameter messages (frame:code/request) %s", len(frames), strings.Join(summary, " "))
		if len(seen) != len(want) {
			t.Fatalf("tshark found %d Diameter messages, we sent %d", len(seen), len(want))
		}
		for i, s := range seen {
			if w := want[i]; s.code != w.code || s.request != w.request || s.app != w.app {
				t.Errorf("message %d: tshark %+v, want %s %+v", i+1, s, w.name, w)
			}
		}
		// AVPs by name, with the values sent: MAR, MAA, MAR, MAA each carry the
		// scheme; SIP-Authorization is XRES in an MAA and RAND || AUTS in the
		// resync MAR; SIP-Authenticate is RAND || AUTN in an MAA.
		checkValues(t, frames, "diameter.3GPP-SIP-Authentication-Scheme", SchemeAKAv1MD5, SchemeAKAv1MD5, SchemeAKAv1MD5, SchemeAKAv1MD5)
		checkValues(t, frames, "diameter.3GPP-SIP-Authorization",
			hex.EncodeToString(v.XRES[:]), hex.EncodeToString(append(v.RAND[:], auts[:]...)), hex.EncodeToString(nv.XRES[:]))
		checkValues(t, frames, "diameter.3GPP-SIP-Authenticate",
			hex.EncodeToString(append(v.RAND[:], v.AUTN[:]...)), hex.EncodeToString(append(nv.RAND[:], nv.AUTN[:]...)))
		checkValues(t, frames, "diameter.Server-Assignment-Type",
			fmt.Sprint(NoAssignment), fmt.Sprint(NoAssignment), fmt.Sprint(Registration), fmt.Sprint(UserDeregistration))
		if pis := all(frames, "diameter.Public-Identity"); !slices.Contains(pis, "tel:+15550100") || !slices.Contains(pis, "sip:alice@ims.example") {
			t.Errorf("Public-Identity values %q", pis)
		}
	})

	// The same capture with the length of the first AVP of the first MAR
	// (its Session-Id) made 64 KiB longer than the message: tshark must
	// call that frame malformed, or the check above could not fail.
	t.Run("corrupt AVP length", func(t *testing.T) {
		var mar message
		for _, m := range ms {
			if m.code == CmdMultimediaAuth && m.request {
				mar = m
				break
			}
		}
		bad := make([]chunk, len(chunks))
		frameOf := -1
		off := mar.off + diam.HeaderLength + 5 // the high byte of the AVP's 24-bit length
		for i, c := range chunks {
			bad[i] = chunk{c.at, c.fromServer, slices.Clone(c.data)}
			if c.fromServer != mar.fromServer || frameOf >= 0 {
				continue
			}
			if off < len(c.data) {
				if bad[i].data[off] != 0 {
					t.Fatalf("Session-Id length % x", c.data[off:off+3])
				}
				bad[i].data[off] = 1
				frameOf = i
			} else {
				off -= len(c.data)
			}
		}
		file := filepath.Join(t.TempDir(), "cx-bad.pcap")
		writeCapture(t, file, bad)
		var malformed []string
		marMalformed := false
		for _, f := range dissect(t, tshark, file) {
			if f["_ws.malformed"] != nil {
				malformed = append(malformed, fmt.Sprintf("frame %s (command %v): %q", f["frame.number"][0], f["diameter.cmd.code"], f["_ws.expert.message"]))
				marMalformed = marMalformed || slices.Equal(f["diameter.cmd.code"], []string{fmt.Sprint(CmdMultimediaAuth)})
			}
		}
		if !marMalformed {
			t.Fatalf("tshark did not call the MAR with a corrupt AVP length malformed (malformed frames: %q)", malformed)
		}
		t.Logf("tshark on the corrupt copy: %s", strings.Join(malformed, "; "))
	})
}

func checkValues(t *testing.T, frames []frame, field string, want ...string) {
	t.Helper()
	if got := all(frames, field); !slices.Equal(got, want) {
		t.Errorf("%s: tshark %q, sent %q", field, got, want)
	}
}
