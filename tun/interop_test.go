package tun_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
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
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/inet"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/udp"
)

// Interoperability of the whole data plane with an ESP implementation we
// did not write: scapy's SecurityAssociation (python cryptography), driven
// by testdata/scapy_peer.py over a real UDP socket on loopback. scapy seals
// ICMP echo requests and UDP datagrams in ESP-in-UDP (tunnel mode) to a
// Pump whose Device is a netstack; the netstack answers; scapy opens the
// Pump's ESP and the test checks every inner packet and the SA sequence
// numbers. A tampered packet and a replayed one must go unanswered and be
// counted.

const interopPython = "/usr/bin/python3"

var (
	scapyInner = netip.MustParseAddr("100.64.0.2")
	pumpInner  = netip.MustParseAddr("100.64.0.1")
)

// scapyAlg are scapy's names for our algorithms (scapy/layers/ipsec.py).
var (
	scapyEncName  = map[esp.EncAlg]string{esp.EncNull: "NULL", esp.EncAESCBC: "AES-CBC", esp.EncDES3CBC: "3DES", esp.EncAESGCM: "AES-GCM"}
	scapyAuthName = map[esp.AuthAlg]string{esp.AuthNull: "NULL", esp.AuthHMACSHA196: "HMAC-SHA1-96", esp.AuthHMACMD596: "HMAC-MD5-96", esp.AuthHMACSHA256128: "SHA2-256-128"}
)

type scapySA struct {
	SPI     esp.SPI `json:"spi"`
	Enc     string  `json:"enc"`
	EncKey  string  `json:"enc_key"`
	Auth    string  `json:"auth"`
	AuthKey string  `json:"auth_key"`
}

type scapyProbe struct {
	Kind    string `json:"kind"`
	ID      uint16 `json:"id,omitempty"`
	Seq     uint16 `json:"seq,omitempty"`
	Sport   uint16 `json:"sport,omitempty"`
	Dport   uint16 `json:"dport,omitempty"`
	Payload string `json:"payload,omitempty"`
}

type scapySession struct {
	Pump     string       `json:"pump"`
	ToPump   scapySA      `json:"to_pump"`
	FromPump scapySA      `json:"from_pump"`
	InnerSrc string       `json:"inner_src"`
	InnerDst string       `json:"inner_dst"`
	Probes   []scapyProbe `json:"probes"`
}

type scapyResult struct {
	Session int     `json:"session"`
	Probe   *int    `json:"probe"`
	Local   string  `json:"local"`
	SentSeq *uint32 `json:"sent_seq"`
	Replies []struct {
		SPI   esp.SPI `json:"spi"`
		Seq   uint32  `json:"seq"`
		Inner string  `json:"inner"`
	} `json:"replies"`
	Error *string `json:"error"`
}

// interopEnd is a pump on a netstack with a UDP echo server, and the SAs
// scapy uses to talk to it.
type interopEnd struct {
	name string
	pump *tun.Pump
	peer *tun.Peer
	sess scapySession
}

func newInteropEnd(t *testing.T, ealg esp.EncAlg, alg esp.AuthAlg, spiIn, spiOut esp.SPI) *interopEnd {
	t.Helper()
	mk := func(spi esp.SPI) (esp.Config, scapySA) {
		c := esp.Config{SPI: spi, Mode: esp.Tunnel, Encryption: ealg, Integrity: alg,
			EncKey: make([]byte, esp.EncKeyLen(ealg)[0]), AuthKey: make([]byte, esp.AuthKeyLen(alg))}
		rand.Read(c.EncKey)
		rand.Read(c.AuthKey)
		return c, scapySA{spi, scapyEncName[ealg], hex.EncodeToString(c.EncKey), scapyAuthName[alg], hex.EncodeToString(c.AuthKey)}
	}
	inCfg, toPump := mk(spiIn)
	outCfg, fromPump := mk(spiOut)
	in, err := esp.NewInbound(inCfg)
	fakeMust(t, err)
	out, err := esp.NewOutbound(outCfg)
	fakeMust(t, err)

	ns, err := tun.NewNetstack(tun.NetstackOptions{MTU: 1400, Addresses: []netip.Prefix{netip.PrefixFrom(pumpInner, 24)}})
	fakeMust(t, err)
	conn, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		ns.Close()
		t.Fatal(err)
	}
	p, err := tun.NewPump(tun.Config{Device: ns, Conn: conn})
	if err != nil {
		ns.Close()
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	host := []netip.Prefix{netip.PrefixFrom(scapyInner, 32)}
	// scapy's endpoint is learned from its first authenticated packet.
	peer, err := p.AddPeer(tun.PeerConfig{Name: "scapy", FollowSource: true, Allowed: host, Routes: host})
	fakeMust(t, err)
	fakeMust(t, p.AddInbound(peer, in))
	peer.SetOutbound(out)

	// A UDP echo server inside: "echo:" and the datagram back.
	srv, err := ns.ListenUDP(netip.AddrPortFrom(pumpInner, 7))
	fakeMust(t, err)
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 2000)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			srv.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return &interopEnd{name: fmt.Sprintf("%s/%s", ealg, alg), pump: p, peer: peer, sess: scapySession{
		Pump: conn.LocalAddr().String(), ToPump: toPump, FromPump: fromPump,
		InnerSrc: scapyInner.String(), InnerDst: pumpInner.String(),
	}}
}

func interopPayload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// interopProbes is what scapy sends each pump: echoes and datagrams of
// several sizes (padding to every alignment), a tampered datagram, a
// replay, and one more echo to show the SA still works.
func interopProbes() []scapyProbe {
	var ps []scapyProbe
	for i, n := range []int{0, 1, 13, 56, 1000, 1360} {
		ps = append(ps, scapyProbe{Kind: "icmp", ID: 0x4242, Seq: uint16(i + 1), Payload: hex.EncodeToString(interopPayload(n, byte(i)))})
	}
	for i, n := range []int{0, 2, 15, 100, 1300} {
		ps = append(ps, scapyProbe{Kind: "udp", Sport: uint16(40000 + i), Dport: 7, Payload: hex.EncodeToString(interopPayload(n, byte(0x80+i)))})
	}
	ps = append(ps,
		scapyProbe{Kind: "tamper", Sport: 40100, Dport: 7, Payload: hex.EncodeToString([]byte("forged"))},
		scapyProbe{Kind: "replay"},
		scapyProbe{Kind: "icmp", ID: 0x4242, Seq: 99, Payload: hex.EncodeToString([]byte("still there"))},
	)
	return ps
}

// checkReply checks the inner packet the pump sent back for probe.
func checkReply(probe scapyProbe, inner []byte) error {
	if len(inner) < 28 || inner[0] != 0x45 || int(binary.BigEndian.Uint16(inner[2:])) != len(inner) || inet.Checksum(inet.Sum(0, inner[:20])) != 0 {
		return fmt.Errorf("not a well-formed IPv4 packet: %x", inner)
	}
	src, dst := netip.AddrFrom4([4]byte(inner[12:16])), netip.AddrFrom4([4]byte(inner[16:20]))
	if src != pumpInner || dst != scapyInner {
		return fmt.Errorf("inner %v -> %v, want %v -> %v", src, dst, pumpInner, scapyInner)
	}
	payload, _ := hex.DecodeString(probe.Payload)
	body := inner[20:]
	switch probe.Kind {
	case "icmp":
		if inner[9] != 1 || body[0] != 0 || body[1] != 0 || inet.Checksum(inet.Sum(0, body)) != 0 {
			return fmt.Errorf("not a valid ICMP echo reply: %x", body)
		}
		if id, seq := binary.BigEndian.Uint16(body[4:]), binary.BigEndian.Uint16(body[6:]); id != probe.ID || seq != probe.Seq {
			return fmt.Errorf("echo reply id %#x seq %d, want %#x %d", id, seq, probe.ID, probe.Seq)
		}
		if !bytes.Equal(body[8:], payload) {
			return fmt.Errorf("echo reply data %x, want %x", body[8:], payload)
		}
	case "udp":
		if inner[9] != 17 || int(binary.BigEndian.Uint16(body[4:])) != len(body) {
			return fmt.Errorf("not a UDP datagram: %x", body)
		}
		if sp, dp := binary.BigEndian.Uint16(body), binary.BigEndian.Uint16(body[2:]); sp != probe.Dport || dp != probe.Sport {
			return fmt.Errorf("UDP reply ports %d -> %d, want %d -> %d", sp, dp, probe.Dport, probe.Sport)
		}
		if want := append([]byte("echo:"), payload...); !bytes.Equal(body[8:], want) {
			return fmt.Errorf("UDP reply %q, want %q", body[8:], want)
		}
	}
	return nil
}

func TestInteropScapyOverUDP(t *testing.T) {
	if _, err := os.Stat(interopPython); err != nil {
		t.Skip("no /usr/bin/python3 (Debian: apt-get install python3-scapy); CI installs it")
	}
	if out, err := exec.Command(interopPython, "-c", "import scapy.layers.ipsec, cryptography").CombinedOutput(); err != nil {
		t.Skipf("python3-scapy (with python3-cryptography) not installed (Debian: apt-get install python3-scapy); CI installs it: %s", bytes.TrimSpace(out))
	}
	pairs := []struct {
		e esp.EncAlg
		a esp.AuthAlg
	}{
		{esp.EncAESCBC, esp.AuthHMACSHA196},
		{esp.EncAESGCM, esp.AuthNull},
		{esp.EncAESCBC, esp.AuthHMACSHA256128},
		{esp.EncDES3CBC, esp.AuthHMACMD596},
		{esp.EncNull, esp.AuthHMACSHA196},
	}
	var ends []*interopEnd
	var sessions []scapySession
	for i, p := range pairs {
		e := newInteropEnd(t, p.e, p.a, esp.SPI(0x1000+i), esp.SPI(0x2000+i))
		e.sess.Probes = interopProbes()
		ends = append(ends, e)
		sessions = append(sessions, e.sess)
	}
	in, err := json.Marshal(map[string]any{"sessions": sessions, "timeout": 3})
	fakeMust(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, interopPython, filepath.Join("testdata", "scapy_peer.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scapy peer: %v\n%s", err, stderr.String())
	}

	type key struct{ session, probe int }
	results := map[key]scapyResult{}
	local := map[int]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r scapyResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("scapy peer printed %q: %v", sc.Text(), err)
		}
		if r.Session < 0 || r.Session >= len(ends) {
			t.Fatalf("scapy peer printed session %d", r.Session)
		}
		if r.Probe == nil {
			local[r.Session] = r.Local
			continue
		}
		results[key{r.Session, *r.Probe}] = r
	}

	for si, e := range ends {
		t.Run(e.name, func(t *testing.T) {
			probes := e.sess.Probes
			var wantSeq uint32 // the pump's outbound sequence numbers: 1, 2, 3, ...
			answered := 0
			for pi, probe := range probes {
				r, ok := results[key{si, pi}]
				if !ok {
					t.Fatalf("no result for probe %d (%s)", pi, probe.Kind)
				}
				switch probe.Kind {
				case "icmp", "udp":
					if r.Error != nil || len(r.Replies) != 1 {
						t.Errorf("probe %d (%s): error %v, %d replies", pi, probe.Kind, strOrNil(r.Error), len(r.Replies))
						continue
					}
					rep := r.Replies[0]
					wantSeq++
					if rep.SPI != e.sess.FromPump.SPI || rep.Seq != wantSeq {
						t.Errorf("probe %d: reply under SPI %#x seq %d, want %#x seq %d", pi, uint32(rep.SPI), rep.Seq, uint32(e.sess.FromPump.SPI), wantSeq)
					}
					inner, _ := hex.DecodeString(rep.Inner)
					if err := checkReply(probe, inner); err != nil {
						t.Errorf("probe %d (%s): %v", pi, probe.Kind, err)
					}
					answered++
				default: // tamper, replay
					if len(r.Replies) != 0 || r.Error != nil {
						t.Errorf("probe %d (%s) was answered (%d replies, error %v)", pi, probe.Kind, len(r.Replies), strOrNil(r.Error))
					}
				}
			}
			c := e.pump.Counters()
			if c.RxPackets != uint64(answered) || c.TxPackets != uint64(answered) {
				t.Errorf("pump counted %d in and %d out, want %d each", c.RxPackets, c.TxPackets, answered)
			}
			if len(c.Drops) != 2 || c.Drops["auth"] != 1 || c.Drops["replay"] != 1 {
				t.Errorf("pump drops %v, want exactly one auth (tampered) and one replay", c.Drops)
			}
			if ep := e.peer.Endpoint().String(); ep != local[si] {
				t.Errorf("pump sends to %s, scapy is at %s", ep, local[si])
			}
		})
	}
	if t.Failed() {
		t.Logf("scapy stderr:\n%s", strings.TrimSpace(stderr.String()))
	}
}

func strOrNil(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
