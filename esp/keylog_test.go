package esp

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

func TestKeyLogLine(t *testing.T) {
	c := Config{SPI: 0x1000, Mode: Tunnel, Encryption: EncAESCBC, EncKey: keyBytes(16, 0),
		Integrity: AuthHMACSHA196, AuthKey: bytes.Repeat([]byte{0xab}, 20)}
	got, err := KeyLogLine(c, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"))
	want := `"IPv4","10.0.0.1","10.0.0.2","0x00001000","AES-CBC [RFC3602]","0x00070e151c232a31383f464d545b6269","HMAC-SHA-1-96 [RFC2404]","0xabababababababababababababababababababab"`
	if err != nil || got != want {
		t.Fatalf("got  %s\nwant %s (%v)", got, want, err)
	}

	c = Config{SPI: 0xdeadbeef, Encryption: EncAESGCM, EncKey: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0xca, 0xfe, 0xba, 0xbe}, Integrity: AuthNull}
	got, _ = KeyLogLine(c, netip.MustParseAddr("2001:db8::1"), netip.Addr{})
	want = `"IPv6","2001:db8::1","*","0xdeadbeef","AES-GCM with 16 octet ICV [RFC4106]","0x0102030405060708090a0b0c0d0e0f10cafebabe","NULL",""`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	c = Config{SPI: 0x100, Encryption: EncNull, Integrity: AuthHMACMD596, AuthKey: make([]byte, 16)}
	got, _ = KeyLogLine(c, netip.Addr{}, netip.MustParseAddr("::ffff:192.0.2.1"))
	if !strings.HasPrefix(got, `"IPv4","*","192.0.2.1","0x00000100","NULL","","HMAC-MD5-96 [RFC2403]"`) {
		t.Fatal(got)
	}
	// Unspecified addresses are wildcards that keep their family: the line
	// of an end that knows only that the outer path is IPv6.
	got, _ = KeyLogLine(c, netip.IPv6Unspecified(), netip.IPv6Unspecified())
	if !strings.HasPrefix(got, `"IPv6","*","*","0x00000100"`) {
		t.Fatal(got)
	}
	got, _ = KeyLogLine(c, netip.IPv4Unspecified(), netip.Addr{})
	if !strings.HasPrefix(got, `"IPv4","*","*","0x00000100"`) {
		t.Fatal(got)
	}
	for _, a := range AuthAlgs {
		if _, ok := wiresharkAuth[a]; !ok {
			t.Errorf("no Wireshark name for %s", a)
		}
	}
	for _, e := range EncAlgs {
		if _, ok := wiresharkEnc[e]; !ok {
			t.Errorf("no Wireshark name for %s", e)
		}
	}
	if _, err := KeyLogLine(Config{Encryption: "rot13"}, netip.Addr{}, netip.Addr{}); err == nil {
		t.Fatal("unknown enc")
	}
	if _, err := KeyLogLine(Config{Encryption: EncNull, Integrity: "crc32"}, netip.Addr{}, netip.Addr{}); err == nil {
		t.Fatal("unknown auth")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestKeyLog(t *testing.T) {
	var buf bytes.Buffer
	kl := NewKeyLog(&buf)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := allPairs[i%len(allPairs)].config(Tunnel, false)
			if err := kl.Log(c, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 20 {
		t.Fatalf("%d lines", len(lines))
	}
	for _, l := range lines {
		if strings.Count(l, `","`) != 7 || !strings.HasPrefix(l, `"IPv4"`) {
			t.Fatalf("bad line %q", l)
		}
	}
	var nilLog *KeyLog
	if err := nilLog.Log(Config{}, netip.Addr{}, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if err := NewKeyLog(failWriter{}).Log(allPairs[0].config(Tunnel, false), netip.Addr{}, netip.Addr{}); err == nil {
		t.Fatal("write error lost")
	}
	if err := NewKeyLog(&buf).Log(Config{Encryption: "x"}, netip.Addr{}, netip.Addr{}); err == nil {
		t.Fatal("bad config logged")
	}
}
