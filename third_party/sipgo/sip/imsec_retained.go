package sip

import (
	"bytes"
	"io"
	"sync"
)

// imsec: what a retained non-INVITE server transaction keeps (IMSEC.md
// sections 6 and 9).

// retainedOrigins holds one request per method that carries only the
// method: the origin of every retained non-INVITE transaction of that
// method, which nobody changes (Receive compares tx.method).
var retainedOrigins sync.Map // RequestMethod -> *Request

func retainedOrigin(m RequestMethod) *Request {
	if r, ok := retainedOrigins.Load(m); ok {
		return r.(*Request)
	}
	r, _ := retainedOrigins.LoadOrStore(m, &Request{Method: m})
	return r.(*Request)
}

// wireResponse is a final response kept as the bytes it was sent as, with
// only its status line and destination parsed: a retransmitted request gets
// those bytes again. The parsed response (a header object and its strings
// per header, a few KiB of pointers) is garbage once the transaction keeps
// this instead.
type wireResponse struct {
	Response
	wire string
}

// StringWrite writes the response as it was first sent.
func (w *wireResponse) StringWrite(b io.StringWriter) { b.WriteString(w.wire) }

// String is the response as it was first sent.
func (w *wireResponse) String() string { return w.wire }

// keepWire replaces the transaction's final response by its wire form.
// actFinal calls it before the first send of a non-INVITE final response
// over UDP, with fsmMu held.
func (tx *ServerTx) keepWire() {
	r := tx.fsmResp
	if r == nil || tx.wire != nil {
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	r.StringWrite(buf)
	w := &wireResponse{}
	if tx.retained != nil { // section 11: the store's copy
		w.wire = tx.retained.put(tx.key, r.Destination(), buf.Bytes(), tx.conn)
	} else {
		w.wire = string(buf.Bytes()) // one allocation of the exact size
	}
	bufPool.Put(buf)
	w.SipVersion, w.StatusCode, w.Reason = r.SipVersion, r.StatusCode, r.Reason
	w.tp, w.src, w.dest, w.raddr = r.tp, r.src, r.dest, r.raddr
	tx.wire = w
	tx.fsmResp = &w.Response
}
