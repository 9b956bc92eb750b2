package media

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
)

// SDP media kinds, protocol and codecs of a call (RFC 4566 §5.14,
// RFC 3551, RFC 6184).
const (
	MediaAudio  = "audio"
	MediaVideo  = "video"
	ProtoRTPAVP = "RTP/AVP"
	CodecPCMU   = "PCMU"
	CodecH264   = "H264"
)

// ErrSDP is wrapped by the errors of ParseSDP and RewriteSDP for a body
// they cannot use.
var ErrSDP = errors.New("media: bad SDP")

// Description is the part of an SDP session description (RFC 4566) that
// our UEs and relays use: where each media stream goes.
type Description struct {
	Username       string     // o= username; "" marshals as "-"
	SessionID      uint64     // o= sess-id
	SessionVersion uint64     // o= sess-version
	Origin         netip.Addr // o= unicast address; zero marshals Addr (and parses from a non-IP)
	Addr           netip.Addr // session-level c=; zero if every m= has its own
	Media          []Media
}

// Media is one m= section.
type Media struct {
	Kind    string   // "audio", "video", ...
	Port    uint16   // 0: the stream is rejected or disabled (RFC 3264 §6)
	Proto   string   // "RTP/AVP"
	Formats []string // payload types (for RTP) in order of preference
	Codecs  []Codec  // a=rtpmap lines
	// Addr is the media-level c=; zero: the session's.
	Addr netip.Addr
}

// Codec is an a=rtpmap line (RFC 4566 §6): payload type, encoding name,
// clock rate.
type Codec struct {
	PayloadType uint8
	Name        string
	ClockRate   uint32
}

// CallDescription is the SDP of a call as our UEs offer and answer it:
// audio PCMU/8000 (PT 0) on audioPort and video H264/90000 (PT 96) on
// videoPort, both at addr. A zero port leaves that m= line out.
func CallDescription(addr netip.Addr, sessionID uint64, audioPort, videoPort uint16) Description {
	d := Description{Username: "-", SessionID: sessionID, SessionVersion: 1, Addr: addr}
	if audioPort != 0 {
		d.Media = append(d.Media, Media{Kind: MediaAudio, Port: audioPort, Proto: ProtoRTPAVP,
			Formats: []string{strconv.Itoa(PayloadTypePCMU)},
			Codecs:  []Codec{{PayloadTypePCMU, CodecPCMU, ClockRateAudio}}})
	}
	if videoPort != 0 {
		d.Media = append(d.Media, Media{Kind: MediaVideo, Port: videoPort, Proto: ProtoRTPAVP,
			Formats: []string{strconv.Itoa(PayloadTypeVideo)},
			Codecs:  []Codec{{PayloadTypeVideo, CodecH264, ClockRateVideo}}})
	}
	return d
}

// Endpoint is where media section i is sent: its address (its own c= or
// the session's) and port.
func (d Description) Endpoint(i int) netip.AddrPort {
	m := d.Media[i]
	a := m.Addr
	if !a.IsValid() {
		a = d.Addr
	}
	return netip.AddrPortFrom(a, m.Port)
}

// MediaIndex is the index of the first m= section of the kind, or -1.
func (d Description) MediaIndex(kind string) int {
	for i, m := range d.Media {
		if m.Kind == kind {
			return i
		}
	}
	return -1
}

// ClockRates maps the payload types of every a=rtpmap line to their clock
// rates, for MeterConfig.ClockRates.
func (d Description) ClockRates() map[uint8]uint32 {
	r := map[uint8]uint32{}
	for _, m := range d.Media {
		for _, c := range m.Codecs {
			r[c.PayloadType] = c.ClockRate
		}
	}
	return r
}

func connection(a netip.Addr) *sdp.ConnectionInformation {
	return &sdp.ConnectionInformation{NetworkType: "IN", AddressType: addrType(a), Address: &sdp.Address{Address: a.String()}}
}

func addrType(a netip.Addr) string {
	if a.Is4() {
		return "IP4"
	}
	return "IP6"
}

// Marshal writes d as an SDP body (CRLF line ends).
func (d Description) Marshal() ([]byte, error) {
	origin := d.Origin
	if !origin.IsValid() {
		origin = d.Addr
	}
	if !origin.IsValid() && len(d.Media) > 0 {
		origin = d.Media[0].Addr
	}
	if !origin.IsValid() {
		return nil, fmt.Errorf("%w: no address", ErrSDP)
	}
	user := d.Username
	if user == "" {
		user = "-"
	}
	s := &sdp.SessionDescription{
		Origin: sdp.Origin{Username: user, SessionID: d.SessionID, SessionVersion: d.SessionVersion,
			NetworkType: "IN", AddressType: addrType(origin), UnicastAddress: origin.String()},
		SessionName:      "-",
		TimeDescriptions: []sdp.TimeDescription{{}},
	}
	if d.Addr.IsValid() {
		s.ConnectionInformation = connection(d.Addr)
	}
	for i, m := range d.Media {
		if !m.Addr.IsValid() && !d.Addr.IsValid() {
			return nil, fmt.Errorf("%w: m= line %d has no address", ErrSDP, i)
		}
		md := &sdp.MediaDescription{MediaName: sdp.MediaName{
			Media: m.Kind, Port: sdp.RangedPort{Value: int(m.Port)},
			Protos: strings.Split(m.Proto, "/"), Formats: m.Formats}}
		if m.Addr.IsValid() {
			md.ConnectionInformation = connection(m.Addr)
		}
		for _, c := range m.Codecs {
			md.Attributes = append(md.Attributes, sdp.NewAttribute("rtpmap", fmt.Sprintf("%d %s/%d", c.PayloadType, c.Name, c.ClockRate)))
		}
		s.MediaDescriptions = append(s.MediaDescriptions, md)
	}
	return s.Marshal()
}

// ParseSDP parses an SDP body. Every m= section must have a unicast IP
// address, its own or the session's.
func ParseSDP(b []byte) (Description, error) {
	// RFC 4566 §5: a description starts with v= (the decoder takes an
	// empty body for an empty description).
	if !bytes.HasPrefix(b, []byte("v=")) {
		return Description{}, fmt.Errorf("%w: no v= line first", ErrSDP)
	}
	// RFC 4566 §9: a line ends with CRLF (or LF), and no field holds a CR,
	// a LF or a NUL. The decoder keeps a stray CR inside a value, and the
	// rewrite would carry it into a line that parses differently.
	for i, c := range b {
		if c == 0 || c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return Description{}, fmt.Errorf("%w: byte %d is a NUL or a CR not followed by LF", ErrSDP, i)
		}
	}
	var s sdp.SessionDescription
	if err := s.Unmarshal(b); err != nil {
		return Description{}, fmt.Errorf("%w: %v", ErrSDP, err)
	}
	// The decoder is lenient; RFC 4566 §5 is not: an o= line of six
	// fields, and a t= line.
	o := s.Origin
	if o.Username == "" || strings.ContainsAny(o.Username, " \t") || o.NetworkType != "IN" ||
		(o.AddressType != "IP4" && o.AddressType != "IP6") || o.UnicastAddress == "" {
		return Description{}, fmt.Errorf("%w: o=%s", ErrSDP, o.String())
	}
	if len(s.TimeDescriptions) == 0 {
		return Description{}, fmt.Errorf("%w: no t= line", ErrSDP)
	}
	d := Description{Username: s.Origin.Username, SessionID: s.Origin.SessionID, SessionVersion: s.Origin.SessionVersion}
	if a, err := netip.ParseAddr(s.Origin.UnicastAddress); err == nil {
		d.Origin = a
	}
	var err error
	if d.Addr, err = parseConnection(s.ConnectionInformation); err != nil {
		return Description{}, err
	}
	for i, md := range s.MediaDescriptions {
		m := Media{Kind: md.MediaName.Media, Proto: strings.Join(md.MediaName.Protos, "/"), Formats: md.MediaName.Formats}
		p := md.MediaName.Port
		if p.Value < 0 || p.Value > 0xffff || p.Range != nil {
			return Description{}, fmt.Errorf("%w: m= line %d: port %s", ErrSDP, i, p.String())
		}
		m.Port = uint16(p.Value)
		if m.Addr, err = parseConnection(md.ConnectionInformation); err != nil {
			return Description{}, err
		}
		if !m.Addr.IsValid() && !d.Addr.IsValid() {
			return Description{}, fmt.Errorf("%w: m= line %d has no c= address", ErrSDP, i)
		}
		for _, a := range md.Attributes {
			if a.Key != "rtpmap" {
				continue
			}
			c, ok := parseRtpmap(a.Value)
			if !ok {
				return Description{}, fmt.Errorf("%w: m= line %d: a=rtpmap:%s", ErrSDP, i, a.Value)
			}
			m.Codecs = append(m.Codecs, c)
		}
		d.Media = append(d.Media, m)
	}
	return d, nil
}

// parseConnection reads a c= line: IN, IP4 or IP6, one unicast address.
// A missing line is the zero address.
func parseConnection(c *sdp.ConnectionInformation) (netip.Addr, error) {
	if c == nil {
		return netip.Addr{}, nil
	}
	if c.NetworkType != "IN" || c.Address == nil || c.Address.TTL != nil || c.Address.Range != nil {
		return netip.Addr{}, fmt.Errorf("%w: c=%s", ErrSDP, c.String())
	}
	a, err := netip.ParseAddr(c.Address.Address)
	if err != nil || a.Zone() != "" || a.IsMulticast() || (c.AddressType == "IP4") != a.Is4() || (c.AddressType != "IP4" && c.AddressType != "IP6") {
		return netip.Addr{}, fmt.Errorf("%w: c=%s", ErrSDP, c.String())
	}
	return a, nil
}

// parseRtpmap reads "<payload type> <encoding name>/<clock rate>[/<params>]".
func parseRtpmap(v string) (Codec, bool) {
	pt, rest, ok := strings.Cut(v, " ")
	if !ok {
		return Codec{}, false
	}
	n, err := strconv.ParseUint(pt, 10, 7)
	if err != nil {
		return Codec{}, false
	}
	name, rate, ok := strings.Cut(strings.TrimSpace(rest), "/")
	if !ok || name == "" {
		return Codec{}, false
	}
	rate, _, _ = strings.Cut(rate, "/")
	r, err := strconv.ParseUint(rate, 10, 32)
	if err != nil || r == 0 {
		return Codec{}, false
	}
	return Codec{PayloadType: uint8(n), Name: name, ClockRate: uint32(r)}, true
}

// RewriteSDP is what a relaying server does to an SDP body it passes on:
// every c= address (session and media level) and the o= address become
// addr, and the port of m= section i becomes ports[i], so the far side
// sends its media to the relay. A rejected section (port 0) stays
// rejected. Everything else of the body is kept, though its lines are
// written anew (CRLF, in RFC 4566 order). len(ports) must be the number
// of m= sections.
func RewriteSDP(b []byte, addr netip.Addr, ports []uint16) ([]byte, error) {
	if !addr.IsValid() || addr.Zone() != "" {
		return nil, fmt.Errorf("%w: rewrite to address %v", ErrSDP, addr)
	}
	if _, err := ParseSDP(b); err != nil {
		return nil, err
	}
	var s sdp.SessionDescription
	if err := s.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSDP, err)
	}
	if len(ports) != len(s.MediaDescriptions) {
		return nil, fmt.Errorf("%w: %d ports for %d m= lines", ErrSDP, len(ports), len(s.MediaDescriptions))
	}
	s.Origin.AddressType, s.Origin.UnicastAddress = addrType(addr), addr.String()
	if s.ConnectionInformation != nil {
		s.ConnectionInformation = connection(addr)
	}
	for i, md := range s.MediaDescriptions {
		if md.ConnectionInformation != nil {
			md.ConnectionInformation = connection(addr)
		}
		if md.MediaName.Port.Value != 0 {
			if ports[i] == 0 {
				return nil, fmt.Errorf("%w: port 0 for active m= line %d", ErrSDP, i)
			}
			md.MediaName.Port.Value = int(ports[i])
		}
	}
	return s.Marshal()
}
