package tun

import (
	"math"

	"github.com/imsec/imsec/esp"
)

// DefaultBatchPad is Config.BatchPad's default: 64 bytes, what a packet
// already carries in outer IPv4, UDP and AES-CBC/HMAC-SHA-1-96 ESP headers
// (20 + 8 + 8 + 16 + 12). What it gains for small packets of mixed sizes
// through kernel TUNs, and what larger limits gave, is measured in
// docs/results.md (`bench/compare.sh`).
const DefaultBatchPad = 64

// offloader is a PacketConn that tells whether it segments sends (GSO) and
// coalesces receives (GRO), as udp.Conn does.
type offloader interface{ Offload() (gso, gro bool) }

// padding reports whether outbound passes are padded now: BatchPad is on
// and the socket segments (udp.Conn stops if the kernel refuses GSO).
func (p *Pump) padding() bool {
	if p.cfg.BatchPad <= 0 || p.offload == nil {
		return false
	}
	gso, _ := p.offload.Offload()
	return gso
}

// padRun sets the Pad of jobs, one SA's consecutive packets, for the UDP
// writer, which sends consecutive datagrams of one length, and one shorter
// one last, as one segmented send. Each group of consecutive packets whose
// ESP lengths can all reach the group's longest, with at most limit bytes
// of extra padding and within the room of their buffers, gets that one
// length, except its last packet: it may stay shorter, and so may the
// packet after the group if it is shorter than the group's length.
func padRun(out *esp.Outbound, jobs []esp.SealJob, limit int) {
	espLen := func(j *esp.SealJob) int { return j.N + out.Overhead(j.N) }
	for lo := 0; lo < len(jobs); {
		top, ceil := 0, math.MaxInt // the group's length; the most all can reach
		hi := lo
		for ; hi < len(jobs); hi++ {
			j := &jobs[hi]
			l := espLen(j)
			room := min(out.MaxPad(j.N), limit, len(j.Buf)-(j.Off-out.HeaderLen()+l))
			t, c := max(top, l), min(ceil, l+room)
			if t > c && hi > lo {
				break
			}
			top, ceil = t, c
		}
		if hi < len(jobs) && espLen(&jobs[hi]) < top {
			hi++ // a shorter packet that could not reach top ends the send as it is
		}
		for i := lo; i < hi-1; i++ {
			jobs[i].Pad = top - espLen(&jobs[i])
		}
		jobs[hi-1].Pad = 0
		lo = hi
	}
}
