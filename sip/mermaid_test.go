package sip

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// mermaidLine is one line of a diagram read back.
type mermaidLine struct {
	kind           string // "participant", "message", "response", "note"
	from, to, text string // ids; text unescaped (a participant's name for "participant")
}

var (
	reParticipant = regexp.MustCompile(`^    participant (p[0-9]+) as (.+)$`)
	reMessage     = regexp.MustCompile(`^    (p[0-9]+)(-->>|->>)(p[0-9]+): (.+)$`)
	reNote        = regexp.MustCompile(`^    Note over (p[0-9]+): (.+)$`)
	reEntity      = regexp.MustCompile(`#[0-9]+;`)
)

// parseMermaid reads a diagram as SequenceDiagram writes it, strictly:
// every line must be one of its forms, every text free of what Mermaid
// reads as syntax.
func parseMermaid(t testing.TB, s string) []mermaidLine {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if lines[0] != "sequenceDiagram" {
		t.Fatalf("first line %q", lines[0])
	}
	var out []mermaidLine
	for _, l := range lines[1:] {
		var m []string
		var ml mermaidLine
		switch {
		case reParticipant.MatchString(l):
			m = reParticipant.FindStringSubmatch(l)
			ml = mermaidLine{kind: "participant", from: m[1], text: m[2]}
		case reMessage.MatchString(l):
			m = reMessage.FindStringSubmatch(l)
			ml = mermaidLine{kind: "message", from: m[1], to: m[3], text: m[4]}
			if m[2] == "-->>" {
				ml.kind = "response"
			}
		case reNote.MatchString(l):
			m = reNote.FindStringSubmatch(l)
			ml = mermaidLine{kind: "note", from: m[1], text: m[2]}
		default:
			t.Fatalf("line %q is not a participant, message or note", l)
		}
		// Once the entity codes are out, nothing Mermaid reads as syntax
		// is left.
		bare, unsafe := reEntity.ReplaceAllString(ml.text, "x"), ";#%<>&\"`{}\\"
		if ml.kind == "participant" {
			unsafe += ":,"
		}
		if strings.ContainsAny(bare, unsafe) || strings.ContainsAny(ml.text[:1], "-+") || strings.TrimSpace(ml.text) != ml.text {
			t.Fatalf("line %q: text unsafe for Mermaid", l)
		}
		if low := strings.ToLower(ml.text); strings.HasPrefix(low, "wrap:") || strings.HasPrefix(low, "nowrap:") {
			t.Fatalf("line %q: text reads as a directive", l)
		}
		for _, r := range ml.text {
			if unicode.IsControl(r) {
				t.Fatalf("line %q: control character", l)
			}
		}
		ml.text = MermaidUnescape(ml.text)
		out = append(out, ml)
	}
	return out
}

// TestSequenceDiagramEscapes: names and texts full of Mermaid syntax come
// out as safe lines that read back as they went in.
func TestSequenceDiagramEscapes(t *testing.T) {
	evs := []Event{
		{From: "UE a;b#c%%d", To: "P-CSCF x: y, z", What: "REGISTER; evil #1 %% <br> & \"q\"\nsecond line"},
		{From: "P-CSCF x: y, z", To: "UE sip:a;b#c%%d", What: "401 Unauthorized"},
		{From: "HSS", What: "wrap: not a directive"},
		{From: "HSS", What: "-leading dash"},
		{From: "", To: "UE sip:", What: strings.Repeat("long ", 60)},
		{From: "S-CSCF sip:[2001:db8::1]:5060", To: "HSS", What: ""},
	}
	var d SequenceDiagram
	for _, e := range evs {
		d.Event(e)
	}
	var b strings.Builder
	if _, err := d.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
	lines := parseMermaid(t, b.String())
	names := map[string]string{}
	var steps []mermaidLine
	for _, l := range lines {
		if l.kind == "participant" {
			names[l.from] = l.text
			continue
		}
		steps = append(steps, l)
	}
	if len(steps) != len(evs) {
		t.Fatalf("%d steps for %d events", len(steps), len(evs))
	}
	for i, e := range evs {
		s := steps[i]
		if names[s.from] != mermaidText(MermaidParty(e.From)) {
			t.Errorf("event %d: from %q, want %q", i, names[s.from], MermaidParty(e.From))
		}
		if e.To == "" && s.kind != "note" || e.To != "" && names[s.to] != mermaidText(MermaidParty(e.To)) {
			t.Errorf("event %d: %+v, to %q", i, s, names[s.to])
		}
		if s.text != mermaidText(e.What) {
			t.Errorf("event %d: text %q, want %q", i, s.text, mermaidText(e.What))
		}
	}
	if steps[1].kind != "response" || steps[0].kind != "message" {
		t.Errorf("arrows: %+v", steps[:2])
	}
	// "UE a;b#c%%d" and "UE sip:a;b#c%%d" are one participant.
	if steps[0].from != steps[1].to {
		t.Errorf("the UE is two participants: %+v", steps[:2])
	}
}

// TestSequenceDiagramBounded: a flood of events stops at MermaidMaxBytes,
// and the last note counts what was left out.
func TestSequenceDiagramBounded(t *testing.T) {
	var d SequenceDiagram
	const n = 5000
	for i := range n {
		d.Event(Event{From: "UE alice@a.example", To: "P-CSCF a.example", What: strings.Repeat("x", 70) + string(rune('a'+i%26))})
	}
	var b strings.Builder
	d.WriteTo(&b)
	if b.Len() > MermaidMaxBytes {
		t.Fatalf("diagram of %d bytes", b.Len())
	}
	lines := parseMermaid(t, b.String())
	last := lines[len(lines)-1]
	var left int
	if _, err := fmt.Sscanf(last.text, "%d more events not drawn", &left); err != nil || last.kind != "note" {
		t.Fatalf("last line %+v", last)
	}
	if drawn := len(lines) - 1 - 2; drawn+left != n || drawn < 100 {
		t.Fatalf("drew %d, left out %d, of %d", drawn, left, n)
	}
}

// FuzzSequenceDiagram: whatever the parties and texts, every line is safe
// and reads back as what went in.
func FuzzSequenceDiagram(f *testing.F) {
	f.Add("UE alice", "P-CSCF a", "REGISTER")
	f.Add("a;b", "c#d", "%%x<y>&z")
	f.Add("UE sip:x", "", "nowrap: 200 OK")
	f.Fuzz(func(t *testing.T, from, to, what string) {
		var d SequenceDiagram
		d.Event(Event{From: from, To: to, What: what})
		d.Event(Event{From: to, To: from, What: what})
		var b strings.Builder
		d.WriteTo(&b)
		lines := parseMermaid(t, b.String())
		names := map[string]string{}
		var steps []mermaidLine
		for _, l := range lines {
			if l.kind == "participant" {
				names[l.from] = l.text
			} else {
				steps = append(steps, l)
			}
		}
		if len(steps) != 2 || steps[0].text != mermaidText(what) || names[steps[0].from] != mermaidText(MermaidParty(from)) {
			t.Fatalf("%q %q %q: %+v %v", from, to, what, steps, names)
		}
	})
}
