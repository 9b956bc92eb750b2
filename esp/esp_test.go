package esp

import (
	"bytes"
	"testing"
)

func TestRoundTripQuick(t *testing.T) {
	c := Config{SPI: 0x1000, Mode: Transport, Encryption: EncAESCBC, EncKey: make([]byte, 16), Integrity: AuthHMACSHA196, AuthKey: make([]byte, 20)}
	o, err := NewOutbound(c)
	if err != nil {
		t.Fatal(err)
	}
	in, err := NewInbound(c)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, HeaderRoom+100+TailRoom)
	msg := []byte("hello, esp")
	copy(buf[HeaderRoom:], msg)
	p, err := o.Seal(buf, HeaderRoom, len(msg), 17)
	if err != nil {
		t.Fatal(err)
	}
	pl, nh, seq, err := in.Open(p)
	if err != nil || nh != 17 || seq != 1 || !bytes.Equal(pl, msg) {
		t.Fatalf("Open = %q %d %d %v", pl, nh, seq, err)
	}
}
