package tun_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun/tuntest"
)

// BenchmarkPumpThroughput sends UDP packets of size bytes from A's device
// to B's through two pumps (aes-cbc + hmac-sha-1-96, loopback UDP, the
// allocation-free poolDevices of pump_alloc_test.go), with at most 64 in
// flight; an op is one packet delivered to B's device. B routes to A by
// the default route (the UE's table); A routes to B by a host route (the
// gateway's), so both kinds of lookup are on the path. "lost" counts
// packets that never came (the socket's buffer overflowed).
func BenchmarkPumpThroughput(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			src, dst := netip.MustParseAddrPort("100.64.0.1:5000"), netip.MustParseAddrPort("100.64.0.2:5000")
			pkt := tuntest.UDPPacket(src, dst, bytes.Repeat([]byte{1}, size-28))
			pp := newPoolPair(b, esp.EncAESCBC, esp.AuthHMACSHA196, 32, [][]byte{pkt}, nil, nil)
			const window = 64
			timer := time.NewTimer(time.Hour)
			sent, got, lost := 0, 0, 0
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				for ; sent-got-lost < window; sent++ {
					pp.da.feed <- 0
				}
				timer.Reset(200 * time.Millisecond)
				select {
				case <-pp.db.wrote:
					got++
				case <-timer.C:
					if c := pp.b.Counters(); c.RxPackets == 0 {
						b.Fatalf("nothing came through: A %+v, B %+v", pp.a.Counters(), c)
					}
					lost = sent - got // what was in flight is gone
				}
			}
			b.ReportMetric(float64(lost), "lost")
		})
	}
}
