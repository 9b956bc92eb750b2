package demo

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/imsec/imsec/sip"
)

// eventLog keeps a run's events in the order they arrived.
type eventLog struct {
	mu     sync.Mutex
	events []sip.Event // guarded by mu
}

func (l *eventLog) add(e sip.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

var (
	reParticipant = regexp.MustCompile(`^    participant (p[0-9]+) as (.+)$`)
	reStep        = regexp.MustCompile(`^    (?:(p[0-9]+)(?:->>|-->>)(p[0-9]+)|Note over (p[0-9]+)): (.+)$`)
	reEntity      = regexp.MustCompile(`#[0-9]+;`)
)

// checkMermaid reads the diagram line by line and requires one step per
// event, in order: the same parties (a note for an action) and the same
// text (cut at sip.MermaidMaxText runes), with every participant declared
// once before it is used.
func checkMermaid(t *testing.T, diagram string, events []sip.Event) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(diagram, "\n"), "\n")
	if lines[0] != "sequenceDiagram" {
		t.Fatalf("diagram starts %q", lines[0])
	}
	names := map[string]string{} // id -> participant
	declared := map[string]bool{}
	i := 0
	for _, l := range lines[1:] {
		if m := reParticipant.FindStringSubmatch(l); m != nil {
			name := sip.MermaidUnescape(m[2])
			if names[m[1]] != "" || declared[name] {
				t.Fatalf("participant declared twice: %q", l)
			}
			names[m[1]], declared[name] = name, true
			continue
		}
		m := reStep.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %q is neither a participant nor a step", l)
		}
		if i >= len(events) {
			t.Fatalf("step %q beyond the %d events", l, len(events))
		}
		e := events[i]
		i++
		from, to := names[m[1]], names[m[2]]
		if m[3] != "" {
			from = names[m[3]]
		}
		want := e.What
		if r := []rune(want); len(r) > sip.MermaidMaxText {
			want = string(r[:sip.MermaidMaxText-1]) + "…"
		}
		if got := sip.MermaidUnescape(m[4]); got != want {
			t.Errorf("step %d: text %q, event %q", i, got, want)
		}
		if from != sip.MermaidParty(e.From) || (e.To == "") != (m[3] != "") || e.To != "" && to != sip.MermaidParty(e.To) {
			t.Errorf("step %d: %q -> %q, event %q -> %q", i, from, to, e.From, e.To)
		}
	}
	if i != len(events) {
		t.Errorf("diagram has %d steps for %d events", i, len(events))
	}
	for _, want := range []string{"UE alice@a.example", "UE bob@b.example", "P-CSCF a.example", "P-CSCF b.example", "HSS"} {
		if !declared[want] {
			t.Errorf("no participant %q in %v", want, names)
		}
	}
}

// TestREADMEMermaid: the README's ```mermaid blocks are diagrams as
// SequenceDiagram writes them: every line a participant, a message or a
// note, every participant declared before use.
func TestREADMEMermaid(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(b), "```mermaid\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("the README shows no Mermaid diagram")
	}
	for _, blk := range blocks {
		end := strings.Index(blk, "```")
		if end < 0 {
			t.Fatal("a mermaid block without its end")
		}
		lines := strings.Split(strings.TrimSuffix(blk[:end], "\n"), "\n")
		if lines[0] != "sequenceDiagram" {
			t.Fatalf("block starts %q", lines[0])
		}
		ids := map[string]bool{}
		for _, l := range lines[1:] {
			if m := reParticipant.FindStringSubmatch(l); m != nil {
				ids[m[1]] = true
				continue
			}
			m := reStep.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("README mermaid line %q is neither a participant nor a step", l)
			}
			for _, id := range m[1:4] {
				if id != "" && !ids[id] {
					t.Errorf("README mermaid line %q uses %s undeclared", l, id)
				}
			}
			if strings.ContainsAny(reEntity.ReplaceAllString(m[4], ""), ";#%<>") {
				t.Errorf("README mermaid line %q: text unsafe for Mermaid", l)
			}
		}
	}
}
