package sip

// imsec: tests of a retained server transaction without its request
// (transaction_server_tx.go, TerminateGracefully).

import (
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// imsecRecConn records what is written to it.
type imsecRecConn struct {
	imsecConn
	mu   sync.Mutex
	sent []Message
}

func (c *imsecRecConn) WriteMsg(m Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, m)
	return nil
}

func (c *imsecRecConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sent)
}

// TestImsecRetainedServerTxDropsRequest: a finalized non-INVITE server
// transaction over UDP, retained for Timer J, lets its request go and
// still answers a retransmission with its final response.
func TestImsecRetainedServerTxDropsRequest(t *testing.T) {
	raw := "REGISTER sip:a.example SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-imsec-retained\r\n" +
		"From: <sip:alice@a.example>;tag=a\r\nTo: <sip:alice@a.example>\r\n" +
		"Call-ID: imsec-retained\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
	parse := func() *Request {
		m, err := ParseMessage([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		req := m.(*Request)
		req.SetTransport("UDP")
		req.SetSource("127.0.0.1:5070")
		return req
	}
	conn := &imsecRecConn{}
	tx := NewServerTx("key", parse(), conn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := tx.Init(); err != nil {
		t.Fatal(err)
	}
	defer tx.Terminate()
	res := NewResponseFromRequest(tx.Origin(), 401, "Unauthorized", nil)
	if err := tx.Respond(res); err != nil {
		t.Fatal(err)
	}
	tx.TerminateGracefully()
	if o := tx.Origin(); o.Method != REGISTER || o.CallID() != nil || o.Via() != nil {
		t.Fatalf("the retained transaction keeps its request: %v", o)
	}
	if err := tx.Receive(parse()); err != nil {
		t.Fatal(err)
	}
	if n := conn.count(); n != 2 {
		t.Fatalf("%d messages sent, want the 401 and its retransmission", n)
	}
	conn.mu.Lock()
	first, again := conn.sent[0].String(), conn.sent[1].String()
	conn.mu.Unlock()
	if again != first || !strings.HasPrefix(again, "SIP/2.0 401 Unauthorized\r\n") {
		t.Fatalf("retransmission answered with\n%s\nwant the first answer again:\n%s", again, first)
	}
	// Section 9: the retained response is its bytes, not its headers.
	tx.fsmMu.Lock()
	kept := len(tx.fsmResp.headerOrder)
	tx.fsmMu.Unlock()
	if kept != 0 {
		t.Fatalf("the retained transaction keeps %d parsed headers of its response", kept)
	}
}

// TestImsecFinalResponseWrittenOnce: over UDP a non-INVITE final response
// is written out once, before its first send (section 10): what leaves is
// those bytes, and the transaction keeps them, not the parsed response.
func TestImsecFinalResponseWrittenOnce(t *testing.T) {
	m, err := ParseMessage([]byte("OPTIONS sip:a.example SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-imsec-once\r\n" +
		"From: <sip:alice@a.example>;tag=a\r\nTo: <sip:a.example>\r\n" +
		"Call-ID: imsec-once\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*Request)
	req.SetTransport("UDP")
	req.SetSource("127.0.0.1:5070")
	conn := &imsecRecConn{}
	tx := NewServerTx("key", req, conn, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := tx.Init(); err != nil {
		t.Fatal(err)
	}
	defer tx.Terminate()
	res := NewResponseFromRequest(req, 200, "OK", nil)
	want := res.String()
	if err := tx.Respond(res); err != nil {
		t.Fatal(err)
	}
	conn.mu.Lock()
	sent := conn.sent[0]
	conn.mu.Unlock()
	if _, ok := sent.(*wireResponse); !ok {
		t.Fatalf("sent a %T, want the response's bytes", sent)
	}
	if sent.String() != want {
		t.Fatalf("sent\n%s\nwant\n%s", sent, want)
	}
	tx.fsmMu.Lock()
	kept := len(tx.fsmResp.headerOrder)
	tx.fsmMu.Unlock()
	if kept != 0 {
		t.Fatalf("the transaction keeps %d parsed headers after its final response", kept)
	}
	if res.GetHeader("Call-ID") == nil {
		t.Fatal("the caller's response lost its headers")
	}
}
