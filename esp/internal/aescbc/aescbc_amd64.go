//go:build amd64 && !purego

package aescbc

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useAsm: the assembly uses AES-NI (AESENC, AESENCLAST, AESDEC, AESDECLAST)
// and SSE2 (MOVUPS, PXOR), which every amd64 CPU has.
var useAsm = cpu.X86.HasAES

// decryptCBCAsm decrypts n blocks from src to dst with the decryption
// schedule xk (Nr+1 round keys of 16 bytes), chaining from *iv.
//
//go:noescape
func decryptCBCAsm(nr int, xk *byte, dst, src *byte, n int, iv *byte)

// encryptCBCAsm encrypts n blocks from src to dst with the encryption
// schedule xk, chaining from *iv.
//
//go:noescape
func encryptCBCAsm(nr int, xk *byte, dst, src *byte, n int, iv *byte)

// encryptCBC8Asm encrypts n blocks in place in each of bufs[0..7], lane i
// chaining from ivs[i], and leaves each lane's last ciphertext block in
// ivs[i]. encryptCBC4Asm and encryptCBC2Asm do the same for the first four
// and two lanes.
//
//go:noescape
func encryptCBC8Asm(nr int, xk *byte, bufs *[lanes]*byte, ivs *[lanes][BlockSize]byte, n int)

//go:noescape
func encryptCBC4Asm(nr int, xk *byte, bufs *[lanes]*byte, ivs *[lanes][BlockSize]byte, n int)

//go:noescape
func encryptCBC2Asm(nr int, xk *byte, bufs *[lanes]*byte, ivs *[lanes][BlockSize]byte, n int)

// lanes is the number of chains encryptCBC8Asm interleaves: eight AESENCs
// in flight cover the instruction's latency on current cores (4 cycles,
// 2 per cycle issued).
const lanes = 8

// encryptCBCN keeps up to eight jobs in lanes: each kernel call runs the
// lanes for as many blocks as the shortest has left, then finished lanes
// take the next jobs (the last active lane moves into a finished one's
// slot, so the active lanes are always the first ones). When fewer than
// eight are left it runs four, two, then the single-chain loop.
func encryptCBCN(c *Cipher, jobs []Job) {
	if !useAsm {
		for _, j := range jobs {
			encryptGeneric(c, j.Buf, j.Buf, j.IV)
		}
		return
	}
	var (
		bufs   [lanes]*byte
		ivs    [lanes][BlockSize]byte
		left   [lanes]int // blocks
		active int
		next   int
	)
	xk := &c.enc[0][0]
	for {
		for active < lanes && next < len(jobs) {
			j := &jobs[next]
			next++
			if len(j.Buf) == 0 {
				continue
			}
			bufs[active], left[active] = &j.Buf[0], len(j.Buf)/BlockSize
			copy(ivs[active][:], j.IV)
			active++
		}
		var k int
		switch {
		case active == 0:
			return
		case active == 1:
			encryptCBCAsm(c.rounds, xk, bufs[0], bufs[0], left[0], &ivs[0][0])
			return
		case active >= 8:
			k = 8
		case active >= 4:
			k = 4
		default:
			k = 2
		}
		m := left[0]
		for _, n := range left[1:k] {
			m = min(m, n)
		}
		switch k {
		case 8:
			encryptCBC8Asm(c.rounds, xk, &bufs, &ivs, m)
		case 4:
			encryptCBC4Asm(c.rounds, xk, &bufs, &ivs, m)
		default:
			encryptCBC2Asm(c.rounds, xk, &bufs, &ivs, m)
		}
		// Downwards, so that a lane moved into a finished one's slot has
		// either had its turn already or is past k and waits.
		for i := k - 1; i >= 0; i-- {
			left[i] -= m
			if left[i] > 0 {
				bufs[i] = (*byte)(unsafe.Add(unsafe.Pointer(bufs[i]), m*BlockSize))
				continue
			}
			active--
			bufs[i], ivs[i], left[i] = bufs[active], ivs[active], left[active]
			bufs[active] = nil
		}
	}
}

func decryptCBC(c *Cipher, dst, src, iv []byte) {
	if !useAsm {
		decryptGeneric(c, dst, src, iv)
		return
	}
	decryptCBCAsm(c.rounds, &c.dec[0][0], &dst[0], &src[0], len(src)/BlockSize, &iv[0])
}

func encryptCBC(c *Cipher, dst, src, iv []byte) {
	if !useAsm {
		encryptGeneric(c, dst, src, iv)
		return
	}
	encryptCBCAsm(c.rounds, &c.enc[0][0], &dst[0], &src[0], len(src)/BlockSize, &iv[0])
}
