package sip

// imsec: tests of the retained store (imsec_retained_store.go, IMSEC.md
// section 11).

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// imsecRefConn counts its references.
type imsecRefConn struct {
	imsecRecConn
	refs atomic.Int64
}

func (c *imsecRefConn) Ref(i int) int          { return int(c.refs.Add(int64(i))) }
func (c *imsecRefConn) TryClose() (int, error) { return int(c.refs.Add(-1)), nil }

// TestImsecRetainedStoreEntries: put keeps each response under its key
// until its expiry, resend sends those bytes to the destination they were
// sent to, a newer response under the same key wins, and a sweep past the
// expiry drops every slab and the index with them, and gives back every
// connection reference it held.
func TestImsecRetainedStoreEntries(t *testing.T) {
	s := newRetainedStore(time.Hour)
	defer s.close()
	conn := &imsecRefConn{}
	// Enough entries to fill several slabs.
	const n = 300
	wire := func(i int) string {
		return fmt.Sprintf("SIP/2.0 200 OK\r\nCSeq: %d REGISTER\r\n%s\r\n\r\n", i, strings.Repeat("x", 400))
	}
	for i := range n {
		got := s.put(fmt.Sprintf("key-%d", i), fmt.Sprintf("198.51.100.%d:5060", i%250+1), []byte(wire(i)), conn)
		if got != wire(i) {
			t.Fatalf("put %d returned %q", i, got)
		}
	}
	if s.len() != n || len(s.slabs) < 2 {
		t.Fatalf("%d entries in %d slabs, want %d in several", s.len(), len(s.slabs), n)
	}
	if r := conn.refs.Load(); r != n {
		t.Fatalf("%d connection references held, want %d", r, n)
	}
	for _, i := range []int{0, 151, n - 1} {
		if !s.resend(fmt.Sprintf("key-%d", i)) {
			t.Fatalf("key-%d not found", i)
		}
	}
	if s.resend("key-unknown") {
		t.Fatal("an unknown key was answered")
	}
	conn.mu.Lock()
	if len(conn.sent) != 3 {
		t.Fatalf("%d sent, want 3", len(conn.sent))
	}
	for k, i := range []int{0, 151, n - 1} {
		m := conn.sent[k]
		if m.String() != wire(i) || m.Destination() != fmt.Sprintf("198.51.100.%d:5060", i%250+1) {
			t.Fatalf("resend of key-%d sent %q to %s", i, m.String(), m.Destination())
		}
	}
	conn.mu.Unlock()

	// A newer response under the same key is the one sent.
	s.put("key-7", "203.0.113.9:5060", []byte("SIP/2.0 403 Forbidden\r\n\r\n"), conn)
	s.resend("key-7")
	conn.mu.Lock()
	if last := conn.sent[len(conn.sent)-1]; last.String() != "SIP/2.0 403 Forbidden\r\n\r\n" || last.Destination() != "203.0.113.9:5060" {
		t.Fatalf("after a second put, resend sent %q to %s", last.String(), last.Destination())
	}
	conn.mu.Unlock()

	// Past the expiry everything goes, and nothing is answered.
	s.mu.Lock()
	dropped := s.sweepLocked(s.now() + int64(time.Hour) + 1)
	slabs, index := s.slabs, s.index
	s.mu.Unlock()
	release(dropped)
	if slabs != nil || index != nil {
		t.Fatalf("after the expiry %d slabs and %d index entries remain", len(slabs), len(index))
	}
	if r := conn.refs.Load(); r != 0 {
		t.Fatalf("%d connection references left after the expiry", r)
	}
	if s.resend("key-0") {
		t.Fatal("an expired response was sent")
	}
}

// TestImsecRetainedStoreExpires: the store's timer drops entries at Timer J
// with no further put, and a response past its expiry is not sent even
// before the sweep.
func TestImsecRetainedStoreExpires(t *testing.T) {
	s := newRetainedStore(20 * time.Millisecond)
	defer s.close()
	conn := &imsecRecConn{}
	s.put("k", "198.51.100.1:5060", []byte("SIP/2.0 200 OK\r\n\r\n"), conn)
	deadline := time.Now().Add(10 * time.Second)
	for s.len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the entry was not swept 10 s after its 20 ms life")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s.resend("k") {
		t.Fatal("a swept response was sent")
	}
	s.mu.Lock()
	armed := s.timer != nil
	s.mu.Unlock()
	if armed {
		t.Fatal("the timer is still armed with nothing retained")
	}

	// Expired but not swept yet: not sent either.
	long := newRetainedStore(time.Hour)
	defer long.close()
	long.put("k", "198.51.100.1:5060", []byte("SIP/2.0 200 OK\r\n\r\n"), conn)
	long.mu.Lock()
	long.slabs[0].ents[0].expires = long.now() - 1
	long.mu.Unlock()
	if long.resend("k") {
		t.Fatal("an expired response was sent")
	}
}

// TestImsecRetainedStoreAfterClose: close gives back the connection
// references; after it nothing is retained, and put still hands back the
// response's bytes for the first send.
func TestImsecRetainedStoreAfterClose(t *testing.T) {
	s := newRetainedStore(time.Hour)
	conn := &imsecRefConn{}
	s.put("a", "198.51.100.1:5060", []byte("SIP/2.0 200 OK\r\n\r\n"), conn)
	s.put("b", "198.51.100.1:5060", []byte("SIP/2.0 200 OK\r\n\r\n"), conn)
	s.close()
	if r := conn.refs.Load(); r != 0 {
		t.Fatalf("%d connection references left after close", r)
	}
	if got := s.put("k", "198.51.100.1:5060", []byte("SIP/2.0 200 OK\r\n\r\n"), &imsecRecConn{}); got != "SIP/2.0 200 OK\r\n\r\n" {
		t.Fatalf("put after close returned %q", got)
	}
	if s.len() != 0 || s.resend("k") {
		t.Fatal("a response was retained after close")
	}
}

// TestImsecCompletedTxLeavesForStore: over UDP, a non-INVITE server
// transaction ends when its final response is sent; the layer answers the
// request's retransmission from the retained store with the same bytes,
// and the handler sees the request once. Before section 11 the
// transaction stayed in the layer's map for Timer J (32 s) with its
// timer.
func TestImsecCompletedTxLeavesForStore(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tpl := NewTransportLayer(net.DefaultResolver, NewParser(), nil, WithTransportLayerLogger(log))
	txl := NewTransactionLayer(tpl, WithTransactionLayerLogger(log))
	defer tpl.Close()
	defer txl.Close()
	var handled atomic.Int32
	done := make(chan *ServerTx, 1)
	txl.OnRequest(func(req *Request, tx *ServerTx) {
		handled.Add(1)
		if err := tx.Respond(NewResponseFromRequest(req, 200, "OK", nil)); err != nil {
			t.Errorf("Respond: %v", err)
		}
		done <- tx
	})

	server, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go tpl.ServeUDP(server)
	client, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	caddr := client.LocalAddr().(*net.UDPAddr)
	raw := fmt.Sprintf("REGISTER sip:a.example SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-imsec-store\r\n"+
		"From: <sip:alice@a.example>;tag=a\r\nTo: <sip:alice@a.example>\r\n"+
		"Call-ID: imsec-store\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:%d>\r\nContent-Length: 0\r\n\r\n",
		caddr.Port, caddr.Port)
	read := func() string {
		t.Helper()
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 4096)
		n, _, err := client.ReadFrom(b)
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		return string(b[:n])
	}

	if _, err := client.WriteTo([]byte(raw), server.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	first := read()
	tx := <-done
	select {
	case <-tx.Done():
	default:
		t.Fatal("the transaction is still live after its final response")
	}
	if _, ok := txl.getServerTx(tx.Key()); ok {
		t.Fatal("the completed transaction is still in the layer's map")
	}
	if txl.retained.len() != 1 {
		t.Fatalf("%d responses retained, want 1", txl.retained.len())
	}

	if _, err := client.WriteTo([]byte(raw), server.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if again := read(); again != first || !strings.HasPrefix(again, "SIP/2.0 200 OK\r\n") {
		t.Fatalf("retransmission answered with\n%s\nwant the first answer:\n%s", again, first)
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("the handler saw the request %d times, want once", n)
	}
}

// TestImsecRetainedStoreConcurrent: puts, resends and the timer's sweeps
// at once (for the race detector), and every connection reference comes
// back by close.
func TestImsecRetainedStoreConcurrent(t *testing.T) {
	s := newRetainedStore(2 * time.Millisecond)
	conn := &imsecRefConn{}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				key := fmt.Sprintf("k-%d-%d", g, i%50)
				if i%3 == 0 {
					s.resend(key)
					continue
				}
				if got := s.put(key, "198.51.100.1:5060", []byte(key), conn); got != key {
					t.Errorf("put returned %q, want %q", got, key)
					return
				}
			}
		}()
	}
	wg.Wait()
	s.close()
	if r := conn.refs.Load(); r != 0 {
		t.Fatalf("%d connection references left after close", r)
	}
}
