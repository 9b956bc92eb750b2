package tun_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"
)

// tcpEcho moves size random bytes over c to the one connection it accepts
// on l, which sends them back; it fails t unless both directions carried
// them intact (the server's SHA-256 and the bytes that came back).
func tcpEcho(t *testing.T, l net.Listener, c net.Conn, size int, timeout time.Duration, what string) {
	t.Helper()
	up := make([]byte, size)
	rand.Read(up)
	type res struct {
		sum [32]byte
		err error
	}
	done := make(chan res, 1)
	go func() {
		s, err := l.Accept()
		if err != nil {
			done <- res{err: err}
			return
		}
		defer s.Close()
		s.SetDeadline(time.Now().Add(timeout))
		b := make([]byte, size)
		if _, err := io.ReadFull(s, b); err != nil {
			done <- res{err: err}
			return
		}
		_, err = s.Write(b) // and back
		done <- res{sum: sha256.Sum256(b), err: err}
	}()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(up); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, size)
	if _, err := io.ReadFull(c, back); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.sum != sha256.Sum256(up) || !bytes.Equal(back, up) {
		t.Fatal("TCP data corrupted " + what)
	}
}
