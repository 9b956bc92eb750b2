package esp

import (
	"bytes"
	"sync"
	"testing"
)

func newIn(t testing.TB, spi SPI) *Inbound {
	c := allPairs[3].config(Tunnel, false)
	c.SPI = spi
	_, in := mustSA(t, c)
	return in
}

func TestTable(t *testing.T) {
	var tb Table
	if tb.Lookup(0x1000) != nil || tb.Len() != 0 || tb.SPIs() != nil {
		t.Fatal("zero table not empty")
	}
	a, b := newIn(t, 0x1000), newIn(t, 0x2000)
	if err := tb.Add(a); err != nil {
		t.Fatal(err)
	}
	if err := tb.Add(b); err != nil {
		t.Fatal(err)
	}
	if err := tb.Add(newIn(t, 0x1000)); err == nil {
		t.Fatal("duplicate SPI accepted")
	}
	if err := tb.Add(nil); err == nil {
		t.Fatal("nil SA accepted")
	}
	if tb.Lookup(0x1000) != a || tb.Lookup(0x2000) != b || tb.Lookup(0x3000) != nil || tb.Len() != 2 || len(tb.SPIs()) != 2 {
		t.Fatal("lookup")
	}
	a2 := newIn(t, 0x1000)
	if old := tb.Replace(a2); old != a || tb.Lookup(0x1000) != a2 {
		t.Fatal("replace")
	}
	if old := tb.Replace(newIn(t, 0x3000)); old != nil || tb.Len() != 3 {
		t.Fatal("replace as add")
	}
	if tb.Replace(nil) != nil {
		t.Fatal("replace nil")
	}
	if got, err := tb.Remove(0x2000); err != nil || got != b || tb.Lookup(0x2000) != nil || tb.Len() != 2 {
		t.Fatal("remove", err)
	}
	if _, err := tb.Remove(0x2000); err == nil {
		t.Fatal("double remove")
	}
	var empty Table
	if _, err := empty.Remove(1); err == nil {
		t.Fatal("remove from empty")
	}
}

func TestTableOpen(t *testing.T) {
	c := allPairs[10].config(Tunnel, false)
	o, in := mustSA(t, c)
	var tb Table
	if err := tb.Add(in); err != nil {
		t.Fatal(err)
	}
	payload := []byte{0x45, 1, 2, 3, 4}
	pkt := seal(t, o, payload, 0)
	got, pl, nh, seq, err := tb.Open(pkt)
	if err != nil || got != in || nh != 4 || seq != 1 || !bytes.Equal(pl, payload) {
		t.Fatal(err)
	}
	if _, _, _, _, err := tb.Open([]byte{1, 2}); err != ErrShort {
		t.Fatal(err)
	}
	pkt = seal(t, o, payload, 0)
	pkt[3] ^= 1
	if _, _, _, _, err := tb.Open(pkt); err != ErrUnknownSPI {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(50, func() { tb.Lookup(c.SPI) }); a != 0 {
		t.Fatalf("Lookup allocates %v", a)
	}
}

// TestTableConcurrent: readers on the hot path while writers churn (-race).
func TestTableConcurrent(t *testing.T) {
	var tb Table
	fixed := newIn(t, 0x9999)
	if err := tb.Add(fixed); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if tb.Lookup(0x9999) != fixed {
					t.Error("fixed SA vanished")
					return
				}
				tb.Lookup(0x1234)
			}
		}()
	}
	sas := []*Inbound{newIn(t, 0x1234), newIn(t, 0x1235)}
	for i := range 200 {
		in := sas[i%2]
		if err := tb.Add(in); err != nil {
			t.Fatal(err)
		}
		tb.Replace(in)
		if _, err := tb.Remove(in.SPI()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}
