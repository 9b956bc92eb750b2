package tun_test

import (
	"fmt"
	"io"
	"net/netip"
	"testing"

	"github.com/imsec/imsec/tun"
	"github.com/imsec/imsec/tun/tuntest"
)

// BenchmarkNetstackTCP measures one TCP stream between two netstacks
// joined by the trivial pump (tuntest.Connect): the ceiling of the inner
// path before ESP is added. Each op writes 64 KiB; MB/s is payload.
func BenchmarkNetstackTCP(b *testing.B) {
	for _, mtu := range []int{1400, 9000} {
		b.Run(mtuName(mtu), func(b *testing.B) { benchTCP(b, mtu) })
	}
}

func mtuName(mtu int) string {
	if mtu == 1400 {
		return "mtu=1400"
	}
	return "mtu=9000"
}

func benchTCP(b *testing.B, mtu int) {
	ue, pc := backToBackMTU(b, mtu)
	ctx := ctxT(b)
	l, err := pc.ListenTCP(ap(pcIP, 5001))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	got := make(chan int64, 1)
	go func() {
		s, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, s)
		s.Close()
		got <- n
	}()
	c, err := ue.DialTCP(ctx, netip.AddrPort{}, ap(pcIP, 5001))
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
	n := <-got // the receiver has everything: part of the measured time
	b.StopTimer()
	c.Close()
	if n != int64(b.N)*int64(len(chunk)) {
		b.Fatalf("received %d bytes, sent %d", n, int64(b.N)*int64(len(chunk)))
	}
	st := ue.Stats()
	b.ReportMetric(float64(st.QueueDrops), "drops")
}

// BenchmarkNetstackUDP measures the device side of the data path for one
// datagram: "in" writes a UDP packet to the Device (what the pump does after
// opening ESP) and reads it from the socket; "out" writes to the socket and
// reads the packet from the Device (what the pump does before sealing).
func BenchmarkNetstackUDP(b *testing.B) {
	for _, size := range []int{64, 512, 1400, 8000} {
		for _, dir := range []string{"in", "out"} {
			b.Run(fmt.Sprintf("%s/%d", dir, size), func(b *testing.B) { benchUDP(b, dir, size) })
		}
	}
}

func benchUDP(b *testing.B, dir string, size int) {
	const hdr = 20 + 8
	d, err := tun.NewNetstack(tun.NetstackOptions{MTU: 9000, Addresses: []netip.Prefix{netip.PrefixFrom(ueIP, 32)}})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	c, err := d.ListenUDP(ap(ueIP, 41000))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	uc := c.(tun.UDPAddrPortConn)
	payload := make([]byte, size-hdr)
	rbuf := make([]byte, 9000)
	bufs := [][]byte{make([]byte, tun.MinOffset+9000)}
	sizes := []int{0}
	pkt := [][]byte{append(make([]byte, tun.MinOffset), tuntest.UDPPacket(ap(pcIP, 6100), ap(ueIP, 41000), payload)...)}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if dir == "in" {
			if _, err := d.Write(pkt, tun.MinOffset); err != nil {
				b.Fatal(err)
			}
			if _, _, err := uc.ReadFromUDPAddrPort(rbuf); err != nil {
				b.Fatal(err)
			}
			continue
		}
		if _, err := uc.WriteToUDPAddrPort(payload, ap(pcIP, 6100)); err != nil {
			b.Fatal(err)
		}
		if n, err := d.Read(bufs, sizes, tun.MinOffset); n != 1 || err != nil || sizes[0] != size {
			b.Fatalf("Read = %d (%d bytes), %v", n, sizes[0], err)
		}
	}
}
