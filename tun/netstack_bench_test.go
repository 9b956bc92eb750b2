package tun_test

import (
	"io"
	"net/netip"
	"testing"
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
