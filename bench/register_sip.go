package bench

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/sip"
)

// The load generator UE's SIP messages, appended into a registration's
// buffers instead of built with fmt and parsed with sipgo: a UE sends two
// REGISTERs and reads two final responses per registration, and at
// thousands of registrations a second the generator's allocations and
// parsing cost as much CPU as the P-CSCF it loads. The bytes on the wire are
// those the fmt version wrote (register_sip_test.go checks them).

// offerPrefix is the fixed part of the UE's Security-Client entry, as
// sip.FormatSecurity writes it: newOffer appends the SPIs and ports.
var offerPrefix = sip.FormatSecurity([]sip.Mechanism{{Name: sip.MechIPsec3GPP, Alg: esp.AuthHMACSHA196, EAlg: esp.EncAESCBC,
	Prot: "esp", Mod: sip.ModUDPEncTun}})

// appendOffer appends m's Security-Client entry (as sip.FormatSecurity
// writes a mechanism with offerPrefix's fixed parameters, SPIs and ports)
// and the media SPI.
func appendOffer(b []byte, m sip.Mechanism, mediaSPI esp.SPI) []byte {
	b = append(b, offerPrefix...)
	b = append(b, ";spi-c="...)
	b = strconv.AppendUint(b, uint64(m.SPIc), 10)
	b = append(b, ";spi-s="...)
	b = strconv.AppendUint(b, uint64(m.SPIs), 10)
	b = append(b, ";port-c="...)
	b = strconv.AppendUint(b, uint64(m.PortC), 10)
	b = append(b, ";port-s="...)
	b = strconv.AppendUint(b, uint64(m.PortS), 10)
	b = append(b, ";media-spi="...)
	return strconv.AppendUint(b, uint64(mediaSPI), 10)
}

// appendRequest appends a REGISTER for impu (sip:user@host) to b: the
// message the UE sends, Security-Verify only when verify is set.
func appendRequest(b []byte, domain, impu, callID string, cseq int, via, contact netip.AddrPort, expires int, client, verify, auth string) []byte {
	user := impu[len("sip:"):]
	if at := strings.IndexByte(user, '@'); at >= 0 {
		user = user[:at]
	}
	b = append(b, "REGISTER sip:"...)
	b = append(b, domain...)
	b = append(b, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
	b = via.AppendTo(b)
	b = append(b, ";branch=z9hG4bK"...)
	b = appendRandHex(b, 8)
	b = append(b, ";rport\r\nMax-Forwards: 70\r\nFrom: <"...)
	b = append(b, impu...)
	b = append(b, ">;tag="...)
	b = appendRandHex(b, 5)
	b = append(b, "\r\nTo: <"...)
	b = append(b, impu...)
	b = append(b, ">\r\nCall-ID: "...)
	b = append(b, callID...)
	b = append(b, "\r\nCSeq: "...)
	b = strconv.AppendInt(b, int64(cseq), 10)
	b = append(b, " REGISTER\r\nContact: <sip:"...)
	b = append(b, user...)
	b = append(b, '@')
	b = contact.AppendTo(b)
	b = append(b, ">;expires="...)
	b = strconv.AppendInt(b, int64(expires), 10)
	b = append(b, "\r\nExpires: "...)
	b = strconv.AppendInt(b, int64(expires), 10)
	b = append(b, "\r\nSecurity-Client: "...)
	b = append(b, client...)
	b = append(b, "\r\nRequire: sec-agree\r\nProxy-Require: sec-agree\r\nSupported: path, sec-agree\r\n"...)
	if verify != "" {
		b = append(b, "Security-Verify: "...)
		b = append(b, verify...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Authorization: "...)
	b = append(b, auth...)
	return append(b, "\r\nContent-Length: 0\r\n\r\n"...)
}

// appendRandHex appends n random bytes in hex (n at most 16).
func appendRandHex(b []byte, n int) []byte {
	var r [16]byte
	rand.Read(r[:n])
	return hex.AppendEncode(b, r[:n])
}

// regResponse is what the UE reads of a final response to its REGISTER.
type regResponse struct {
	code int
	// reason is kept for the error of a response that fails the
	// registration (neither 200 nor 401).
	reason string
	// A 401's WWW-Authenticate and Security-Server, a 503's Retry-After:
	// each header's first value, as sipgo's GetHeader gives it.
	www, securityServer, retryAfter string
	hasRetryAfter                   bool
}

// parseFinal parses a SIP final response for our Call-ID; ok is false for
// anything else (a request, a provisional response, another Call-ID, bytes
// that are not SIP). It reads only the headers the UE uses, and allocates
// only for their values. Header lines do not fold (RFC 3261 §7.3.1 allows
// it; no P-CSCF of ours writes it): a continuation line is skipped.
func parseFinal(b []byte, callID string) (r regResponse, ok bool) {
	line, rest, found := cutLine(b)
	if !found {
		return r, false
	}
	// SIP/2.0 SP Status-Code SP Reason-Phrase (RFC 3261 §7.2).
	const version = "SIP/2.0 "
	if len(line) < len(version)+3 || string(line[:len(version)]) != version {
		return r, false
	}
	for _, c := range line[len(version) : len(version)+3] {
		if c < '0' || c > '9' {
			return regResponse{}, false
		}
		r.code = r.code*10 + int(c-'0')
	}
	if r.code < 200 || r.code > 699 || (len(line) > len(version)+3 && line[len(version)+3] != ' ') {
		return regResponse{}, false
	}
	reason := bytes.TrimSpace(line[min(len(line), len(version)+4):])
	sawCallID, sawWWW, sawSS := false, false, false
	for {
		line, rest, found = cutLine(rest)
		if len(line) == 0 {
			break // the end of the headers (or of a message without a body)
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return regResponse{}, false
		}
		name, value := bytes.TrimSpace(line[:colon]), bytes.TrimSpace(line[colon+1:])
		switch {
		case !sawCallID && (bytes.EqualFold(name, []byte("Call-ID")) || bytes.EqualFold(name, []byte("i"))):
			if string(value) != callID {
				return regResponse{}, false
			}
			sawCallID = true
		case r.code == 401 && !sawWWW && bytes.EqualFold(name, []byte("WWW-Authenticate")):
			r.www, sawWWW = string(value), true
		case r.code == 401 && !sawSS && bytes.EqualFold(name, []byte("Security-Server")):
			r.securityServer, sawSS = string(value), true
		case r.code == 503 && !r.hasRetryAfter && bytes.EqualFold(name, []byte("Retry-After")):
			r.retryAfter, r.hasRetryAfter = string(value), true
		}
		if !found {
			break
		}
	}
	if !sawCallID {
		return regResponse{}, false
	}
	if r.code != 200 && r.code != 401 {
		r.reason = string(reason)
	}
	return r, true
}

// cutLine cuts b at its first line end (CRLF, or a bare LF).
func cutLine(b []byte) (line, rest []byte, found bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil, false
	}
	line = b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, b[i+1:], true
}

// retryAfterWait is how long a 503 asks the UE to wait, as sip.RetryAfter
// reads it (the rule lives there).
func (r *regResponse) retryAfterWait() (time.Duration, bool) {
	if r.code != 503 || !r.hasRetryAfter {
		return 0, false
	}
	res := sipgo.NewResponse(r.code, r.reason)
	res.AppendHeader(sipgo.NewHeader("Retry-After", r.retryAfter))
	return sip.RetryAfter(res)
}
