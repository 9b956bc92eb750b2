package hss

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/imsec/imsec/akakeys"
)

// A file with every feature: columns in another order with odd case and
// spaces, a byte-order mark, several IMPUs, a 0x prefix, defaults for an
// empty amf and sqn, a quoted field.
const goodCSV = "\ufeffIMPU , impi,K,opc,sqn,amf\n" +
	"sip:alice@ims.example tel:+15550100,alice@ims.example,0x465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf,,\n" +
	`"sip:bob@ims.example",bob@ims.example,0396EB317B6D1C36F19C1C84CD6FFD16,53c15671c60a4b731c55b4a441c0bde2,0000000001e0,b9b9` + "\n"

func TestReadCSV(t *testing.T) {
	rows, err := ReadCSV(strings.NewReader(goodCSV))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Line != 2 || rows[1].Line != 3 {
		t.Fatalf("rows %v", rows)
	}
	a, b := rows[0].Sub, rows[1].Sub
	if a.IMPI != alice().IMPI || !slices.Equal(a.IMPUs, alice().IMPUs) || a.K != k1 || a.OPc != opc1 || a.OP != nil ||
		a.AMF != DefaultAMF || a.SQN != (akakeys.SQN{}) {
		t.Errorf("alice: %v", a)
	}
	if b.IMPI != bob().IMPI || b.K != k2 || b.OPc != opc2 || b.AMF != (akakeys.AMF{0xb9, 0xb9}) || b.SQN != bob().SQN {
		t.Errorf("bob: %v", b)
	}
	// With an op column, OPc is derived and OP kept.
	rows, err = ReadCSV(strings.NewReader("impi,impu,k,op\nalice@ims.example,sip:alice@ims.example,465b5ce8b199b49faa5f0a2ee238a6bc,cdc202d5123e20f62b6d676ac72cb318\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s := rows[0].Sub; s.OP == nil || *s.OP != op1 || s.OPc != opc1 {
		t.Errorf("OP row: %v", s)
	}
}

func TestReadCSVErrors(t *testing.T) {
	const head = "impi,impu,k,opc\n"
	row := func(impi, impu string) string {
		return impi + "," + impu + ",465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf\n"
	}
	good := row("a@x", "sip:a@x") + row("b@x", "sip:b@x tel:+1")
	cases := []struct {
		name, csv string
		line      int
		want      []string
		is        error
	}{
		{"empty", "", 0, []string{"empty file"}, ErrInvalidSubscriber},
		{"missing column", "impi,k,opc\n", 1, []string{`no column "impu"`}, ErrInvalidSubscriber},
		{"no op or opc", "impi,impu,k\n", 1, []string{"neither an op nor an opc column"}, ErrInvalidSubscriber},
		{"op and opc", "impi,impu,k,op,opc\n", 1, []string{"both op and opc"}, ErrInvalidSubscriber},
		{"unknown column", "impi,impu,k,opc,imsi\n", 1, []string{`unknown column "imsi"`}, ErrInvalidSubscriber},
		{"column twice", "impi,impu,k,opc,IMPI\n", 1, []string{`column "impi" named twice`}, ErrInvalidSubscriber},
		{"short row", head + good + "c@x,sip:c@x,00\n", 4, []string{"wrong number of fields"}, ErrInvalidSubscriber},
		{"stray quote", head + good + "c@x,sip:\"c@x,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf\n", 4, []string{`bare "`}, ErrInvalidSubscriber},
		{"k not hex", head + good + "c@x,sip:c@x,465b5ce8b199b49faa5f0a2ee238a6bz,cd63cb71954a9f4e48a5994e37a02baf\n", 4,
			[]string{"k: not hex: invalid character at position 32 (value not shown)"}, ErrInvalidSubscriber},
		{"opc short", head + good + "c@x,sip:c@x,465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02b\n", 4,
			[]string{"opc: want 16 bytes (32 hex digits), got 30 digits"}, ErrInvalidSubscriber},
		{"k empty", head + "c@x,sip:c@x,,cd63cb71954a9f4e48a5994e37a02baf\n", 2, []string{"k is empty"}, ErrInvalidSubscriber},
		{"no impu", head + good + row("c@x", ""), 4, []string{`"c@x" has no IMPU`}, ErrInvalidSubscriber},
		{"bad impu", head + good + row("c@x", "mailto:c@x"), 4, []string{`"mailto:c@x" is not a sip:`}, ErrInvalidSubscriber},
		{"cut short", head + good[:len(good)-1], 3, []string{"does not end with a newline", "cut short"}, ErrInvalidSubscriber},
		{"impi twice", head + good + row("a@x", "sip:c@x"), 4, []string{`IMPI "a@x" is on line 2 already`}, ErrDuplicateIMPI},
		{"impu twice", head + good + row("c@x", "sip:c@x tel:+1"), 4, []string{`IMPU "tel:+1" is on line 3 already`}, ErrIMPUTaken},
		// A quoted field over two lines: the next row starts on line 5.
		{"line after a multi-line field", head + `"a@x",sip:a@x,465b5ce8b199b49faa5f0a2ee238a6bc,"cd63cb71954a9f4e48a5994e37a02baf"` + "\n" +
			`b@x,"sip:b@x` + "\n" + `tel:+1",465b5ce8b199b49faa5f0a2ee238a6bc,cd63cb71954a9f4e48a5994e37a02baf` + "\n" + row("c@x", "tel:+1"), 5,
			[]string{`IMPU "tel:+1" is on line 3 already`}, ErrIMPUTaken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadCSV(strings.NewReader(c.csv))
			var ce *CSVError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v, want a *CSVError", err)
			}
			if ce.Line != c.line {
				t.Errorf("line %d, want %d (%v)", ce.Line, c.line, err)
			}
			if !errors.Is(err, c.is) {
				t.Errorf("%v is not %v", err, c.is)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
			assertNoKeys(t, c.name, err.Error())
		})
	}
}

// Every prefix of a valid file reads as a prefix of its rows or fails; no
// prefix yields a row the whole file does not have.
func TestReadCSVEveryPrefix(t *testing.T) {
	full, err := ReadCSV(strings.NewReader(goodCSV))
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(goodCSV) {
		rows, err := ReadCSV(strings.NewReader(goodCSV[:n]))
		if err != nil {
			continue
		}
		if len(rows) > len(full) {
			t.Fatalf("prefix %d: %d rows", n, len(rows))
		}
		for i, r := range rows {
			if r.Line != full[i].Line || !equalSub(r.Sub, full[i].Sub) {
				t.Fatalf("prefix %d of %d bytes: row %d is %v, want %v", n, len(goodCSV), i, r.Sub, full[i].Sub)
			}
		}
	}
}

// Whatever the input, ReadCSV returns rows or a *CSVError (or a read
// error): no panic, and every row it returns is a valid subscriber.
func FuzzReadCSV(f *testing.F) {
	f.Add([]byte(goodCSV))
	f.Add([]byte("impi,impu,k,op\na@x,sip:a@x,465b5ce8b199b49faa5f0a2ee238a6bc,cdc202d5123e20f62b6d676ac72cb318\n"))
	f.Add([]byte("impi,impu,k,opc\n\"a\n@x\",sip:a@x,,\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rows, err := ReadCSV(bytes.NewReader(b))
		if err != nil {
			var ce *CSVError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *CSVError", err)
			}
			return
		}
		for _, r := range rows {
			if err := r.Sub.Validate(); err != nil {
				t.Fatalf("line %d: row returned that does not validate: %v", r.Line, err)
			}
		}
	})
}
