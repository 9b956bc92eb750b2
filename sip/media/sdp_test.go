package media

import (
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestSDPRoundTrip(t *testing.T) {
	for _, addr := range []string{"10.20.0.5", "2001:db8::5"} {
		a := netip.MustParseAddr(addr)
		d := CallDescription(a, 3890, 49170, 51372)
		b, err := d.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		body := string(b)
		typ := "IP4"
		if a.Is6() {
			typ = "IP6"
		}
		for _, line := range []string{
			"v=0\r\n", "o=- 3890 1 IN " + typ + " " + addr + "\r\n", "s=-\r\n", "c=IN " + typ + " " + addr + "\r\n", "t=0 0\r\n",
			"m=audio 49170 RTP/AVP 0\r\n", "a=rtpmap:0 PCMU/8000\r\n", "m=video 51372 RTP/AVP 96\r\n", "a=rtpmap:96 H264/90000\r\n",
		} {
			if !strings.Contains(body, line) {
				t.Errorf("%s: body lacks %q:\n%s", addr, line, body)
			}
		}
		got, err := ParseSDP(b)
		if err != nil {
			t.Fatal(err)
		}
		d.Origin = a // marshalled from Addr
		if !reflect.DeepEqual(got, d) {
			t.Errorf("%s: parsed %+v, want %+v", addr, got, d)
		}
		if got.Endpoint(0) != netip.AddrPortFrom(a, 49170) || got.Endpoint(1) != netip.AddrPortFrom(a, 51372) ||
			got.MediaIndex(MediaVideo) != 1 || got.MediaIndex("text") != -1 {
			t.Errorf("%s: endpoints %v %v", addr, got.Endpoint(0), got.Endpoint(1))
		}
		if r := got.ClockRates(); !reflect.DeepEqual(r, map[uint8]uint32{0: 8000, 96: 90000}) {
			t.Errorf("clock rates %v", r)
		}
	}
	// Audio only.
	d := CallDescription(netip.MustParseAddr("10.0.0.1"), 1, 4000, 0)
	b, _ := d.Marshal()
	if got, err := ParseSDP(b); err != nil || len(got.Media) != 1 || strings.Contains(string(b), "video") {
		t.Errorf("audio only: %+v %v\n%s", got, err, b)
	}
	if _, err := (Description{}).Marshal(); !errors.Is(err, ErrSDP) {
		t.Errorf("empty description: %v", err)
	}
}

// An offer as a UE might send it, with lines we do not model: they parse,
// and survive a rewrite.
const ueOffer = "v=0\r\n" +
	"o=alice 2890844526 2890844527 IN IP4 10.20.0.7\r\n" +
	"s=call\r\n" +
	"c=IN IP4 10.20.0.7\r\n" +
	"b=AS:512\r\n" +
	"t=0 0\r\n" +
	"m=audio 49170 RTP/AVP 0 8 101\r\n" +
	"b=AS:64\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-15\r\n" +
	"a=ptime:20\r\n" +
	"a=sendrecv\r\n" +
	"m=video 0 RTP/AVP 96\r\n" +
	"a=rtpmap:96 H264/90000\r\n" +
	"m=video 51372 RTP/AVP 97\r\n" +
	"c=IN IP4 10.20.0.8\r\n" +
	"a=rtpmap:97 H264/90000\r\n" +
	"a=fmtp:97 profile-level-id=42e01f;packetization-mode=1\r\n"

func TestParseSDPOffer(t *testing.T) {
	d, err := ParseSDP([]byte(ueOffer))
	if err != nil {
		t.Fatal(err)
	}
	if d.Username != "alice" || d.SessionID != 2890844526 || d.SessionVersion != 2890844527 || d.Addr != netip.MustParseAddr("10.20.0.7") || len(d.Media) != 3 {
		t.Fatalf("%+v", d)
	}
	if m := d.Media[0]; m.Kind != MediaAudio || m.Port != 49170 || m.Proto != ProtoRTPAVP || !slices.Equal(m.Formats, []string{"0", "8", "101"}) || len(m.Codecs) != 3 || m.Codecs[2] != (Codec{101, "telephone-event", 8000}) {
		t.Errorf("audio %+v", m)
	}
	if d.Media[1].Port != 0 || d.Endpoint(2) != netip.MustParseAddrPort("10.20.0.8:51372") {
		t.Errorf("video %+v %v", d.Media[1], d.Endpoint(2))
	}
	if r := d.ClockRates(); r[97] != 90000 || r[8] != 8000 {
		t.Errorf("clock rates %v", r)
	}
}

func TestRewriteSDP(t *testing.T) {
	relay := netip.MustParseAddr("192.0.2.10")
	b, err := RewriteSDP([]byte(ueOffer), relay, []uint16{30000, 30002, 30004})
	if err != nil {
		t.Fatal(err)
	}
	body := string(b)
	d, err := ParseSDP(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	if d.Addr != relay || d.Origin != relay || d.Endpoint(0) != netip.AddrPortFrom(relay, 30000) || d.Endpoint(2) != netip.AddrPortFrom(relay, 30004) {
		t.Errorf("rewritten %+v", d)
	}
	if d.Media[1].Port != 0 {
		t.Errorf("rejected stream re-enabled: port %d", d.Media[1].Port)
	}
	for _, kept := range []string{"o=alice 2890844526 2890844527 IN IP4 192.0.2.10", "b=AS:512", "a=fmtp:101 0-15", "a=ptime:20", "a=sendrecv",
		"a=fmtp:97 profile-level-id=42e01f;packetization-mode=1", "m=audio 30000 RTP/AVP 0 8 101", "m=video 0 RTP/AVP 96", "m=video 30004 RTP/AVP 97"} {
		if !strings.Contains(body, kept+"\r\n") {
			t.Errorf("rewritten body lacks %q:\n%s", kept, body)
		}
	}
	if strings.Contains(body, "10.20.0.") {
		t.Errorf("the UE's addresses leak:\n%s", body)
	}
	// IPv6 relay address.
	b6, err := RewriteSDP([]byte(ueOffer), netip.MustParseAddr("2001:db8::10"), []uint16{1, 2, 3})
	if d6, err2 := ParseSDP(b6); err != nil || err2 != nil || d6.Endpoint(2) != netip.MustParseAddrPort("[2001:db8::10]:3") || !strings.Contains(string(b6), "c=IN IP6 2001:db8::10") {
		t.Errorf("IPv6: %v %v\n%s", err, err2, b6)
	}
	for name, tc := range map[string]struct {
		addr  netip.Addr
		ports []uint16
	}{
		"too few ports":         {relay, []uint16{1, 2}},
		"too many ports":        {relay, []uint16{1, 2, 3, 4}},
		"port 0 for an active":  {relay, []uint16{0, 2, 3}},
		"no address":            {netip.Addr{}, []uint16{1, 2, 3}},
		"address with its zone": {netip.MustParseAddr("fe80::1%eth0"), []uint16{1, 2, 3}},
	} {
		if _, err := RewriteSDP([]byte(ueOffer), tc.addr, tc.ports); !errors.Is(err, ErrSDP) {
			t.Errorf("%s: err = %v, want ErrSDP", name, err)
		}
	}
}

func TestParseSDPErrors(t *testing.T) {
	head := "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\n"
	for name, body := range map[string]string{
		"empty":               "",
		"not SDP":             "INVITE sip:bob@example.com SIP/2.0\r\n",
		"no c= for media":     head + "t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
		"multicast with TTL":  head + "c=IN IP4 224.2.1.1/127\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
		"multicast":           head + "c=IN IP4 224.2.1.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
		"IP4 with IPv6":       head + "c=IN IP4 2001:db8::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
		"IP6 with IPv4":       head + "c=IN IP6 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
		"host name":           head + "c=IN IP4 media.example.com\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
		"not IN":              head + "c=XX IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
		"port too large":      head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 70000 RTP/AVP 0\r\n",
		"port range":          head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000/2 RTP/AVP 0\r\n",
		"rtpmap without rate": head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n",
		"rtpmap PT 128":       head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:128 PCMU/8000\r\n",
		"rtpmap rate 0":       head + "c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/0\r\n",
	} {
		if _, err := ParseSDP([]byte(body)); !errors.Is(err, ErrSDP) {
			t.Errorf("%s: err = %v, want ErrSDP", name, err)
		}
		if _, err := RewriteSDP([]byte(body), netip.MustParseAddr("192.0.2.1"), []uint16{1}); !errors.Is(err, ErrSDP) {
			t.Errorf("%s: RewriteSDP err = %v, want ErrSDP", name, err)
		}
	}
}

// Every prefix of an offer parses or fails with ErrSDP, never panics, and
// what parses has no more m= sections than the whole.
func TestParseSDPTruncated(t *testing.T) {
	for _, body := range []string{ueOffer, strings.ReplaceAll(ueOffer, "\r\n", "\n")} {
		for n := range len(body) {
			d, err := ParseSDP([]byte(body[:n]))
			if err != nil && !errors.Is(err, ErrSDP) {
				t.Errorf("[:%d]: error %v is not ErrSDP", n, err)
			}
			if err == nil && len(d.Media) > 3 {
				t.Errorf("[:%d]: %d m= sections", n, len(d.Media))
			}
		}
	}
}

// Whatever parses can be rewritten, and the rewrite puts every stream on
// the relay's address and ports.
func FuzzParseSDP(f *testing.F) {
	f.Add([]byte(ueOffer))
	b, _ := CallDescription(netip.MustParseAddr("10.0.0.1"), 1, 4000, 4002).Marshal()
	f.Add(b)
	f.Add([]byte("v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n"))
	relay := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseSDP(b)
		if err != nil {
			if !errors.Is(err, ErrSDP) {
				t.Fatalf("error %v is not ErrSDP", err)
			}
			return
		}
		ports := make([]uint16, len(d.Media))
		for i := range ports {
			ports[i] = uint16(1000 + i)
		}
		out, err := RewriteSDP(b, relay, ports)
		if err != nil {
			t.Fatalf("parsed but not rewritten: %v", err)
		}
		r, err := ParseSDP(out)
		if err != nil {
			t.Fatalf("rewrite does not parse: %v\n%q", err, out)
		}
		if len(r.Media) != len(d.Media) {
			t.Fatalf("%d m= sections became %d", len(d.Media), len(r.Media))
		}
		for i, m := range r.Media {
			want := ports[i]
			if d.Media[i].Port == 0 {
				want = 0
			}
			if r.Endpoint(i) != netip.AddrPortFrom(relay, want) || m.Kind != d.Media[i].Kind {
				t.Fatalf("m= %d: %v %q, want %v %q", i, r.Endpoint(i), m.Kind, netip.AddrPortFrom(relay, want), d.Media[i].Kind)
			}
		}
	})
}
