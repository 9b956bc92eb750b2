package pcap

import (
	"bytes"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/udp"
	"github.com/imsec/imsec/tun/udptest"
)

// safeBuffer is a bytes.Buffer the test reads while taps may still write.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func listen(t *testing.T, addr string) *udp.Conn {
	t.Helper()
	c, err := udp.Listen(netip.MustParseAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readN reads exactly n datagrams from c within a few seconds.
func readN(t *testing.T, c tun.PacketConn, n int) []udp.Message {
	t.Helper()
	var got []udp.Message
	done := make(chan error, 1)
	go func() {
		for len(got) < n {
			msgs := make([]udp.Message, c.BatchSize())
			for i := range msgs {
				msgs[i].Buf = make([]byte, 2048)
			}
			k, err := c.ReadBatch(msgs)
			if err != nil {
				done <- err
				return
			}
			got = append(got, msgs[:k]...)
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%d datagrams not read in 5 s", n)
	}
	return got
}

type wantDG struct {
	src, dst netip.AddrPort
	payload  string
}

func checkCapture(t *testing.T, file []byte, want []wantDG) {
	t.Helper()
	recs, err := readFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, w := range want {
		src, dst, payload, err := parseUDP(recs[i].data)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if src != w.src || dst != w.dst || string(payload) != w.payload {
			t.Errorf("record %d: %v -> %v %q, want %v -> %v %q", i, src, dst, payload, w.src, w.dst, w.payload)
		}
	}
}

// TestTapLoopback: a tapped socket and a plain one on loopback; the file
// has what was sent both ways, each with the right source and destination,
// and the datagrams themselves got through unchanged.
func TestTapLoopback(t *testing.T) {
	a, b := listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")
	var file safeBuffer
	w, err := NewWriter(&file, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var ta tun.PacketConn = Tap(a, w)
	if ta.LocalAddr() != a.LocalAddr() || ta.BatchSize() != a.BatchSize() {
		t.Fatal("tap changes LocalAddr or BatchSize")
	}
	var want []wantDG
	var out []udp.Message
	for i := range 3 {
		p := fmt.Sprintf("a->b %d", i)
		out = append(out, udp.Message{Buf: []byte(p), N: len(p), Addr: b.LocalAddr()})
		want = append(want, wantDG{a.LocalAddr(), b.LocalAddr(), p})
	}
	if n, err := ta.WriteBatch(out); n != 3 || err != nil {
		t.Fatalf("WriteBatch %d %v", n, err)
	}
	for i, m := range readN(t, b, 3) {
		if string(m.Buf[:m.N]) != want[i].payload || m.Addr != a.LocalAddr() {
			t.Fatalf("b got %q from %v", m.Buf[:m.N], m.Addr)
		}
	}
	for i := range 2 {
		p := fmt.Sprintf("b->a %d", i)
		if _, err := b.WriteBatch([]udp.Message{{Buf: []byte(p), N: len(p), Addr: a.LocalAddr()}}); err != nil {
			t.Fatal(err)
		}
		want = append(want, wantDG{b.LocalAddr(), a.LocalAddr(), p})
	}
	for i, m := range readN(t, ta, 2) {
		if string(m.Buf[:m.N]) != want[3+i].payload {
			t.Fatalf("a got %q", m.Buf[:m.N])
		}
	}
	checkCapture(t, file.Bytes(), want)
	if err := ta.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteBatch([]udp.Message{{Buf: []byte("x"), N: 1, Addr: b.LocalAddr()}}); err == nil {
		t.Fatal("tap Close did not close the socket")
	}
}

// TestTapWildcard: a socket bound to 0.0.0.0 records its side as 0.0.0.0
// with the real port (documented), the peer's side as the socket saw it.
func TestTapWildcard(t *testing.T) {
	a, b := listen(t, "0.0.0.0:0"), listen(t, "127.0.0.1:0")
	var file safeBuffer
	w, _ := NewWriter(&file, Options{})
	ta := Tap(a, w)
	if _, err := ta.WriteBatch([]udp.Message{{Buf: []byte("out"), N: 3, Addr: b.LocalAddr()}}); err != nil {
		t.Fatal(err)
	}
	got := readN(t, b, 1)
	// Reply to where b saw it come from (127.0.0.1:port of a).
	if _, err := b.WriteBatch([]udp.Message{{Buf: []byte("back"), N: 4, Addr: got[0].Addr}}); err != nil {
		t.Fatal(err)
	}
	readN(t, ta, 1)
	local := netip.AddrPortFrom(netip.IPv4Unspecified(), a.LocalAddr().Port())
	checkCapture(t, file.Bytes(), []wantDG{{local, b.LocalAddr(), "out"}, {b.LocalAddr(), local, "back"}})
}

// TestTapNeverFailsTheSocket: with the Writer closed, datagrams still go
// through and the tap counts what it could not record.
func TestTapNeverFailsTheSocket(t *testing.T) {
	a, b := listen(t, "127.0.0.1:0"), listen(t, "127.0.0.1:0")
	var file safeBuffer
	w, _ := NewWriter(&file, Options{})
	ta := Tap(a, w)
	w.Close()
	if n, err := ta.WriteBatch([]udp.Message{{Buf: []byte("x"), N: 1, Addr: b.LocalAddr()}}); n != 1 || err != nil {
		t.Fatalf("WriteBatch %d %v", n, err)
	}
	readN(t, b, 1)
	if ta.Failed() != 1 || len(file.Bytes()) != fileHeaderLen {
		t.Fatalf("Failed %d, file %d bytes", ta.Failed(), len(file.Bytes()))
	}
}

// TestTapFunc has the WrapESP shape.
func TestTapFunc(t *testing.T) {
	a := listen(t, "127.0.0.1:0")
	w, _ := NewWriter(&safeBuffer{}, Options{})
	var wrap func(tun.PacketConn) tun.PacketConn = TapFunc(w)
	if tc, ok := wrap(a).(*TapConn); !ok || tc.conn != a {
		t.Fatal("TapFunc does not tap the socket it is given")
	}
}

// TestTapOffload: a tap says what the socket under it segments, and no
// offload over a socket that cannot tell (the pump then never pads).
func TestTapOffload(t *testing.T) {
	a := listen(t, "127.0.0.1:0")
	w, _ := NewWriter(&safeBuffer{}, Options{})
	gso, gro := a.Offload()
	if g, r := Tap(a, w).Offload(); g != gso || r != gro {
		t.Fatalf("tap over udp.Conn: Offload %v %v, the socket's %v %v", g, r, gso, gro)
	}
	if g, r := Tap(Tap(a, w), w).Offload(); g != gso || r != gro {
		t.Fatalf("tap over a tap: Offload %v %v, want %v %v", g, r, gso, gro)
	}
	if g, r := Tap(noOffload{a}, w).Offload(); g || r {
		t.Fatalf("tap over a socket without Offload: %v %v", g, r)
	}
	if g, r := Tap(allOffload{a}, w).Offload(); !g || !r {
		t.Fatalf("tap over a socket with both offloads: %v %v", g, r)
	}
}

// allOffload says its socket segments and coalesces.
type allOffload struct{ tun.PacketConn }

func (allOffload) Offload() (gso, gro bool) { return true, true }

// noOffload hides its socket's Offload method.
type noOffload struct{ tun.PacketConn }

// TestTapQuiet: a tap passes SetQuiet to the socket under it (the Pump's
// reader asks the tap), and does nothing over a socket without it.
func TestTapQuiet(t *testing.T) {
	a, b := udptest.Pair()
	defer a.Close()
	defer b.Close()
	w, _ := NewWriter(&safeBuffer{}, Options{})
	if err := Tap(Tap(a, w), w).SetQuiet(true); err != nil {
		t.Fatal(err)
	}
	if quiet, times := a.Quiet(); !quiet || times != 1 {
		t.Fatalf("after SetQuiet(true) through two taps: quiet %v, %d times", quiet, times)
	}
	if err := Tap(noOffload{b}, w).SetQuiet(true); err != nil {
		t.Fatal(err)
	}
	if quiet, _ := b.Quiet(); quiet {
		t.Fatal("a tap reached SetQuiet through a wrapper that hides it")
	}
}
