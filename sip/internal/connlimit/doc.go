// Package connlimit guards a SIP-over-TCP listener (RFC 3261 §18) against
// connections that hold resources without doing SIP: it caps connections
// in total and per source, and closes those that stay idle or never finish
// a message header (slowloris). It is a net.Listener wrapper that the
// P-CSCF puts between its unprotected TCP listener and sipgo:
//
//	srv.ServeTCP(connlimit.New(ln, connlimit.Config{}))
//
// # Contract
//
// Accept hands out connections within the caps. A connection over a cap is
// closed at once (reset where the conn has SetLinger) and counted, never
// logged, and Accept goes on with the next one: it never returns an error
// for a refused connection, because sipgo's accept loop ends on any error.
// Temporary errors of the inner listener (EMFILE, ENFILE, ECONNABORTED, a
// net.Error that is Temporary or Timeout) are counted and retried after a
// back-off of 5 ms doubling to 1 s, as net/http's Server does, so running
// out of descriptors delays new connections instead of killing the
// listener. Accept returns an error after Close (errors.Is net.ErrClosed),
// and returns an error of the inner listener that is not temporary as it
// is: a listener broken for good is not hidden behind an endless retry.
//
// A connection's slot is given back when it is closed, once, by its Close
// or by a timeout. A timeout closes the inner conn, so a pending Read
// returns ErrIdleTimeout or ErrHeaderTimeout, which wrap net.ErrClosed:
// sipgo then drops the connection as one closed normally, without logging.
// LocalAddr and RemoteAddr are cached at accept (sipgo formats
// RemoteAddr().String() after close, and a closed gVisor conn returns nil).
// Write and the deadline setters are the inner conn's, untouched.
//
// Close closes the inner listener, stops the sweeper and waits for it.
// Connections already accepted stay open, as with any net.Listener (sipgo
// closes its own), and are no longer timed out. Stats returns the counters.
//
// # Defaults
//
// The zero Config is meant for production, and no real UE reaches any of
// its limits. A negative value (Off) turns a limit off, for load tests
// where one host plays many UEs.
//
//   - MaxPerSource 32. A UE keeps one connection to the unprotected port
//     (RFC 5626 §4.2: one flow per reg-id; after sec-agree everything else
//     runs over the SAs' own ports), and has at most a few more while an old
//     one dies. 32 leaves room for a handful of devices behind one NAT
//     address and still stops one host from taking the listener. An IPv6
//     source is its /64: 3GPP gives each UE a /64 (TS 23.401 §5.3.1.2.2),
//     and a host can pick any address inside it.
//   - MaxConns 10,000, or half the process's file limit if that is lower:
//     under a low limit the listener refuses before the process runs out
//     of descriptors that its UDP sockets, dials and files also need.
//   - IdleTimeout 10 minutes. A UE keeps a TCP flow open with CRLF
//     keepalives (RFC 5626 §3.5.1 and §4.4.1, which TS 24.229 has UEs use,
//     or RFC 6223 with an interval the server chooses). Without a
//     Flow-Timer from the registrar, RFC 5626 has a UA send them every
//     324-420 s on a connection-oriented transport, so any timeout below
//     420 s would cut a compliant UE (120 s, about the UDP interval,
//     would); 600 s is that plus room for a keepalive delayed by TCP
//     retransmission. A UE that sends no keepalives at all loses an idle
//     connection and opens a new one when it next sends: RFC 3261 §18
//     lets a server close connections, and after sec-agree nothing the
//     P-CSCF sends a UE uses the unprotected connection.
//   - HeaderTimeout 32 s, 64*T1 (RFC 3261 Timer B and F). A header that
//     has not arrived 32 s after its first byte (or after accept, for the
//     first message) belongs to a transaction its sender has already
//     abandoned, so closing then never costs a UE a request it still waits
//     for; a UE writes a message in one go, and only a lossy link spreads
//     a header over many seconds. The review's 3,000 half-sent connections
//     held 40 s and more; with the per-source cap most of them are refused
//     at accept, and the rest are reset after 32 s.
//
// # Timeouts: one sweeper, no deadlines
//
// A Listener with a timeout on runs one sweeper goroutine. Read marks its
// conn active (an atomic load, and a store only when the flag is clear)
// and, if the header timeout is on, runs the framer over the bytes read and
// publishes a header generation counter. Every interval (an eighth of the
// shortest timeout, within 10 ms..1 s: 1 s for the defaults) the sweeper
// walks the open connections under the listener's lock, dates each change
// it sees at that sweep, and closes those past a timeout: a close comes at
// least the timeout and at most one interval late. Idle connections get an
// orderly close; connections that never finished a header are reset.
//
// The other design, a read deadline re-armed on every Read, was rejected:
// it costs a clock read and a runtime timer update per Read (a deadline
// write takes the poller's lock), it would take the conn's read deadline
// away from its user, and each timeout would come back as a "deadline
// exceeded" to recognise and map. The sweep costs per connection a few
// words and no timer, and per interval a walk over the open connections:
// about 130 µs a second at 10,000 (BenchmarkSweep), a hundredth of a
// percent of a core. Its price is one goroutine per Listener and a coarser
// firing time, which does not matter at these timeouts.
//
// # The framer
//
// The header timeout needs to know whether the stream is inside a header,
// and nothing more. The framer (framer.go) follows only what frames SIP on
// a stream (RFC 3261 §7.5, §18.3): CRLFs between messages, CRLF CRLF ending
// the header, and a body of Content-Length octets. It looks at a few bytes
// at each line start for Content-Length (or "l"), jumps to the line's end
// with bytes.IndexByte, and skips a body by its length: about 0.3 ns a
// byte, 300 ns for a 1 KB REGISTER (BenchmarkRead), against a read syscall
// and sipgo's own parse of the same message. Skipping the body by its
// length is the one step beyond "look for CRLF CRLF", and it is needed: a
// scan for CRLF CRLF alone would take the first byte of a body for the
// start of the next header, and cut a UE that went quiet after an INVITE
// with SDP.
//
// Tests run the timeouts in testing/synctest bubbles, where the ticker and
// time.Now are fake, so no test waits for a timeout in real time.
package connlimit
