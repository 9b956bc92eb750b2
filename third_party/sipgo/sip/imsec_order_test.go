package sip

// imsec: tests of the per-transaction response FIFO (transaction_layer.go).

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// imsecConn is a Connection that writes nowhere.
type imsecConn struct{}

func (imsecConn) LocalAddr() net.Addr    { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060} }
func (imsecConn) WriteMsg(Message) error { return nil }
func (imsecConn) Ref(int) int            { return 1 }
func (imsecConn) TryClose() (int, error) { return 1, nil }
func (imsecConn) Close() error           { return nil }

func imsecTxLayer(t *testing.T) *TransactionLayer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tpl := NewTransportLayer(net.DefaultResolver, NewParser(), nil, WithTransportLayerLogger(log))
	return NewTransactionLayer(tpl, WithTransactionLayerLogger(log),
		WithTransactionLayerUnhandledResponseHandler(func(*Response) {}))
}

// imsecInvite builds an INVITE over TCP (no timer A) and registers its
// client transaction in txl as clientTxRequest would.
func imsecInvite(t *testing.T, txl *TransactionLayer, i int) (*Request, *ClientTx) {
	t.Helper()
	msg, err := ParseMessage([]byte("INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=" + GenerateBranch() + "\r\n" +
		"From: <sip:alice@127.0.0.1>;tag=a" + fmt.Sprint(i) + "\r\n" +
		"To: <sip:bob@127.0.0.1>\r\n" +
		"Call-ID: imsec-order-" + fmt.Sprint(i) + "\r\n" +
		"CSeq: 1 INVITE\r\n" +
		"Content-Length: 0\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*Request)
	key, err := ClientTxKeyMake(req)
	if err != nil {
		t.Fatal(err)
	}
	tx := NewClientTx(key, req, imsecConn{}, txl.log)
	if err := tx.Init(); err != nil {
		t.Fatal(err)
	}
	txl.clientTransactions.put(key, tx)
	tx.OnTerminate(txl.clientTxTerminate)
	return req, tx
}

func imsecRecv(t *testing.T, tx *ClientTx, d time.Duration) *Response {
	t.Helper()
	select {
	case r := <-tx.Responses():
		return r
	case <-time.After(d):
		return nil
	}
}

// TestImsecResponsesInOrder: a 180 and a 200 read back to back for one
// INVITE transaction reach tx.Responses() in that order, every time.
func TestImsecResponsesInOrder(t *testing.T) {
	txl := imsecTxLayer(t)
	defer txl.Close()

	const iterations = 2000
	bad := 0
	for i := range iterations {
		req, tx := imsecInvite(t, txl, i)
		// As the transport's read loop does: one call after the other.
		txl.handleMessage(NewResponseFromRequest(req, StatusRinging, "Ringing", nil))
		txl.handleMessage(NewResponseFromRequest(req, StatusOK, "OK", nil))

		first := imsecRecv(t, tx, 5*time.Second)
		switch {
		case first == nil:
			t.Fatalf("iteration %d: no response", i)
		case first.StatusCode != StatusRinging:
			// The 180 was handled after the 200 (and dropped by the
			// Accepted state) or is still on its way: out of order.
			bad++
		default:
			second := imsecRecv(t, tx, 5*time.Second)
			if second == nil || second.StatusCode != StatusOK {
				t.Fatalf("iteration %d: 180 then %v", i, second)
			}
		}
		tx.Terminate()
	}
	if bad > 0 {
		t.Errorf("%d of %d iterations passed the 200 up before the 180", bad, iterations)
	}
}

// TestImsecBlockedTxDoesNotBlockOthers: a transaction whose user does not
// read its responses holds only its own worker; other transactions go on,
// and Close ends the blocked worker (Close joins all of them).
func TestImsecBlockedTxDoesNotBlockOthers(t *testing.T) {
	txl := imsecTxLayer(t)

	reqA, _ := imsecInvite(t, txl, 1) // never read
	txl.handleMessage(NewResponseFromRequest(reqA, StatusRinging, "Ringing", nil))
	txl.handleMessage(NewResponseFromRequest(reqA, StatusOK, "OK", nil))

	reqB, txB := imsecInvite(t, txl, 2)
	txl.handleMessage(NewResponseFromRequest(reqB, StatusRinging, "Ringing", nil))
	txl.handleMessage(NewResponseFromRequest(reqB, StatusOK, "OK", nil))
	for _, want := range []int{StatusRinging, StatusOK} {
		r := imsecRecv(t, txB, 5*time.Second)
		if r == nil || r.StatusCode != want {
			t.Fatalf("tx B: want %d, got %v", want, r)
		}
	}

	done := make(chan struct{})
	go func() { txl.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: a response worker is still blocked")
	}
	txl.respMu.Lock()
	n := len(txl.respQueues)
	txl.respMu.Unlock()
	if n != 0 {
		t.Fatalf("%d response queues left after Close", n)
	}

	// After Close no worker starts: the response is counted and dropped.
	before := txl.DroppedResponses()
	txl.handleMessage(NewResponseFromRequest(reqB, StatusOK, "OK", nil))
	if got := txl.DroppedResponses() - before; got != 1 {
		t.Fatalf("response after Close: %d dropped, want 1", got)
	}
}

// TestImsecResponseQueueCap: responses waiting for one transaction are
// capped; the rest are dropped and counted.
func TestImsecResponseQueueCap(t *testing.T) {
	txl := imsecTxLayer(t)
	defer txl.Close()
	req, tx := imsecInvite(t, txl, 1)
	key := tx.Key()

	// The first 180 is taken by the worker, which then blocks passing it up.
	txl.handleMessage(NewResponseFromRequest(req, StatusRinging, "Ringing", nil))
	deadline := time.Now().Add(5 * time.Second)
	for {
		txl.respMu.Lock()
		q := txl.respQueues[key]
		taken := q != nil && len(q.items) == 0
		txl.respMu.Unlock()
		if taken {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("worker did not take the first response")
		}
		time.Sleep(time.Millisecond)
	}

	const extra = 5
	for range responseQueueLimit + extra {
		txl.handleMessage(NewResponseFromRequest(req, StatusRinging, "Ringing", nil))
	}
	if got := txl.DroppedResponses(); got != extra {
		t.Fatalf("dropped %d, want %d", got, extra)
	}
	// The queued ones are still delivered, in order, once read.
	for i := range 1 + responseQueueLimit {
		if r := imsecRecv(t, tx, 5*time.Second); r == nil {
			t.Fatalf("response %d not delivered", i)
		}
	}
}
