package connlimit

import "bytes"

// framer follows a SIP byte stream far enough to tell whether it is inside
// a message header, which is what the header timeout needs. It is not a SIP
// parser: it knows the three things that frame a message on a stream
// (RFC 3261 §7.5, §18.3) and nothing else:
//
//   - CRLFs before a start-line are ignored (and are RFC 5626 §3.5.1
//     keepalives between messages);
//   - the header ends at the first empty line, CRLF CRLF;
//   - the body is exactly Content-Length (compact form "l") octets; no
//     Content-Length means none.
//
// The body has to be skipped by its length: a stream scanned only for
// CRLF CRLF would take a body's first byte for the start of the next
// header and start the header clock on a peer that is merely quiet after
// an INVITE with SDP. Lines end at CRLF only, as in sipgo's parser (a bare
// LF does not end a header line there, so it does not end one here).
// Folded Content-Length values ("Content-Length:" CRLF SP "12") are
// followed; anything stranger only mis-frames the sender's own stream,
// which then meets the idle timeout or sipgo's parser.
//
// gen counts header starts and ends: odd while a header is open (the
// header clock runs), even between messages and in bodies. A framer
// starts at 1: the first message's header clock runs from accept.
//
// A framer is owned by one reader; it does not allocate.
type framer struct {
	gen    uint32
	state  uint8 // stBetween, stHeader, stBody
	cl     uint8 // Content-Length matcher state of the current line (cl*)
	nameAt uint8 // clName: next index into clName
	prevCR bool  // the last header byte seen was CR
	fold   bool  // the previous line was "Content-Length:" with no value yet
	lineN  int   // bytes in the current header line, CR included
	val    int64 // digits of the current Content-Length line
	clen   int64 // the current message's Content-Length so far
	remain int64 // body bytes still to skip
}

const (
	stBetween = iota
	stHeader
	stBody
)

// Content-Length matcher states, per header line.
const (
	clStart    = iota // at the first byte of a line
	clName            // inside "content-length", nameAt bytes matched
	clNameDone        // name matched; optional SP/HT, then ':'
	clColon           // after ':'; optional SP/HT, then digits
	clDigits          // in the digits
	clAfter           // after the digits; only SP/HT/CR may follow
	clNone            // not a Content-Length line (or a bad one): skip to its end
)

const clLongName = "content-length"

// maxContentLength caps the tracked body length; sipgo refuses a message
// far smaller than this, so saturating here changes nothing.
const maxContentLength = 1 << 40

func newFramer() framer { return framer{gen: 1, state: stBetween} }

// scan advances the framer over the next bytes of the stream.
func (f *framer) scan(b []byte) {
	for len(b) > 0 {
		switch f.state {
		case stBody:
			k := int64(len(b))
			if k > f.remain {
				k = f.remain
			}
			b = b[k:]
			f.remain -= k
			if f.remain == 0 {
				f.state = stBetween
			}
		case stBetween:
			i := 0
			for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
				i++
			}
			b = b[i:]
			if len(b) == 0 {
				return
			}
			if f.gen&1 == 0 {
				f.gen++
			}
			f.state = stHeader
			f.startLine()
		case stHeader:
			if f.cl != clNone {
				// Still deciding whether this line is a Content-Length:
				// byte by byte, for a few bytes at each line start.
				ch := b[0]
				b = b[1:]
				if ch == '\n' && f.prevCR {
					f.endLine()
					continue
				}
				f.prevCR = ch == '\r'
				f.lineN++
				f.step(ch)
				continue
			}
			// The rest of the line does not matter: jump to its LF.
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				f.prevCR = b[len(b)-1] == '\r'
				f.lineN += len(b)
				return
			}
			if i > 0 {
				f.prevCR = b[i-1] == '\r'
				f.lineN += i
			}
			b = b[i+1:]
			if f.prevCR {
				f.endLine()
			} else {
				f.lineN++ // a bare LF is line content
			}
		}
	}
}

func (f *framer) startLine() {
	f.cl = clStart
	f.nameAt = 0
	f.prevCR = false
	f.lineN = 0
	f.val = 0
}

// endLine handles a CRLF that ends a header line.
func (f *framer) endLine() {
	if f.lineN == 1 { // the line was just CR: CRLF CRLF, the header ends
		f.gen++
		f.fold = false
		if f.clen > 0 {
			f.state = stBody
			f.remain = f.clen
		} else {
			f.state = stBetween
		}
		f.clen = 0
		return
	}
	switch f.cl {
	case clDigits, clAfter:
		f.clen = f.val // the last Content-Length wins, as in sipgo
	}
	f.fold = f.cl == clColon
	f.startLine()
}

// step feeds one byte of a header line to the Content-Length matcher.
func (f *framer) step(ch byte) {
	ws := ch == ' ' || ch == '\t'
	lower := ch
	if 'A' <= ch && ch <= 'Z' {
		lower = ch + ('a' - 'A')
	}
	switch f.cl {
	case clStart:
		fold := f.fold
		f.fold = false
		switch {
		case ws && fold:
			f.cl = clColon // a continuation of "Content-Length:"
		case lower == clLongName[0]:
			f.cl, f.nameAt = clName, 1
		case lower == 'l':
			f.cl = clNameDone
		default:
			f.cl = clNone
		}
	case clName:
		if lower != clLongName[f.nameAt] {
			f.cl = clNone
			return
		}
		f.nameAt++
		if int(f.nameAt) == len(clLongName) {
			f.cl = clNameDone
		}
	case clNameDone:
		switch {
		case ch == ':':
			f.cl = clColon
		case !ws:
			f.cl = clNone
		}
	case clColon:
		switch {
		case '0' <= ch && ch <= '9':
			f.cl, f.val = clDigits, int64(ch-'0')
		case !ws && ch != '\r':
			f.cl = clNone
		}
	case clDigits:
		switch {
		case '0' <= ch && ch <= '9':
			if f.val = f.val*10 + int64(ch-'0'); f.val > maxContentLength {
				f.val = maxContentLength
			}
		case ws || ch == '\r':
			f.cl = clAfter
		default:
			f.cl = clNone
		}
	case clAfter:
		if !ws && ch != '\r' {
			f.cl = clNone
		}
	}
}
