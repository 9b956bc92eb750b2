// Package media is the media plane of imsec's calls: synthetic RTP
// (RFC 3550) that UEs send and measure, and the relay each P-CSCF runs for
// it. It follows the design (docs/architecture.md) of separate IPsec access tunnels for SIP
// signalling and for RTP media, with the servers relaying the media: UE A's
// RTP goes through its media tunnel to P-CSCF A, across to P-CSCF B, and
// through UE B's media tunnel to UE B. The package itself knows no tunnel:
// everything works on a net.PacketConn, a netstack socket inside a tunnel
// (tun.Netstack.ListenUDP) or a kernel one, and the caller decides where
// each lives.
//
// # RTP
//
// AppendRTP writes a 12-octet header (version 2, no CSRC, no extension);
// ParseRTP reads any RTP packet without allocating, skipping CSRCs and a
// header extension and removing padding.
//
// # Traffic
//
// Send writes two kinds of stream, each with its own SSRC, random initial
// sequence number and timestamp:
//
//   - audio: a packet of 160 octets (PT 0, PCMU) every 20 ms, timestamps
//     at 8000 Hz (64 kbit/s of payload, like G.711);
//   - video: 25 frames a second (PT 96, H.264 in the SDP), timestamps at
//     90000 Hz; a key frame of about 8000 octets every second and delta
//     frames of about 1500 in between, each size varying by up to ±20 %,
//     cut into packets of at most 1200 octets of payload sent back to back,
//     all with the frame's timestamp, the marker bit on the last (about
//     350 kbit/s).
//
// Every payload opens with a 20-octet probe (see ProbeLen): the send time
// on the media clock (Now), the frame number and the packet's place in its
// frame. The rest is filler. Sending is paced on an absolute schedule
// (frame k at start + k×interval), so a late wake-up catches up rather
// than drifting or skipping frames.
//
// # Measuring
//
// A Meter reads RTP and reports per SSRC: packets and bytes, the count
// expected from sequence numbers and the loss (RFC 3550 A.1 and A.3,
// across wrap-around and source restarts), duplicates and reordered
// packets (a window of the last 1024 sequence numbers), interarrival
// jitter (A.8) in milliseconds at the payload type's clock rate, one-way
// delay (mean, median, 95th percentile, max) from the probes, and video
// frames complete or not, with the marker bit checked. Delay is exact
// between a sender and a meter of one process, which share the media
// clock. A Report prints as a short table and marshals to JSON.
//
// # Relay
//
// A Relay allocates a Session per media stream of a call: two sockets,
// leg A facing the UE and leg B facing the far server's relay, and a
// goroutine per leg that forwards what arrives from the leg's peer to the
// other leg's peer. Datagrams from anyone else are dropped and counted; a
// leg whose peer is not yet known latches the first source it hears.
// CallDescription, ParseSDP and RewriteSDP handle the SDP of such a call
// (c= IN IP4 addr, m=audio port RTP/AVP 0, m=video port RTP/AVP 96 with
// a=rtpmap:96 H264/90000): each server rewrites the addresses and ports to
// its own relay's before passing the body on. The SDP codec is
// github.com/pion/sdp/v3.
package media
