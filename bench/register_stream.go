package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/internal/inet"
	"github.com/imsec/imsec/internal/rawudp"
)

// The register bench's stream (RegisterConfig.Stream): with the load held,
// one more UE registers and streams ICMP echo requests of StreamPacket
// bytes through its tunnel to the P-CSCF's inner address, keeping
// streamWindow in flight; the P-CSCF's data plane opens each, answers it
// and seals the reply. What comes back, per second, is one UE's tunnel
// throughput through a P-CSCF holding the others: run once with --ues 1
// and once with the load to compare (issue #15).

// StreamPacket is the inner packet size of the stream (IPv4 + ICMP + data),
// an MTU-sized datagram once sealed.
const StreamPacket = 1400

// streamWindow is how many echo requests the stream keeps in flight;
// streamWait is how long it waits for a reply before counting what is in
// flight as lost and sending again.
const (
	streamWindow = 64
	streamWait   = 100 * time.Millisecond
)

// StreamResult is what the stream measured.
type StreamResult struct {
	Seconds float64 `json:"seconds"`
	Sent    uint64  `json:"sent"`
	Replies uint64  `json:"replies"`
	Lost    uint64  `json:"lost"`
	// Mbps and PPS are of the replies: inner bytes (and packets) that made
	// the round trip, per second, one way.
	Mbps float64 `json:"mbps"`
	PPS  float64 `json:"pps"`
	// GCCycles and GCCPUSeconds are this process's garbage collections
	// during the stream, and their CPU: the stream's UE runs in it, and
	// so does the in-process P-CSCF, whose heap grows with the UEs held.
	GCCycles     uint64  `json:"gc_cycles"`
	GCCPUSeconds float64 `json:"gc_cpu_s"`
}

// runStream registers subscriber index i with the P-CSCF and streams for d.
func runStream(ctx context.Context, cfg RegisterConfig, i int, d time.Duration) (StreamResult, error) {
	sub := BenchSubscriber(cfg.Prefix, cfg.Domain, cfg.Seed, i)
	usim, err := akakeys.NewUSIM(sub.K, sub.OPc, akakeys.USIMConfig{})
	if err != nil {
		return StreamResult{}, err
	}
	bind := netip.MustParseAddr("127.0.0.1")
	if cfg.SIP.Addr().Is6() {
		bind = netip.IPv6Loopback()
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(bind, 0)))
	if err != nil {
		return StreamResult{}, err
	}
	defer conn.Close()
	conn.SetReadBuffer(4 << 20)
	conn.SetWriteBuffer(4 << 20)
	u := &regUE{sub: sub, domain: cfg.Domain, usim: usim, conn: rawudp.New(conn), sipTo: cfg.SIP, espTo: cfg.ESP}
	if err := u.register(cfg.Expires); err != nil {
		return StreamResult{}, fmt.Errorf("bench: the stream's UE (%s) did not register: %w", sub.IMPI, err)
	}
	gc0 := readGCCounters()
	res, err := u.stream(ctx, d)
	gc1 := readGCCounters()
	res.GCCycles, res.GCCPUSeconds = gc1.cycles-gc0.cycles, gc1.gcCPU-gc0.gcCPU
	return res, err
}

// stream sends echo requests to the P-CSCF's inner address for d, with
// streamWindow in flight, and counts the replies.
func (u *regUE) stream(ctx context.Context, d time.Duration) (StreamResult, error) {
	var res StreamResult
	u.buf = make([]byte, 64<<10)
	defer func() { u.buf = nil }()
	data := make([]byte, StreamPacket-28)
	pkt := make([]byte, 0, StreamPacket)
	sealed := make([]byte, esp.HeaderRoom+StreamPacket+esp.TailRoom)
	id := uint16(time.Now().UnixNano())
	var seq uint16
	inflight := 0
	start := time.Now()
	end := start.Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		for ; inflight < streamWindow; inflight++ {
			seq++
			pkt = inet.AppendEcho(pkt[:0], inet.EchoRequest, u.inner, u.gw, id, seq, data)
			copy(sealed[esp.HeaderRoom:], pkt)
			out, err := u.out.Seal(sealed, esp.HeaderRoom, len(pkt), 4)
			if err != nil {
				return res, err
			}
			if _, err := u.conn.WriteToUDPAddrPort(out, u.espTo); err != nil {
				return res, fmt.Errorf("bench: stream: %w", err)
			}
			res.Sent++
		}
		p, err := u.readESP(time.Now().Add(streamWait))
		switch {
		case errors.Is(err, errDeadline):
			res.Lost += uint64(inflight)
			inflight = 0
		case err != nil:
			return res, err
		case isEchoReply(p, id):
			res.Replies++
			inflight--
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.PPS = float64(res.Replies) / res.Seconds
	res.Mbps = res.PPS * StreamPacket * 8 / 1e6
	return res, nil
}

// isEchoReply tells whether p is an IPv4 ICMP echo reply with our id.
func isEchoReply(p []byte, id uint16) bool {
	if len(p) < 28 || p[0] != 0x45 || p[9] != 1 {
		return false
	}
	ic := p[20:]
	return ic[0] == 0 && binary.BigEndian.Uint16(ic[4:]) == id
}
