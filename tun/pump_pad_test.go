package tun_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
	"github.com/imsec/imsec/tun/udp"
)

// Batch padding (tun.Config.BatchPad): consecutive packets to one peer are
// padded to one ESP length so that they leave in one segmented UDP send.

// padJobs makes jobs of the given inner sizes in buffers like the pump's
// (64 bytes of headroom, an MTU of 1422 and esp.TailRoom after it), IPv4
// packets as far as the first byte goes, the rest random.
func padJobs(sizes []int, rng *rand.Rand) []esp.SealJob {
	jobs := make([]esp.SealJob, len(sizes))
	for i, n := range sizes {
		buf := make([]byte, 64+1422+esp.TailRoom)
		for k := range n {
			buf[64+k] = byte(rng.Uint32())
		}
		buf[64] = 0x45
		jobs[i] = esp.SealJob{Buf: buf, Off: 64, N: n}
	}
	return jobs
}

// sends splits ESP lengths as tun/udp's writer does into segmented sends:
// a run of one length, and one shorter datagram to end it. It returns
// each send's first index.
func sends(lens []int) []int {
	var firsts []int
	for i := 0; i < len(lens); {
		firsts = append(firsts, i)
		j := i + 1
		for j < len(lens) && lens[j] == lens[i] {
			j++
		}
		if j < len(lens) && lens[j] < lens[i] {
			j++
		}
		i = j
	}
	return firsts
}

// TestPadRunKnown: AES-CBC/HMAC-SHA-1-96 ESP lengths are 36 bytes plus
// the payload and its 2-byte trailer rounded up to 16: 64 -> 116,
// 81 -> 132, 98 -> 148, 1000 -> 1060.
func TestPadRunKnown(t *testing.T) {
	out, _ := tun.SAPair(t, 0x1001, esp.EncAESCBC, esp.AuthHMACSHA196)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		limit int
		sizes []int
		pads  []int
	}{
		{64, []int{64, 81, 98}, []int{32, 16, 0}},
		{16, []int{64, 81, 98}, []int{16, 0, 0}},          // 64 and 81 meet at 132; 98 alone
		{240, []int{64, 81, 98, 64}, []int{32, 16, 0, 0}}, // the last one ends the send shorter
		{240, []int{98, 64, 1000, 81, 64}, []int{0, 0, 0, 0, 0}},
		{240, []int{98, 64, 81, 1000}, []int{0, 32, 0, 0}},
		{16, []int{98, 64, 81}, []int{0, 0, 0}}, // 64 cannot reach 148: it ends the first send
		{240, []int{64}, []int{0}},
		{240, []int{81, 81, 64}, []int{0, 0, 0}},
		{240, []int{64, 81, 81}, []int{16, 0, 0}},
		{240, []int{64, 81, 98, 64, 81, 98}, []int{32, 16, 0, 32, 16, 0}},
	} {
		jobs := padJobs(tc.sizes, rng)
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

// TestPadRunProperties: on random runs of four algorithm pairs, some
// packets in buffers with little tailroom to spare:
//   - the pads are ones Reserve accepts, within the limit and the room;
//   - a padded packet is as long as another packet of its segmented send
//     is unpadded, so nothing outgrows the path MTU, and it is never the
//     last of its send (where a shorter datagram costs nothing);
//   - the sealed packets have those lengths and open to their payloads;
//   - in all, padding happened and made fewer sends.
func TestPadRunProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, alg := range []struct {
		e esp.EncAlg
		a esp.AuthAlg
	}{{esp.EncAESCBC, esp.AuthHMACSHA196}, {esp.EncAESGCM, esp.AuthNull}, {esp.EncDES3CBC, esp.AuthHMACMD596}, {esp.EncNull, esp.AuthHMACSHA256128}} {
		out, in := tun.SAPair(t, 0x1001, alg.e, alg.a)
		name := fmt.Sprintf("%v/%v", alg.e, alg.a)
		espLen := func(j esp.SealJob) int { return j.N + out.Overhead(j.N) }
		var padded, before, after int
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
			jobs := padJobs(sizes, rng)
			for i := range jobs {
				if rng.IntN(3) == 0 { // 0..63 bytes of tailroom beyond what sealing needs
					j := &jobs[i]
					j.Buf = j.Buf[:min(len(j.Buf), j.Off-out.HeaderLen()+espLen(*j)+rng.IntN(64))]
				}
			}
			payloads := make([][]byte, len(jobs))
			for i, j := range jobs {
				payloads[i] = append([]byte(nil), j.Buf[j.Off:j.Off+j.N]...)
			}
			tun.PadRun(out, jobs, limit)
			plain, lens := make([]int, len(jobs)), make([]int, len(jobs))
			for i, j := range jobs {
				room := len(j.Buf) - (j.Off - out.HeaderLen() + espLen(j))
				if j.Pad < 0 || j.Pad > limit || j.Pad > out.MaxPad(j.N) || j.Pad > room {
					t.Fatalf("%s limit %d: job %d (%d bytes, room %d) pad %d", name, limit, i, j.N, room, j.Pad)
				}
				plain[i], lens[i] = espLen(j), espLen(j)+j.Pad
				padded += j.Pad
			}
			firsts := sends(lens)
			for k, lo := range firsts {
				hi := len(lens)
				if k+1 < len(firsts) {
					hi = firsts[k+1]
				}
				for i := lo; i < hi; i++ {
					if jobs[i].Pad == 0 {
						continue
					}
					if i == hi-1 {
						t.Fatalf("%s: job %d is padded but ends its send (lengths %v, pads %v)", name, i, lens, pads(jobs))
					}
					if !slices.Contains(plain[lo:hi], lens[i]) {
						t.Fatalf("%s: job %d padded to %d, which no packet of its send %v is", name, i, lens[i], plain[lo:hi])
					}
				}
			}
			before += len(sends(plain))
			after += len(firsts)
			if n := out.Reserve(jobs); n != len(jobs) {
				t.Fatalf("%s: Reserve took %d of %d: %v", name, n, len(jobs), jobs)
			}
			out.SealReserved(jobs)
			for i, j := range jobs {
				if len(j.Pkt) != lens[i] {
					t.Fatalf("%s: job %d sealed to %d bytes, want %d", name, i, len(j.Pkt), lens[i])
				}
				got, _, _, err := in.Open(j.Pkt)
				if err != nil || !bytes.Equal(got, payloads[i]) {
					t.Fatalf("%s: job %d (pad %d) opens: %v, payload equal %v", name, i, j.Pad, err, bytes.Equal(got, payloads[i]))
				}
			}
		}
		if padded == 0 || after >= before {
			t.Fatalf("%s: %d bytes of padding, %d sends against %d unpadded", name, padded, after, before)
		}
		t.Logf("%s: %d sends against %d unpadded", name, after, before)
	}
}

// TestPumpBatchPadLoopback sends bursts of small packets of sizes that
// never repeat back to back through two pumps on loopback UDP sockets.
// The UE's socket is wrapped to say it segments (as udp.Conn does on
// Linux; elsewhere it sends one by one, which does not change what the
// pump does) and to record what the pump hands it. With batch padding (the
// default) consecutive datagrams of one length, which the socket sends as
// one, are many, every packet arrives intact and in order, and the UE's
// pump counts the padding; with BatchPad -1 there is no such pair and no
// padding.
func TestPumpBatchPadLoopback(t *testing.T) {
	for _, batchPad := range []int{0, -1} {
		t.Run(fmt.Sprintf("BatchPad=%d", batchPad), func(t *testing.T) {
			ueDev := tuntest.NewChannelDevice(1400, 64, 4096)
			gwDev := tuntest.NewChannelDevice(1400, 64, 4096)
			gated := &gatedDevice{Device: ueDev, open: make(chan struct{})}
			var conns [2]*udp.Conn
			var pumps [2]*tun.Pump
			rec := &recordingConn{}
			for i, dev := range []tun.Device{gated, gwDev} {
				c, err := udp.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
				if err != nil {
					t.Fatal(err)
				}
				conns[i] = c
				var pc tun.PacketConn = c
				if i == 0 {
					rec.Conn = c
					pc = rec
				}
				if pumps[i], err = tun.NewPump(tun.Config{Device: dev, Conn: pc, BatchPad: batchPad}); err != nil {
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

			// All queued before the pump's first read: it reads full
			// batches, so its passes are full ones (16 small packets).
			const count = 1920
			pkt := func(i int) []byte {
				size := 36 + 17*(i%9) // 64..200-byte IP packets, as bench's mix
				payload := make([]byte, size)
				binary.BigEndian.PutUint32(payload, uint32(i))
				return tuntest.UDPPacket(netip.AddrPortFrom(fakeUEInner, 4000), netip.AddrPortFrom(fakeGWInner, 4000), payload)
			}
			for i := range count {
				ueDev.Inbound <- pkt(i)
			}
			gated.release()
			for i := range count {
				expectPacket(t, gwDev, pkt(i))
			}
			c, g := pumps[0].Counters(), pumps[1].Counters()
			if g.RxPackets != count || len(g.Drops) != 0 {
				t.Fatalf("gateway counters %+v", g)
			}
			// At the default limit of 64 bytes the nine sizes of the mix
			// (ESP 116..244 bytes) go in groups of five, four or fewer.
			pairs := rec.pairs.Load()
			if batchPad < 0 && (c.TxPadBytes != 0 || pairs != 0) || batchPad == 0 && (c.TxPadBytes == 0 || pairs < count/2) {
				t.Fatalf("BatchPad %d: the UE's pump padded %d bytes; %d datagrams of %d followed one of their length", batchPad, c.TxPadBytes, pairs, c.TxPackets)
			}
			t.Logf("padding: %.1f bytes per packet; %d of %d datagrams followed one of their length", float64(c.TxPadBytes)/float64(c.TxPackets), pairs, c.TxPackets)
		})
	}
}

// recordingConn is a udp.Conn that says it segments sends and counts the
// datagrams handed to WriteBatch right after one of the same length and
// address: those the socket sends in one segmented send.
type recordingConn struct {
	*udp.Conn
	pairs atomic.Uint64
}

func (r *recordingConn) Offload() (gso, gro bool) { return true, false }

func (r *recordingConn) WriteBatch(msgs []udp.Message) (int, error) {
	for i := 1; i < len(msgs); i++ {
		if msgs[i].N == msgs[i-1].N && msgs[i].Addr == msgs[i-1].Addr {
			r.pairs.Add(1)
		}
	}
	return r.Conn.WriteBatch(msgs)
}

// gatedDevice holds the pump's reads until release (or Close).
type gatedDevice struct {
	tun.Device
	open chan struct{}
	once sync.Once
}

func (g *gatedDevice) release() { g.once.Do(func() { close(g.open) }) }

func (g *gatedDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	<-g.open
	return g.Device.Read(bufs, sizes, offset)
}

func (g *gatedDevice) Close() error {
	g.release()
	return g.Device.Close()
}
