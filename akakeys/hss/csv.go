package hss

import (
	"bufio"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/imsec/imsec/akakeys"
)

// The provisioning CSV: what `imsec sub import` reads and `imsec sub gen`
// writes (RFC 4180 CSV, comma-separated). The first row names the columns,
// in any order, case-insensitive:
//
//	impi  the private identity (required)
//	impu  the public identities, separated by spaces, the default first (required)
//	k     K, 16 bytes in hex (required)
//	op    OP, 16 bytes in hex; or
//	opc   OPc, 16 bytes in hex (exactly one of the two columns)
//	amf   AMF, 2 bytes in hex (optional; empty or absent: 8000)
//	sqn   the last SQN used with the USIM, 6 bytes in hex (optional; empty or absent: 0)
//
// Hex may carry a 0x prefix. Every row must have as many fields as the
// header. Errors name the line and the column, never a key's value.

// CSV column names.
const (
	csvIMPI = "impi"
	csvIMPU = "impu"
	csvK    = "k"
	csvOP   = "op"
	csvOPc  = "opc"
	csvAMF  = "amf"
	csvSQN  = "sqn"
)

// DefaultAMF is the AMF of a subscriber provisioned without one: the
// "separation bit" (bit 0) set, as TS 33.102 Annex H requires for E-UTRAN
// and every AKA today.
var DefaultAMF = akakeys.AMF{0x80, 0x00}

// CSVRow is one subscriber of a provisioning CSV with the line it is on.
type CSVRow struct {
	Line int // 1-based line of the file where the row starts
	Sub  Subscriber
}

// CSVError is an error of a provisioning CSV at a line (0: the file as a
// whole). Err wraps ErrInvalidSubscriber for a row whose content is wrong,
// ErrDuplicateIMPI or ErrIMPUTaken for a row that repeats an identity of an
// earlier row.
type CSVError struct {
	Line int
	Err  error
}

func (e *CSVError) Error() string {
	if e.Line == 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("line %d: %v", e.Line, e.Err)
}

func (e *CSVError) Unwrap() error { return e.Err }

func csvErrorf(line int, format string, a ...any) error {
	return &CSVError{Line: line, Err: fmt.Errorf(format, a...)}
}

// ReadCSV reads a whole provisioning CSV and checks every row as
// Subscriber.Validate does, and that no IMPI or IMPU appears twice in the
// file. It stops at the first problem and returns a *CSVError naming its
// line. Rows are returned in file order.
//
// The last row must end with a newline: a file cut short inside its last
// row (an interrupted copy) could otherwise read as a valid row with
// fields missing, an empty amf or sqn taking its default.
func ReadCSV(r io.Reader) ([]CSVRow, error) {
	tail := &lastByte{r: r}
	cr := csv.NewReader(bufio.NewReaderSize(tail, 1<<16))
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, &CSVError{Err: fmt.Errorf("%w: empty file: want a header row naming the columns %s", ErrInvalidSubscriber, csvColumnList())}
	}
	if err != nil {
		return nil, csvReadError(err)
	}
	col, err := csvHeader(header)
	if err != nil {
		return nil, err
	}
	var (
		rows  []CSVRow
		impis = map[string]int{} // IMPI -> line
		impus = map[string]int{} // IMPU -> line
	)
	line := 1
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			if tail.b != '\n' {
				return nil, csvErrorf(line, "%w: the last row does not end with a newline: the file may be cut short (if it is whole, end it with a newline)", ErrInvalidSubscriber)
			}
			return rows, nil
		}
		if err != nil {
			return nil, csvReadError(err)
		}
		line, _ = cr.FieldPos(0)
		sub, err := col.subscriber(rec)
		if err == nil {
			err = sub.Validate()
		}
		if err != nil {
			return nil, &CSVError{Line: line, Err: err}
		}
		if first, ok := impis[sub.IMPI]; ok {
			return nil, csvErrorf(line, "%w: IMPI %q is on line %d already", ErrDuplicateIMPI, sub.IMPI, first)
		}
		impis[sub.IMPI] = line
		for _, u := range sub.IMPUs {
			if first, ok := impus[u]; ok {
				return nil, csvErrorf(line, "%w: IMPU %q is on line %d already", ErrIMPUTaken, u, first)
			}
			impus[u] = line
		}
		rows = append(rows, CSVRow{Line: line, Sub: sub})
	}
}

// lastByte remembers the last byte read through it.
type lastByte struct {
	r io.Reader
	b byte
}

func (l *lastByte) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		l.b = p[n-1]
	}
	return n, err
}

// csvReadError reports a malformed file (a stray quote, a row with the
// wrong number of fields) at its line.
func csvReadError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return csvErrorf(pe.StartLine, "%w: %v", ErrInvalidSubscriber, pe.Err)
	}
	return fmt.Errorf("hss: reading CSV: %w", err)
}

func csvColumnList() string {
	return "impi, impu, k, op or opc, and optionally amf and sqn"
}

// csvCols is the position of each column in a row, -1 if absent.
type csvCols struct {
	impi, impu, k, op, opc, amf, sqn int
}

// csvHeader maps the header row to column positions.
func csvHeader(header []string) (csvCols, error) {
	c := csvCols{-1, -1, -1, -1, -1, -1, -1}
	pos := map[string]*int{csvIMPI: &c.impi, csvIMPU: &c.impu, csvK: &c.k, csvOP: &c.op, csvOPc: &c.opc, csvAMF: &c.amf, csvSQN: &c.sqn}
	for i, name := range header {
		if i == 0 {
			name = strings.TrimPrefix(name, "\ufeff") // a spreadsheet's byte-order mark
		}
		name = strings.ToLower(strings.TrimSpace(name))
		p, ok := pos[name]
		switch {
		case !ok:
			return c, csvErrorf(1, "%w: unknown column %q in the header (want %s)", ErrInvalidSubscriber, name, csvColumnList())
		case *p >= 0:
			return c, csvErrorf(1, "%w: column %q named twice in the header", ErrInvalidSubscriber, name)
		}
		*p = i
	}
	for _, req := range []string{csvIMPI, csvIMPU, csvK} {
		if *pos[req] < 0 {
			return c, csvErrorf(1, "%w: the header has no column %q (want %s)", ErrInvalidSubscriber, req, csvColumnList())
		}
	}
	switch {
	case c.op < 0 && c.opc < 0:
		return c, csvErrorf(1, "%w: the header has neither an op nor an opc column", ErrInvalidSubscriber)
	case c.op >= 0 && c.opc >= 0:
		return c, csvErrorf(1, "%w: the header has both op and opc columns: give one", ErrInvalidSubscriber)
	}
	return c, nil
}

// subscriber decodes one row. Errors name the column, never its value for
// a key column.
func (c csvCols) subscriber(rec []string) (Subscriber, error) {
	field := func(i int) string {
		if i < 0 {
			return ""
		}
		return strings.TrimSpace(rec[i])
	}
	sub := Subscriber{IMPI: field(c.impi), IMPUs: strings.Fields(field(c.impu)), AMF: DefaultAMF}
	if err := csvHex(csvK, field(c.k), sub.K[:], true); err != nil {
		return sub, err
	}
	if c.op >= 0 {
		var op akakeys.OP
		if err := csvHex(csvOP, field(c.op), op[:], true); err != nil {
			return sub, err
		}
		sub.SetOP(op)
	} else if err := csvHex(csvOPc, field(c.opc), sub.OPc[:], true); err != nil {
		return sub, err
	}
	if err := csvHex(csvAMF, field(c.amf), sub.AMF[:], false); err != nil {
		return sub, err
	}
	if err := csvHex(csvSQN, field(c.sqn), sub.SQN[:], false); err != nil {
		return sub, err
	}
	return sub, nil
}

// csvHex decodes a hex field of exactly len(dst) bytes into dst; an empty
// optional field leaves dst as it is. The value is never echoed.
func csvHex(column, v string, dst []byte, required bool) error {
	if v == "" {
		if required {
			return invalidf("%s is empty", column)
		}
		return nil
	}
	v = strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X")
	if len(v) != 2*len(dst) {
		return invalidf("%s: want %d bytes (%d hex digits), got %d digits", column, len(dst), 2*len(dst), len(v))
	}
	if _, err := hex.Decode(dst, []byte(v)); err != nil {
		var ie hex.InvalidByteError
		if errors.As(err, &ie) {
			return invalidf("%s: not hex: invalid character at position %d (value not shown)", column, strings.IndexByte(v, byte(ie))+1)
		}
		return invalidf("%s: not hex", column)
	}
	return nil
}

// csvWriter writes provisioning CSV rows with OP or OPc columns.
type csvWriter struct {
	w      *csv.Writer
	withOP bool
	rec    []string
}

// newCSVWriter writes the header: impi, impu, k, op or opc, amf, sqn.
func newCSVWriter(w io.Writer, withOP bool) (*csvWriter, error) {
	cw := &csvWriter{w: csv.NewWriter(w), withOP: withOP, rec: make([]string, 6)}
	opCol := csvOPc
	if withOP {
		opCol = csvOP
	}
	return cw, cw.w.Write([]string{csvIMPI, csvIMPU, csvK, opCol, csvAMF, csvSQN})
}

// write writes one subscriber: its OP if the writer has an op column (the
// subscriber must have one), else its OPc.
func (cw *csvWriter) write(s Subscriber) error {
	cw.rec[0] = s.IMPI
	cw.rec[1] = strings.Join(s.IMPUs, " ")
	cw.rec[2] = hex.EncodeToString(s.K[:])
	if cw.withOP {
		if s.OP == nil {
			return fmt.Errorf("hss: subscriber %q has no OP for the op column", s.IMPI)
		}
		cw.rec[3] = hex.EncodeToString(s.OP[:])
	} else {
		cw.rec[3] = hex.EncodeToString(s.OPc[:])
	}
	cw.rec[4] = hex.EncodeToString(s.AMF[:])
	cw.rec[5] = hex.EncodeToString(s.SQN[:])
	return cw.w.Write(cw.rec)
}

// flush writes out what is buffered and reports any write error.
func (cw *csvWriter) flush() error {
	cw.w.Flush()
	return cw.w.Error()
}
