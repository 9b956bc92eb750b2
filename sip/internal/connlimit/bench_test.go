package connlimit

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// benchListener hands out the same conn forever, so that a benchmark
// measures the wrapper and not the fake.
type benchListener struct{ c net.Conn }

func (l *benchListener) Accept() (net.Conn, error) { return l.c, nil }
func (l *benchListener) Close() error              { return nil }
func (l *benchListener) Addr() net.Addr            { return tcpAddr("192.0.2.1:5060") }

// BenchmarkAcceptClose is the per-connection cost of the wrapper: admit
// (caps, per-source count, sweeper table) and Close (release).
func BenchmarkAcceptClose(b *testing.B) {
	nc := &nopConn{remote: tcpAddr("10.0.0.1:40000")}
	b.Run("raw", func(b *testing.B) {
		ln := &benchListener{c: nc}
		b.ReportAllocs()
		for b.Loop() {
			c, _ := ln.Accept()
			c.Close()
		}
	})
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"defaults", Config{}},
		{"all-off", Config{MaxConns: Off, MaxPerSource: Off, IdleTimeout: Off, HeaderTimeout: Off}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := New(&benchListener{c: nc}, bc.cfg)
			defer l.Close()
			b.ReportAllocs()
			for b.Loop() {
				c, _ := l.Accept()
				c.Close()
			}
		})
	}
}

// BenchmarkAcceptCloseTCP puts that cost next to a real loopback
// connection's.
func BenchmarkAcceptCloseTCP(b *testing.B) {
	for _, wrap := range []bool{false, true} {
		name := "raw"
		if wrap {
			name = "connlimit"
		}
		b.Run(name, func(b *testing.B) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			var ln net.Listener = inner
			if wrap {
				ln = New(inner, Config{})
			}
			defer ln.Close()
			b.ReportAllocs()
			for b.Loop() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				s, err := ln.Accept()
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
				c.Close()
			}
		})
	}
}

// msgConn returns one SIP message per Read, from memory.
type msgConn struct {
	nopConn
	msg []byte
}

func (c *msgConn) Read(b []byte) (int, error) { return copy(b, c.msg), nil }

// BenchmarkRead is the per-Read cost: the activity flag and the framer
// over a REGISTER of about 1 KB.
func BenchmarkRead(b *testing.B) {
	msg := []byte("REGISTER sip:ims.example SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:001010000000001@ims.example>;tag=1928301774\r\n" +
		"To: <sip:001010000000001@ims.example>\r\n" +
		"Call-ID: a84b4c76e66710@10.0.0.1\r\n" +
		"CSeq: 1 REGISTER\r\n" +
		"Contact: <sip:001010000000001@10.0.0.1:5060;transport=tcp>;expires=600000;+sip.instance=\"<urn:gsma:imei:35209900-176148-0>\"\r\n" +
		"Authorization: Digest username=\"001010000000001@ims.example\",realm=\"ims.example\",uri=\"sip:ims.example\",nonce=\"\",response=\"\"\r\n" +
		"Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1111;spi-s=2222;port-c=5062;port-s=5064\r\n" +
		"Require: sec-agree\r\nProxy-Require: sec-agree\r\nSupported: path,gruu,sec-agree\r\n" +
		"Allow: INVITE,ACK,CANCEL,BYE,OPTIONS,UPDATE,PRACK,MESSAGE,NOTIFY,REFER\r\n" +
		"User-Agent: imsec-bench\r\nExpires: 600000\r\nContent-Length: 0\r\n\r\n")
	buf := make([]byte, 32768)
	b.Run("raw", func(b *testing.B) {
		c := &msgConn{nopConn: nopConn{remote: tcpAddr("10.0.0.1:40000")}, msg: msg}
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			c.Read(buf)
		}
	})
	b.Run("connlimit", func(b *testing.B) {
		l := New(&benchListener{c: &msgConn{nopConn: nopConn{remote: tcpAddr("10.0.0.1:40000")}, msg: msg}}, Config{})
		defer l.Close()
		c, _ := l.Accept()
		defer c.Close()
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			c.Read(buf)
		}
	})
}

// BenchmarkSweep is one sweep over 10,000 open connections, half of them
// active since the last sweep, none timed out.
func BenchmarkSweep(b *testing.B) {
	const n = 10000
	ln := &benchListener{}
	l := New(ln, Config{MaxPerSource: Off})
	defer l.Close()
	conns := make([]*conn, n)
	for i := range n {
		ln.c = &nopConn{remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 5060))}
		c, _ := l.Accept()
		conns[i] = c.(*conn)
	}
	now := time.Now()
	var victims []victim
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < n; i += 2 {
			conns[i].active.Store(true)
		}
		victims = l.sweepOnce(now, victims[:0])
	}
}
