package tun_test

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/loopback"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/ipesp"
)

// TestInteropScapyTransportREGISTER: transport mode against scapy, over
// ESP in UDP (RFC 3948 transport mode) and over plain ESP (IP protocol 50,
// a raw socket: root). imsec's end is a manual tunnel whose netstack holds
// its own address; it sends a SIP REGISTER from port-c 5062 to scapy's
// port-s 5064 through its outbound SA. scapy, with nothing but imsec's key
// log, opens it, checks the UDP checksum against the real addresses, and
// answers 200 OK through the other SA; imsec's netstack must take it
// (its checksum check included) and hand it to the socket.
func TestInteropScapyTransportREGISTER(t *testing.T) {
	if _, err := os.Stat(interopPython); err != nil {
		t.Skip("python3 not installed")
	}
	if err := exec.Command(interopPython, "-c", "import scapy.layers.ipsec").Run(); err != nil {
		t.Skip("scapy not installed (Debian: apt-get install python3-scapy); CI installs it")
	}
	for _, mode := range []string{tun.ManualUDPEncTrans, tun.ManualTrans} {
		t.Run(mode, func(t *testing.T) {
			plain := mode == tun.ManualTrans
			me, peerAddr := loopback.Random(), loopback.Random()
			if plain {
				c, err := ipesp.Listen(me)
				if errors.Is(err, ipesp.ErrNoPrivilege) {
					t.Skipf("plain ESP needs CAP_NET_RAW: %v", err)
				}
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
			keylog := filepath.Join(t.TempDir(), "esp_sa")
			kf, err := os.OpenFile(keylog, os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer kf.Close()
			mk := func(spi esp.SPI) esp.Config {
				c := esp.Config{SPI: spi, Encryption: esp.EncAESCBC, EncKey: make([]byte, 16), Integrity: esp.AuthHMACSHA196, AuthKey: make([]byte, 20)}
				rand.Read(c.EncKey)
				rand.Read(c.AuthKey)
				return c
			}
			out, in := mk(0x5a01), mk(0x5a02)

			carriage := "udp"
			if plain {
				carriage = "ip"
			}
			cmd := exec.Command(interopPython, filepath.Join("testdata", "scapy_transport.py"))
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			cmd.Stderr = &strings.Builder{}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
			defer timer.Stop()
			defer cmd.Wait()
			defer cmd.Process.Kill()
			json.NewEncoder(stdin).Encode(map[string]any{"keylog": keylog, "carriage": carriage, "me": peerAddr.String(), "imsec": me.String(),
				"to_imsec": uint32(in.SPI), "from_imsec": uint32(out.SPI), "timeout": 10})
			stdin.Close()
			lines := bufio.NewScanner(stdout)
			var hello struct{ Local string }
			if !lines.Scan() || json.Unmarshal(lines.Bytes(), &hello) != nil {
				t.Fatalf("scapy did not start: %s", cmd.Stderr)
			}
			peer := netip.MustParseAddrPort(hello.Local)

			m, err := tun.StartManual(tun.ManualConfig{Mode: mode, Out: out, In: in, Listen: netip.AddrPortFrom(me, 0), Peer: peer,
				Inner: netip.PrefixFrom(me, 32), KeyLog: kf})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			sock, err := m.Netstack.ListenUDP(netip.AddrPortFrom(me, 5062))
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			register := "REGISTER sip:ims.example SIP/2.0\r\n" +
				"Via: SIP/2.0/UDP " + me.String() + ":5062;branch=z9hG4bKscapy1\r\n" +
				"From: <sip:alice@ims.example>;tag=a1\r\nTo: <sip:alice@ims.example>\r\n" +
				"Call-ID: transport-interop-1\r\nCSeq: 2 REGISTER\r\n" +
				"Security-Verify: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=23041;spi-s=23042;port-c=5063;port-s=5064;mod=trans\r\n" +
				"Content-Length: 0\r\n\r\n"
			if _, err := sock.WriteTo([]byte(register), net.UDPAddrFromAddrPort(netip.AddrPortFrom(peerAddr, 5064))); err != nil {
				t.Fatal(err)
			}
			sock.SetReadDeadline(time.Now().Add(15 * time.Second))
			buf := make([]byte, 4000)
			n, from, err := sock.ReadFrom(buf)
			var res struct {
				Request      string
				Sport, Dport uint16
				ChecksumOK   bool `json:"checksum_ok"`
				Seq          uint32
				Error        *string
			}
			if lines.Scan() {
				json.Unmarshal(lines.Bytes(), &res)
			}
			if res.Error != nil {
				t.Fatalf("scapy: %s", *res.Error)
			}
			if err != nil {
				t.Fatalf("no answer: %v; scapy %+v %s; counters %+v", err, res, cmd.Stderr, m.Pump.Counters())
			}
			// scapy's view of what we sent.
			if res.Request != register || res.Sport != 5062 || res.Dport != 5064 || res.Seq != 1 {
				t.Fatalf("scapy opened %q from %d to %d, seq %d", res.Request, res.Sport, res.Dport, res.Seq)
			}
			if !res.ChecksumOK {
				t.Fatal("scapy found the UDP checksum of our segment wrong for the outer addresses")
			}
			// Our view of its answer.
			got := string(buf[:n])
			if !strings.HasPrefix(got, "SIP/2.0 200 OK\r\n") || !strings.Contains(got, "Call-ID: transport-interop-1\r\n") ||
				!strings.Contains(got, "CSeq: 2 REGISTER\r\n") {
				t.Fatalf("answer %q", got)
			}
			if f := from.(*net.UDPAddr).AddrPort(); f != netip.AddrPortFrom(peerAddr, 5064) {
				t.Fatalf("answer from %v", f)
			}
			if c := m.Pump.Counters(); c.RxPackets != 1 || c.TxPackets != 1 || len(c.Drops) != 0 || c.NotIP != 0 {
				t.Fatalf("counters %+v", c)
			}
		})
	}
}
