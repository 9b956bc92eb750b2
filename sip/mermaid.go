package sip

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// SequenceDiagram records events and writes them as a Mermaid
// sequenceDiagram (mermaid.js.org/syntax/sequenceDiagram.html), the form
// GitHub and GitLab draw from a ```mermaid block: each message an arrow
// between two participants (a response, "401 Unauthorized", dashed), each
// action a note over its party, in the order the events arrived, as the
// ladder prints them. Its Event method is an EventFunc.
//
// The text is made safe for Mermaid's parser: participants get generated
// ids (p1, p2, ...) and their names go in an alias; the characters Mermaid
// reads as syntax (";" ends a statement, "#" starts an entity code, "%%" a
// comment, "<" and ">" HTML, ":" in an alias) are written as entity codes
// ("#59;"), control characters as spaces, and a text longer than
// MermaidMaxText runes is cut with "…". "UE sip:alice@x" and "UE alice@x"
// (the P-CSCF names a UE by its IMPU, the UE itself by its IMPI) are one
// participant. The diagram stops growing at MermaidMaxBytes, since
// Mermaid refuses larger ones; a last note says how many events it left out.
type SequenceDiagram struct {
	mu sync.Mutex
	// Guarded by mu:
	ids     map[string]string // participant name -> id
	parts   []string          // participant lines, in order of first appearance
	lines   []string          // message and note lines
	size    int               // bytes of parts and lines
	dropped int               // events left out for size
}

// Limits of a SequenceDiagram.
const (
	// MermaidMaxBytes bounds the diagram: Mermaid's default maxTextSize,
	// which GitHub keeps, is 50,000 characters.
	MermaidMaxBytes = 40000
	// MermaidMaxText is the most runes of an event's text or a
	// participant's name.
	MermaidMaxText = 80
)

// Event records e; it is an EventFunc (safe for concurrent use).
func (d *SequenceDiagram) Event(e Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids == nil {
		d.ids = map[string]string{}
	}
	from, to := MermaidParty(e.From), ""
	if e.To != "" {
		to = MermaidParty(e.To)
	}
	var newParts []string
	pending := map[string]string{} // new participants of this event
	id := func(name string) string {
		if v, ok := d.ids[name]; ok {
			return v
		}
		if v, ok := pending[name]; ok {
			return v
		}
		v := fmt.Sprintf("p%d", len(d.ids)+len(pending)+1)
		pending[name] = v
		newParts = append(newParts, fmt.Sprintf("    participant %s as %s", v, mermaidEscape(name, true)))
		return v
	}
	f := id(from)
	var line string
	if to == "" {
		line = fmt.Sprintf("    Note over %s: %s", f, mermaidEscape(e.What, false))
	} else {
		arrow := "->>"
		if isResponse(e.What) {
			arrow = "-->>"
		}
		line = fmt.Sprintf("    %s%s%s: %s", f, arrow, id(to), mermaidEscape(e.What, false))
	}
	n := len(line) + 1
	for _, p := range newParts {
		n += len(p) + 1
	}
	if d.size+n > MermaidMaxBytes-200 { // room for the header and the last note
		d.dropped++
		return
	}
	for name, v := range pending {
		d.ids[name] = v
	}
	d.parts = append(d.parts, newParts...)
	d.lines = append(d.lines, line)
	d.size += n
}

// WriteTo writes the diagram: "sequenceDiagram", the participants, the
// messages and notes, one a line.
func (d *SequenceDiagram) WriteTo(w io.Writer) (int64, error) {
	d.mu.Lock()
	var b strings.Builder
	b.WriteString("sequenceDiagram\n")
	for _, p := range d.parts {
		b.WriteString(p + "\n")
	}
	for _, l := range d.lines {
		b.WriteString(l + "\n")
	}
	if d.dropped > 0 {
		if len(d.parts) == 0 {
			b.WriteString("    participant p1 as imsec\n")
		}
		fmt.Fprintf(&b, "    Note over p1: %d more events not drawn (diagram size limit)\n", d.dropped)
	}
	d.mu.Unlock()
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// MermaidParty is the participant name a SequenceDiagram draws for an
// event's party: "UE sip:alice@x" is "UE alice@x", "" is "?".
func MermaidParty(s string) string {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "UE sip:"); ok {
		s = "UE " + rest
	}
	if s == "" {
		s = "?"
	}
	return s
}

// isResponse reports a SIP response ("200 OK", "401 Unauthorized").
func isResponse(what string) bool {
	return len(what) >= 4 && what[0] >= '1' && what[0] <= '6' && what[1] >= '0' && what[1] <= '9' &&
		what[2] >= '0' && what[2] <= '9' && what[3] == ' '
}

// mermaidText is what a diagram shows of s: controls and line breaks as
// spaces, trimmed, cut at MermaidMaxText runes, "-" for nothing.
func mermaidText(s string) string {
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError || unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r) {
			return ' '
		}
		return r
	}, s))
	if utf8.RuneCountInString(s) > MermaidMaxText {
		s = string([]rune(s)[:MermaidMaxText-1]) + "…"
	}
	if s == "" {
		s = "-"
	}
	return s
}

// mermaidEscape makes s one safe line of Mermaid text (alias: a
// participant's name, where ":" and "," are codes too).
func mermaidEscape(s string, alias bool) string {
	s = mermaidText(s)
	var b strings.Builder
	for i, r := range s {
		switch {
		case strings.ContainsRune(";#%<>&\"`{}\\", r),
			alias && (r == ':' || r == ','),
			// "wrap:" and "nowrap:" at the start of a text are directives.
			r == ':' && (strings.EqualFold(s[:i], "wrap") || strings.EqualFold(s[:i], "nowrap")),
			// "-" or "+" first would read as (de)activation after an arrow.
			i == 0 && (r == '-' || r == '+'):
			fmt.Fprintf(&b, "#%d;", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// MermaidUnescape turns the entity codes SequenceDiagram writes ("#59;")
// back into characters; tests read a diagram with it.
func MermaidUnescape(s string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '#')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i:]
		j := strings.IndexByte(s, ';')
		r, err := strconv.Atoi(s[1:max(j, 1)])
		if j < 0 || err != nil || r < 0 || r > unicode.MaxRune {
			b.WriteByte('#')
			s = s[1:]
			continue
		}
		b.WriteRune(rune(r))
		s = s[j+1:]
	}
}
