package esp

import (
	"encoding/binary"

	"github.com/imsec/imsec/esp/internal/aescbc"
	"github.com/imsec/imsec/esp/internal/hmacsha1"
)

// SealJob is one packet for SealBatch: the payload at Buf[Off:Off+N], with
// the head- and tailroom Seal needs, and Pad bytes more tailroom. NextHeader
// is used in Transport mode only, as Seal's argument is. SealBatch sets Pkt
// (the ESP packet, a sub-slice of Buf) or Err (what Seal would have
// returned, or ErrBadPadding for a Pad it cannot take).
type SealJob struct {
	Buf        []byte
	Off, N     int
	NextHeader byte
	// Pad is padding to add beyond the least the cipher needs: a multiple
	// of the alignment, at most MaxPad(N), else the job fails with
	// ErrBadPadding. Padding packets of different sizes to one length lets
	// a run of them leave in one segmented (GSO) UDP send; RFC 4303 §2.4
	// allows up to 255 bytes of it, and every receiver strips it.
	Pad int

	Pkt []byte
	Err error

	seq uint64 // given by Reserve; 0: none
}

// sealChunk is how many packets SealBatch prepares at once: its per-chunk
// state lives on the stack.
const sealChunk = 32

// SealBatch seals every job as Seal would, with consecutive sequence
// numbers in job order, and returns the number of jobs sealed. With
// AES-CBC it encrypts up to eight packets at once (aescbc.EncryptCBCN),
// with hmac-sha-1-96 it authenticates up to four at once (hmacsha1.SumN),
// and it takes all the sequence numbers with one atomic operation, so a
// batch costs much less than the same packets sealed one by one. Safe for
// concurrent use, like Seal. It is Reserve then SealReserved.
func (o *Outbound) SealBatch(jobs []SealJob) int {
	o.Reserve(jobs)
	return o.SealReserved(jobs)
}

// Reserve checks every job as Seal would (setting Err on those that fail)
// and gives each of the others the next sequence number, in job order, or
// ErrSeqExhausted once the numbers run out. It returns how many jobs got a
// number. SealReserved then seals them, possibly in parts on several
// goroutines at once: the numbers, and so the order the receiver's replay
// window sees, stay those of the jobs.
func (o *Outbound) Reserve(jobs []SealJob) int {
	valid := 0
	for i := range jobs {
		j := &jobs[i]
		j.Pkt, j.seq = nil, 0
		j.NextHeader, j.Err = o.check(j.Buf, j.Off, j.N, j.NextHeader)
		switch {
		case j.Err != nil:
		case j.Pad < 0 || j.Pad > o.MaxPad(j.N) || j.Pad%o.a.align != 0:
			j.Err = ErrBadPadding
		case o.sealEnd(j.Off, j.N)+j.Pad > len(j.Buf):
			j.Err = ErrNoRoom
		}
		if j.Err == nil {
			valid++
		}
	}
	if valid == 0 {
		return 0
	}
	seq := o.seq.Add(uint64(valid)) - uint64(valid)
	numbered := 0
	for i := range jobs {
		j := &jobs[i]
		if j.Err != nil {
			continue
		}
		seq++
		if !o.seqOK(seq) {
			j.Err = ErrSeqExhausted
			continue
		}
		j.seq = seq
		numbered++
	}
	return numbered
}

// SealReserved seals the jobs Reserve numbered and returns how many; jobs
// with Err set are skipped. Calls on disjoint parts of one reserved batch
// may run at once. A job that Reserve did not see is a caller's mistake:
// SealReserved panics.
func (o *Outbound) SealReserved(jobs []SealJob) int {
	for i := range jobs {
		if j := &jobs[i]; j.Err == nil && j.seq == 0 {
			panic("esp: SealReserved on a job that Reserve did not number")
		}
	}
	a := o.a
	if len(jobs) == 1 || !a.aesCBCKey || a.macHash == nil || o.testIV != nil {
		// One by one: GCM already runs its blocks in parallel, and a
		// single packet gains nothing from the multi-buffer path, whose
		// state (sealChunk's ~6 KB frame) would grow the stack of every
		// fresh goroutine that seals one datagram.
		return o.sealEach(jobs)
	}
	return byChunk(jobs, o.sealChunk)
}

// sealEach seals the numbered jobs one at a time.
func (o *Outbound) sealEach(jobs []SealJob) int {
	sealed := 0
	for i := range jobs {
		j := &jobs[i]
		if j.Err != nil {
			continue
		}
		j.Pkt = o.sealSeq(j.Buf, j.Off, j.N, o.a.padLen(j.N)+j.Pad, j.NextHeader, j.seq)
		sealed++
	}
	return sealed
}

// byChunk calls f on jobs sealChunk at a time and adds up what it returns.
func byChunk[J any](jobs []J, f func([]J) int) int {
	done := 0
	for len(jobs) > 0 {
		n := min(len(jobs), sealChunk)
		done += f(jobs[:n])
		jobs = jobs[n:]
	}
	return done
}

// sealChunk seals up to sealChunk AES-CBC jobs with the multi-buffer
// cipher and MAC.
func (o *Outbound) sealChunk(jobs []SealJob) int {
	a := o.a
	// AES-CBC: frame every packet, then make the IVs (one block each,
	// eight at a time), then encrypt the payloads eight at a time, then
	// compute the ICVs.
	var (
		ivJobs  [sealChunk]aescbc.Job
		encJobs [sealChunk]aescbc.Job
		k       int
	)
	hdr := ESPHeaderLen + a.ivLen
	for i := range jobs {
		j := &jobs[i]
		if j.Err != nil {
			continue
		}
		p, pt := o.frame(j.Buf, j.Off, j.N, a.padLen(j.N)+j.Pad, j.NextHeader, j.seq)
		iv := p[ESPHeaderLen:hdr]
		ivBlock(iv, j.seq, o.ivNonce)
		ivJobs[k] = aescbc.Job{Buf: iv, IV: zeroIV[:]}
		encJobs[k] = aescbc.Job{Buf: pt, IV: iv}
		j.Pkt = p
		k++
	}
	o.ivCipher.EncryptCBCN(ivJobs[:k])
	a.cbc().EncryptCBCN(encJobs[:k])

	if key := a.hmacSHA1(); key != nil {
		var (
			macs  [sealChunk]hmacsha1.Job
			tails [sealChunk][4]byte
		)
		k = 0
		for i := range jobs {
			j := &jobs[i]
			if j.Pkt == nil {
				continue
			}
			macs[k] = hmacsha1.Job{Key: key, Msg: j.Pkt[:len(j.Pkt)-a.icvLen], Tail: o.esnTail(tails[k][:], j.seq)}
			k++
		}
		hmacsha1.SumN(macs[:k])
		k = 0
		for i := range jobs {
			if j := &jobs[i]; j.Pkt != nil {
				copy(j.Pkt[len(j.Pkt)-a.icvLen:], macs[k].Sum[:a.icvLen])
				k++
			}
		}
		return k
	}
	st := o.getState()
	for i := range jobs {
		if j := &jobs[i]; j.Pkt != nil {
			icv := len(j.Pkt) - a.icvLen
			copy(j.Pkt[icv:], o.mac(st, j.Pkt[:icv], j.seq)[:a.icvLen])
		}
	}
	o.putState(st)
	return k
}

// OpenJob is one packet for OpenBatch. OpenBatch sets Payload, NextHeader,
// Seq and Err as Open returns them.
type OpenJob struct {
	Pkt []byte

	Payload    []byte
	NextHeader byte
	Seq        uint64
	Err        error
}

// OpenBatch opens every job as Open would, in job order, and returns how
// many opened (Err == nil). Checks run in Open's order for each packet; a
// packet repeated within one batch opens once and is then ErrReplay.
func (in *Inbound) OpenBatch(jobs []OpenJob) int {
	a := in.a
	opened := 0
	if a.aead != nil || a.macHash == nil {
		for i := range jobs {
			j := &jobs[i]
			j.Payload, j.NextHeader, j.Seq, j.Err = in.Open(j.Pkt)
			if j.Err == nil {
				opened++
			}
		}
		return opened
	}
	return byChunk(jobs, in.openChunk)
}

// openChunk opens CBC or null packets with HMAC: the checks that need no
// crypto for all, then every ICV (hmac-sha-1-96: up to four at a time),
// then per packet, in order, the ICV comparison, decryption and the
// trailer checks that move the window.
func (in *Inbound) openChunk(jobs []OpenJob) int {
	a := in.a
	key := a.hmacSHA1()
	var (
		macs  [sealChunk]hmacsha1.Job
		tails [sealChunk][4]byte
	)
	st := in.getState()
	defer in.putState(st)
	// macs[k] is the ICV input and sum of the k-th job that passes the
	// checks, in job order.
	k := 0
	for i := range jobs {
		j := &jobs[i]
		j.Payload, j.NextHeader = nil, 0
		j.Seq, j.Err = in.precheck(j.Pkt)
		if j.Err != nil {
			continue
		}
		msg := j.Pkt[:len(j.Pkt)-a.icvLen]
		if key != nil {
			macs[k] = hmacsha1.Job{Key: key, Msg: msg, Tail: in.esnTail(tails[k][:], j.Seq)}
		} else {
			copy(macs[k].Sum[:], in.mac(st, msg, j.Seq)[:a.icvLen])
		}
		k++
	}
	if key != nil {
		hmacsha1.SumN(macs[:k])
	}
	opened := 0
	k = 0
	for i := range jobs {
		j := &jobs[i]
		if j.Err != nil {
			continue
		}
		sum := &macs[k].Sum
		k++
		// Again, now that the packets before this one have moved the
		// window: the same order of checks as Open one packet at a time.
		seq, ok := in.win.check(binary.BigEndian.Uint32(j.Pkt[4:8]))
		if !ok {
			j.Seq, j.Err = 0, ErrReplay
			continue
		}
		if seq != j.Seq { // ESN: the window crossed 2^32 meanwhile; the ICV covers the new high bits
			j.Seq = seq
			copy(sum[:], in.mac(st, j.Pkt[:len(j.Pkt)-a.icvLen], seq)[:a.icvLen])
		}
		if j.Err = in.verify(j.Pkt, sum[:]); j.Err != nil {
			j.Seq = 0
			continue
		}
		in.decrypt(j.Pkt, st)
		j.Payload, j.NextHeader, j.Err = in.finish(j.Pkt, j.Seq)
		if j.Err == nil {
			opened++
		}
	}
	return opened
}
