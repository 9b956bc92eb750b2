package main

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/akakeys/hss/cx"
	"github.com/imsec/imsec/internal/pgtest"
)

// TestPostgresDB: --db postgres://... wherever --db FILE goes. 'imsec sub'
// provisions into a PostgreSQL database (internal/pgtest runs one), 'imsec
// hss' answers a MAR from it, 'imsec pcscf' registers a UE from it, and
// both draw SQNs from the one counter 'imsec sub show' then reads.
func TestPostgresDB(t *testing.T) {
	srv := pgtest.Start(t, pgtest.Options{})
	dsn := srv.NewDatabase(t)
	ctx := context.Background()

	addAliceBob(t, dsn)
	out, _ := subRun(t, 0, "sub", "list", "--db", dsn)
	if !strings.Contains(out, "alice@ims.example") || !strings.Contains(out, "bob@ims.example") {
		t.Fatalf("list:\n%s", out)
	}
	assertNoSecrets(t, "list", out)
	_, errs := subRun(t, 1, "sub", "add", "--db", dsn, "--impi", "carol@ims.example", "--impu", "tel:+15550100", "--k", subK1, "--opc", subOPc1)
	if !strings.Contains(errs, `"tel:+15550100" belongs to "alice@ims.example"`) {
		t.Fatalf("add of a taken IMPU: %s", errs)
	}

	// Bulk provisioning: a generated range imports in one transaction; a
	// range that collides with an IMPU already there imports nothing and
	// names the line.
	csv := filepath.Join(t.TempDir(), "ues.csv")
	subRun(t, 0, "sub", "gen", "--count", "500", "--domain", "ims.example", "--out", csv)
	out, _ = subRun(t, 0, "sub", "import", "--db", dsn, csv)
	if !strings.Contains(out, "imported 500 subscribers") {
		t.Fatalf("import:\n%s", out)
	}
	assertNoSecrets(t, "import", out)
	_, errs = subRun(t, 1, "sub", "import", "--db", dsn, csv)
	if !strings.Contains(errs, "line 2") || !strings.Contains(errs, "nothing imported") {
		t.Fatalf("import of subscribers already there: %s", errs)
	}
	out, _ = subRun(t, 0, "sub", "list", "--db", dsn)
	if n := strings.Count(out, "@ims.example"); n < 502 {
		t.Fatalf("after the imports %d subscribers listed, want 502:\n%s", n, out)
	}

	// Database errors: one line, no password, the right exit code.
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"list of an empty database", []string{"sub", "list", "--db", srv.NewDatabase(t)}, 1, "has no imsec subscribers"},
		{"hss on an empty database", []string{"hss", "--db", srv.NewDatabase(t), "--listen", "127.0.0.1:0"}, 1, "has no imsec subscribers"},
		{"no server", []string{"sub", "list", "--db", "postgres://hss:Sekrit-Pw-99@/imsec?host=/nonexistent"}, 1, "hss@/imsec?host=/nonexistent"},
		{"bad parameter", []string{"sub", "list", "--db", dsn + "&password=Sekrit-Pw-99&port=notaport"}, 2, "--db: bad database URL"},
		{"unparsable", []string{"sub", "list", "--db", "postgres://hss:Sekrit-Pw-99@[::1/imsec"}, 2, "--db: bad database URL: it does not parse"},
		{"pcscf", []string{"pcscf", "--domain", "ims.example", "--db", "postgresql://hss:Sekrit-Pw-99@/imsec?host=/nonexistent"}, 1, "hss@/imsec"},
	} {
		code, out, errs := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) || strings.Count(errs, "\n") != 1 || out != "" {
			t.Errorf("%s: exit %d (want %d)\nstdout %q\nstderr %q, want one line with %q", c.name, code, c.code, out, errs, c.msg)
		}
		if strings.Contains(errs, "Sekrit") {
			t.Errorf("%s: stderr shows the password: %s", c.name, errs)
		}
	}

	// imsec hss over the database: a MAR gets a vector a USIM accepts, with
	// the next SQN of alice's counter.
	h := startCLI(t, ctx, "hss", "hss", "--db", dsn, "--listen", "127.0.0.1:0", "--origin-host", "hss.ims.example", "--origin-realm", "ims.example")
	m := hssStarted.FindStringSubmatch(h.waitLine(t, "Diameter Cx on", 30*time.Second))
	if m == nil {
		t.Fatal("no address in the start line")
	}
	cli, err := cx.NewClient(cx.ClientConfig{Addr: m[1], OriginHost: "pcscf.ims.example", OriginRealm: "ims.example",
		DestinationRealm: "ims.example", ServerName: "sip:pcscf.ims.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	v, err := cli.Vector(ctx, "alice@ims.example")
	if err != nil {
		t.Fatal(err)
	}
	if seq := usimSEQ(t, v); seq != 1 {
		t.Fatalf("first vector over Cx has SEQ %d, want 1", seq)
	}
	cli.Close()
	if code := h.stop(t); code != 0 {
		t.Fatalf("hss exit %d: %s", code, h.err.String())
	}
	if out := h.out.String(); !strings.Contains(out, "MAR 1") {
		t.Fatalf("hss counters: %s", out)
	}

	// imsec pcscf over the same database: a UE registers with an SQN above
	// the HSS process's range.
	p := startPCSCF(t, ctx, "pcscf", "--domain", "ims.example", "--db", dsn)
	ue := startCLI(t, ctx, "ue", "ue", "--pcscf", p.sip, "--pcscf-esp", p.esp, "--impi", "alice@ims.example",
		"--impu", "sip:alice@ims.example", "--k", subK1, "--op", subOP1, "--once")
	code := ue.wait(t, time.Minute)
	if pc := p.stop(t); pc != 0 {
		t.Errorf("pcscf exit %d: %s", pc, p.err.String())
	}
	if code != 0 || !strings.Contains(ue.out.String(), "registered as sip:alice@ims.example") {
		t.Fatalf("ue exit %d\nstdout:\n%s\nstderr:\n%s\npcscf:\n%s", code, ue.out.String(), ue.err.String(), p.out.String())
	}
	// Each process reserved one range of SQNs (hss.DefaultReserve) above
	// the last: the stored SEQ is the top of the second.
	out, _ = subRun(t, 0, "sub", "show", "--db", dsn, "--impi", "alice@ims.example", "--json")
	if want := fmt.Sprintf(`"seq":%d,`, 2*hss.DefaultReserve); !strings.Contains(out, want) {
		t.Fatalf("after one vector over Cx and one registration, alice's SEQ is not %d (two ranges):\n%s", 2*hss.DefaultReserve, out)
	}
	subRun(t, 0, "sub", "del", "--db", dsn, "--impi", "alice@ims.example")
	subRun(t, 1, "sub", "show", "--db", dsn, "--impi", "alice@ims.example")
}

// usimSEQ is the SEQ a USIM with alice's keys finds in v (IND of 5 bits),
// once MAC-A checks.
func usimSEQ(t *testing.T, v akakeys.Vector) uint64 {
	t.Helper()
	var k akakeys.K
	var op akakeys.OP
	hex.Decode(k[:], []byte(subK1))
	hex.Decode(op[:], []byte(subOP1))
	m := akakeys.NewMilenage(k, akakeys.ComputeOPc(k, op))
	_, _, _, ak := m.F2345(v.RAND)
	var sqn akakeys.SQN
	for i := range sqn {
		sqn[i] = v.AUTN[i] ^ ak[i]
	}
	if macA, _ := m.F1(v.RAND, sqn, v.AMF); subtle.ConstantTimeCompare(macA[:], v.AUTN[8:]) != 1 {
		t.Fatalf("AUTN %x: MAC-A does not verify", v.AUTN)
	}
	seq, _ := akakeys.SQNScheme{}.Split(sqn)
	return seq
}
