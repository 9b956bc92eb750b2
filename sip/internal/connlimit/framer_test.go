package connlimit

import (
	"bytes"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// modelGens is the slow, obvious framer: for each prefix b[:i+1] of the
// stream, the header generation after it. It works on the whole stream
// with string searches: skip CRLFs, the header runs to the first CRLF CRLF,
// its lines (unfolded) give Content-Length, and the body is that long.
func modelGens(b []byte) []uint32 {
	gens := make([]uint32, len(b))
	gen := uint32(1)
	set := func(from int) {
		for i := from; i < len(b); i++ {
			gens[i] = gen
		}
	}
	set(0)
	i := 0
	for {
		for i < len(b) && (b[i] == '\r' || b[i] == '\n') {
			i++
		}
		if i == len(b) {
			return gens
		}
		if gen&1 == 0 {
			gen++
			set(i)
		}
		end := bytes.Index(b[i:], []byte("\r\n\r\n"))
		if end < 0 {
			return gens
		}
		header := b[i : i+end]
		i += end + 4
		gen++
		set(i - 1)
		i += int(min(modelContentLength(header), int64(len(b)-i)))
	}
}

func modelContentLength(header []byte) int64 {
	var lines []string
	for _, line := range strings.Split(string(header), "\r\n") {
		if len(lines) > 0 && line != "" && (line[0] == ' ' || line[0] == '\t') {
			lines[len(lines)-1] += line // folding
			continue
		}
		lines = append(lines, line)
	}
	cl := int64(0)
	for _, line := range lines[1:] { // lines[0] is the start-line
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimRight(name, " \t"))
		if name != "content-length" && name != "l" {
			continue
		}
		value = strings.Trim(value, " \t\r")
		if value == "" || strings.Trim(value, "0123456789") != "" {
			continue
		}
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n > maxContentLength {
			n = maxContentLength
		}
		cl = n
	}
	return cl
}

// framerGens feeds b to a framer in chunks of the given sizes (cycled; 0
// means all at once) and returns the generation after each byte, taken at
// chunk ends and carried over inside chunks.
func framerGens(b []byte, chunks ...int) []uint32 {
	f := newFramer()
	gens := make([]uint32, len(b))
	for i, k := 0, 0; i < len(b); k++ {
		n := len(b) - i
		if len(chunks) > 0 && chunks[k%len(chunks)] > 0 {
			n = min(n, chunks[k%len(chunks)])
		}
		f.scan(b[i : i+n])
		for j := i; j < i+n; j++ {
			gens[j] = f.gen
		}
		i += n
	}
	return gens
}

// byteGens is framerGens one byte at a time, which is exact at every byte.
func byteGens(b []byte) []uint32 { return framerGens(b, 1) }

var framerStreams = []struct {
	name   string
	stream string
	gen    uint32 // after the whole stream
}{
	{"nothing", "", 1},
	{"keepalives only", "\r\n\r\n\r\n", 1},
	{"half header", halfHeader, 1},
	{"one message", options, 2},
	{"keepalive then message", "\r\n\r\n" + options, 2},
	{"two messages", options + options, 4},
	{"second half sent", options + halfHeader, 3},
	{"body", invite(sdp, false), 2},
	{"body with CRLF CRLF", invite("a\r\n\r\nb\r\n\r\n", false) + options, 4},
	{"compact l", invite("xx\r\n\r\nyy", true) + options, 4},
	{"body not finished", invite(sdp, false)[:len(invite(sdp, false))-3], 2},
	{"message after body", invite(sdp, false) + "\r\n\r\n" + halfHeader, 3},
	{"folded Content-Length", "M s SIP/2.0\r\nContent-Length:\r\n 4\r\n\r\n\r\n\r\n" + options, 4},
	{"Content-Length with spaces", "M s SIP/2.0\r\nCONTENT-LENGTH \t: \t 4 \t\r\n\r\n\r\n\r\n" + options, 4},
	{"last Content-Length wins", "M s SIP/2.0\r\nl: 100\r\nContent-Length: 4\r\n\r\n\r\n\r\n" + options, 4},
	{"bad Content-Length ignored", "M s SIP/2.0\r\nContent-Length: 4x\r\n\r\n" + options, 4},
	{"Content-Lengthy is not it", "M s SIP/2.0\r\nContent-Lengthy: 4\r\n\r\n" + options, 4},
	{"lx is not l", "M s SIP/2.0\r\nlx: 4\r\n\r\n" + options, 4},
	{"bare LF does not end a header", "M s SIP/2.0\n\n\n\nVia: x\r\n", 1},
	{"CR CR LF", "M s SIP/2.0\r\r\n\r\n", 2},
	{"huge Content-Length", "M s SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n" + options, 2},
}

func TestFramerStreams(t *testing.T) {
	for _, tc := range framerStreams {
		b := []byte(tc.stream)
		model := modelGens(b)
		if len(b) > 0 && model[len(b)-1] != tc.gen {
			t.Errorf("%s: the model ends at gen %d, the table says %d", tc.name, model[len(b)-1], tc.gen)
		}
		f := newFramer()
		f.scan(b)
		if f.gen != tc.gen {
			t.Errorf("%s: gen %d after the stream in one piece, want %d", tc.name, f.gen, tc.gen)
		}
		if got := byteGens(b); !equal(got, model) {
			t.Errorf("%s: byte by byte differs from the model at byte %d", tc.name, firstDiff(got, model))
		}
	}
}

// Every way of cutting the stream in two or three gives the same gens at
// the cuts as feeding it byte by byte.
func TestFramerEverySplit(t *testing.T) {
	for _, tc := range framerStreams {
		b := []byte(tc.stream)
		exact := byteGens(b)
		for i := 0; i <= len(b); i++ {
			f := newFramer()
			f.scan(b[:i])
			if i > 0 && f.gen != exact[i-1] {
				t.Fatalf("%s: gen %d after prefix %d, want %d", tc.name, f.gen, i, exact[i-1])
			}
			for j := i; j <= len(b); j += 7 {
				g := f
				g.scan(b[i:j])
				g.scan(b[j:])
				if len(b) > 0 && g.gen != exact[len(b)-1] {
					t.Fatalf("%s: cut at %d and %d: gen %d, want %d", tc.name, i, j, g.gen, exact[len(b)-1])
				}
			}
		}
	}
}

// Random streams of SIP-like messages, cut at random, against the model.
func TestFramerRandomAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 2000 {
		b := randomStream(rng)
		model := modelGens(b)
		if got := byteGens(b); !equal(got, model) {
			i := firstDiff(got, model)
			t.Fatalf("round %d: differs from the model at byte %d: %q", round, i, b[max(0, i-40):min(len(b), i+10)])
		}
		chunks := []int{1 + rng.IntN(50), 1 + rng.IntN(500), 1 + rng.IntN(3)}
		got := framerGens(b, chunks...)
		exact := byteGens(b)
		for i, n, k := 0, 0, 0; i < len(b); k++ {
			n = min(len(b)-i, chunks[k%len(chunks)])
			i += n
			if got[i-1] != exact[i-1] {
				t.Fatalf("round %d: chunks %v: gen %d at byte %d, want %d", round, chunks, got[i-1], i-1, exact[i-1])
			}
		}
	}
}

func randomStream(rng *rand.Rand) []byte {
	var b []byte
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	for range 1 + rng.IntN(6) {
		for range rng.IntN(3) {
			b = append(b, pick("\r\n", "\r\n\r\n")...)
		}
		b = append(b, pick("REGISTER sip:x SIP/2.0", "SIP/2.0 200 OK", "INVITE sip:y SIP/2.0")...)
		b = append(b, "\r\n"...)
		body := ""
		if rng.IntN(2) == 0 {
			body = pick(sdp, "a\r\n\r\nb", "\r\n\r\n\r\n", "Content-Length: 99\r\n\r\n", "x")
		}
		var headers []string
		for range rng.IntN(4) {
			headers = append(headers, pick("Via: SIP/2.0/TCP h;branch=z9hG4bK", "l-x: 3", "Contactx: <sip:c>", "From: <sip:a>;tag=1", "Lx: 5", "Content-Lengt: 7"))
		}
		n := strconv.Itoa(len(body))
		headers = append(headers, pick("Content-Length: ", "content-length:", "l:", "L \t: ", "CONTENT-LENGTH :\r\n ")+n+pick("", " ", "\t "))
		if body == "" && rng.IntN(3) == 0 {
			headers = headers[:len(headers)-1] // no Content-Length: no body
		}
		rng.Shuffle(len(headers), func(i, j int) { headers[i], headers[j] = headers[j], headers[i] })
		for _, h := range headers {
			b = append(b, h...)
			b = append(b, "\r\n"...)
		}
		b = append(b, "\r\n"...)
		b = append(b, body...)
	}
	if rng.IntN(3) == 0 { // end inside something
		b = b[:rng.IntN(len(b)+1)]
	}
	return b
}

// FuzzFramerSplit: however TCP cuts a stream, the framer ends in the same
// state as when fed one byte at a time, and never panics.
func FuzzFramerSplit(f *testing.F) {
	for _, tc := range framerStreams {
		f.Add([]byte(tc.stream), uint8(3), uint8(17))
	}
	f.Fuzz(func(t *testing.T, b []byte, c1, c2 uint8) {
		exact := newFramer()
		for i := range b {
			exact.scan(b[i : i+1])
		}
		got := newFramer()
		for i, k := 0, 0; i < len(b); k++ {
			n := int(c1)
			if k%2 == 1 {
				n = int(c2)
			}
			n = min(max(n, 1), len(b)-i)
			got.scan(b[i : i+n])
			i += n
		}
		if got != exact {
			t.Fatalf("chunks %d/%d: %+v, byte by byte: %+v", c1, c2, got, exact)
		}
	})
}

func TestFramerNoAllocs(t *testing.T) {
	b := []byte(invite(sdp, false) + options + "\r\n\r\n" + halfHeader)
	f := newFramer()
	if n := testing.AllocsPerRun(100, func() { f.scan(b) }); n != 0 {
		t.Errorf("scan allocates %v times", n)
	}
}

func equal(a, b []uint32) bool { return firstDiff(a, b) < 0 }

func firstDiff(a, b []uint32) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
