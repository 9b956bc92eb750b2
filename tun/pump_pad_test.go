package tun_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
	"github.com/imsec/imsec/tun/udp"
)

// Batch padding (tun.Config.BatchPad): consecutive packets to one peer are
// padded to one ESP length so that they leave in one segmented UDP send.

// padJobs makes jobs of the given inner sizes in buffers like the pump's
// (64 bytes of headroom, an MTU of 1422 and esp.TailRoom after it).
func padJobs(sizes []int) []esp.SealJob {
	jobs := make([]esp.SealJob, len(sizes))
	for i, n := range sizes {
		buf := make([]byte, 64+1422+esp.TailRoom)
		buf[64] = 0x45
		jobs[i] = esp.SealJob{Buf: buf, Off: 64, N: n}
	}
	return jobs
}

// TestPadRunKnown: AES-CBC/HMAC-SHA-1-96 ESP lengths are 36 bytes plus
// the payload and its 2-byte trailer rounded up to 16: 64 -> 116,
// 81 -> 132, 98 -> 148, 1000 -> 1060.
func TestPadRunKnown(t *testing.T) {
	out, _ := tun.SAPair(t, 0x1001, esp.EncAESCBC, esp.AuthHMACSHA196)
	for _, tc := range []struct {
		limit int
		sizes []int
		pads  []int
	}{
		{64, []int{64, 81, 98}, []int{32, 16, 0}},
		{16, []int{64, 81, 98}, []int{16, 0, 0}}, // 64 and 81 meet at 132; 98 alone
		{240, []int{98, 64, 1000, 81, 64}, []int{0, 32, 0, 0, 16}},
		{240, []int{64}, []int{0}},
		{240, []int{81, 81, 81}, []int{0, 0, 0}},
		{240, []int{64, 81, 98, 64, 81, 98}, []int{32, 16, 0, 32, 16, 0}},
	} {
		jobs := padJobs(tc.sizes)
		tun.PadRun(out, jobs, tc.limit)
		for i, j := range jobs {
			if j.Pad != tc.pads[i] {
				t.Errorf("limit %d sizes %v: pads %v, want %v", tc.limit, tc.sizes, pads(jobs), tc.pads)
				break
			}
		}
	}
}

func pads(jobs []esp.SealJob) []int {
	var p []int
	for _, j := range jobs {
		p = append(p, j.Pad)
	}
	return p
}

// TestPadRunProperties: on random runs of every algorithm pair the pads
// are ones Reserve accepts, within the limit, and every maximal group of
// consecutive packets of one ESP length is as long as its longest packet
// unpadded: padding never makes a packet longer than one the pump was
// sending anyway, so nothing outgrows the path MTU.
func TestPadRunProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, alg := range []struct {
		e esp.EncAlg
		a esp.AuthAlg
	}{{esp.EncAESCBC, esp.AuthHMACSHA196}, {esp.EncAESGCM, esp.AuthNull}, {esp.EncDES3CBC, esp.AuthHMACMD596}, {esp.EncNull, esp.AuthHMACSHA256128}} {
		out, _ := tun.SAPair(t, 0x1001, alg.e, alg.a)
		for round := range 200 {
			limit := []int{1, 16, 64, 240, 255}[round%5]
			sizes := make([]int, rng.IntN(48)+1)
			for i := range sizes {
				if rng.IntN(4) == 0 {
					sizes[i] = 20 + rng.IntN(1402)
				} else {
					sizes[i] = 64 + rng.IntN(137)
				}
			}
			jobs := padJobs(sizes)
			tun.PadRun(out, jobs, limit)
			lens := make([]int, len(jobs))
			for i, j := range jobs {
				if j.Pad < 0 || j.Pad > limit || j.Pad > out.MaxPad(j.N) {
					t.Fatalf("%v/%v limit %d: job %d (%d bytes) pad %d", alg.e, alg.a, limit, i, j.N, j.Pad)
				}
				lens[i] = j.N + out.Overhead(j.N) + j.Pad
			}
			for lo := 0; lo < len(lens); {
				hi, longest := lo, 0
				for ; hi < len(lens) && lens[hi] == lens[lo]; hi++ {
					longest = max(longest, jobs[hi].N+out.Overhead(jobs[hi].N))
				}
				if longest != lens[lo] {
					t.Fatalf("%v/%v: jobs %d..%d padded to %d, longest of them %d", alg.e, alg.a, lo, hi-1, lens[lo], longest)
				}
				lo = hi
			}
			if n := out.Reserve(jobs); n != len(jobs) {
				t.Fatalf("%v/%v: Reserve took %d of %d: %v", alg.e, alg.a, n, len(jobs), jobs)
			}
			out.SealReserved(jobs)
			for i, j := range jobs {
				if len(j.Pkt) != lens[i] {
					t.Fatalf("%v/%v: job %d sealed to %d bytes, want %d", alg.e, alg.a, i, len(j.Pkt), lens[i])
				}
			}
		}
	}
}

// TestPumpBatchPadLoopback sends bursts of small packets of sizes that
// never repeat back to back through two pumps on loopback UDP sockets:
// with batch padding (the default) every packet arrives intact and in
// order, the UE's pump reports the padding it added, and the gateway's
// saw no drop; with BatchPad -1 nothing is padded.
func TestPumpBatchPadLoopback(t *testing.T) {
	for _, batchPad := range []int{0, -1} {
		t.Run(fmt.Sprintf("BatchPad=%d", batchPad), func(t *testing.T) {
			ueDev := tuntest.NewChannelDevice(1400, 64, 4096)
			gwDev := tuntest.NewChannelDevice(1400, 64, 4096)
			var conns [2]*udp.Conn
			var pumps [2]*tun.Pump
			for i, dev := range []tun.Device{ueDev, gwDev} {
				c, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
				if err != nil {
					t.Fatal(err)
				}
				if gso, _ := c.Offload(); !gso && batchPad == 0 {
					c.Close()
					t.Skip("no UDP segmentation offload on this system: the pump pads only for segmented sends")
				}
				conns[i] = c
				if pumps[i], err = tun.NewPump(tun.Config{Device: dev, Conn: c, BatchPad: batchPad}); err != nil {
					t.Fatal(err)
				}
				p := pumps[i]
				t.Cleanup(func() { p.Close() })
			}
			all := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
			ue, err := pumps[0].AddPeer(tun.PeerConfig{Name: "gateway", Endpoint: conns[1].LocalAddr(), Allowed: all, Routes: all})
			fakeMust(t, err)
			gw, err := pumps[1].AddPeer(tun.PeerConfig{Name: "ue", Endpoint: conns[0].LocalAddr(), Allowed: all, Routes: all})
			fakeMust(t, err)
			ueOut, gwIn, gwOut, ueIn := fakeSAs(t)
			ue.SetOutbound(ueOut)
			gw.SetOutbound(gwOut)
			fakeMust(t, pumps[1].AddInbound(gw, gwIn))
			fakeMust(t, pumps[0].AddInbound(ue, ueIn))

			const bursts, burst = 40, 48
			pkt := func(i int) []byte {
				size := 36 + 17*(i%9) // 64..200-byte IP packets, as bench's mix
				payload := make([]byte, size)
				binary.BigEndian.PutUint32(payload, uint32(i))
				return tuntest.UDPPacket(netip.AddrPortFrom(fakeUEInner, 4000), netip.AddrPortFrom(fakeGWInner, 4000), payload)
			}
			for b := range bursts {
				for i := range burst { // queued before the pump's next read: one batch
					ueDev.Inbound <- pkt(b*burst + i)
				}
				for i := range burst {
					expectPacket(t, gwDev, pkt(b*burst+i))
				}
			}
			c, g := pumps[0].Counters(), pumps[1].Counters()
			if g.RxPackets != bursts*burst || len(g.Drops) != 0 {
				t.Fatalf("gateway counters %+v", g)
			}
			if batchPad < 0 && c.TxPadBytes != 0 || batchPad == 0 && c.TxPadBytes == 0 {
				t.Fatalf("BatchPad %d: the UE's pump padded %d bytes", batchPad, c.TxPadBytes)
			}
			t.Logf("padding: %.1f bytes per packet", float64(c.TxPadBytes)/float64(c.TxPackets))
		})
	}
}
