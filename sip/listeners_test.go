package sip

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestListenerDeathReported: a listener that stops while the Server is
// open is an error Wait returns (the command then exits non-zero), not a
// half-dead server; Close is no such death.
func TestListenerDeathReported(t *testing.T) {
	r := newRig(t, nil)
	r.srv.outerTCP.Close() // what an accept loop that gave up looks like
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.srv.Wait(ctx)
	if err == nil || !strings.Contains(err.Error(), "unprotected TCP listener stopped") {
		t.Fatalf("Wait: %v, want the TCP listener's death", err)
	}

	r2 := newRig(t, nil)
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r2.srv.Wait(ctx2) }()
	r2.srv.Close()
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v after Close, want it to keep waiting for ctx", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel2()
	if err := <-done; err != nil {
		t.Fatalf("Wait after ctx ended: %v", err)
	}
}

// TestTCPExhaustionRefusedPerSource: one source opening many idle TCP
// connections to the unprotected port gets its excess refused, half-sent
// ones are closed by the header timeout, and a UE from elsewhere still
// registers over TCP; the listener never stops.
func TestTCPExhaustionRefusedPerSource(t *testing.T) {
	r := newRig(t, func(c *ServerConfig) {
		c.Limits.TCP.MaxPerSource = 8
		c.Limits.TCP.HeaderTimeout = 300 * time.Millisecond
	})
	alice := newSub(t, r.store, "alice", "a.example")
	attacker := netip.MustParseAddr(uniqueLoopback())
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(attacker, 0)), Timeout: 5 * time.Second}
	var conns []net.Conn
	for range 40 { // bounded
		c, err := d.Dial("tcp", r.srv.SIPAddr().String())
		if errors.Is(err, syscall.ECONNRESET) {
			continue // refused so fast that the handshake saw it
		}
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.Write([]byte("REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n")) // never finished
	}
	// Every one of them ends: refused at once past the cap, or closed by the
	// header timeout; a read returns when it does.
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection %d answered a half-sent request", i)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection %d still open after 10 s", i)
		}
		c.Close()
	}
	st := r.srv.Stats().TCP
	if st.RefusedPerSource < 32 || st.HeaderTimeouts < 1 {
		t.Fatalf("TCP stats %+v: want >= 32 refused for the source and the rest timed out", st)
	}
	// A UE elsewhere registers over TCP: a raw REGISTER gets its 401.
	c, err := net.Dial("tcp", r.srv.SIPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := c.LocalAddr().String()
	msg := "REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/TCP " + local + ";branch=z9hG4bK-tcp1\r\nMax-Forwards: 70\r\n" +
		"From: <" + alice.impu + ">;tag=t1\r\nTo: <" + alice.impu + ">\r\nCall-ID: tcp1@x\r\nCSeq: 1 REGISTER\r\n" +
		"Authorization: Digest username=\"" + alice.impi + "\", realm=\"a.example\", uri=\"sip:a.example\", nonce=\"\", response=\"\"\r\n" +
		"Content-Length: 0\r\n\r\n"
	// The P-CSCF requires IPsec: 421 is its answer to a REGISTER without
	// sec-agree.
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SIP/2.0 421") {
		t.Fatalf("answer %q %v, want 421 (the listener is alive)", line, err)
	}
}
