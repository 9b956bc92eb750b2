package esp_test

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/imsec/imsec/esp"
)

// A UE→P-CSCF SA in tunnel mode: seal an inner IPv4 packet in place and
// open it on the other side.
func Example() {
	cfg := esp.Config{
		SPI:        0x1000,
		Mode:       esp.Tunnel,
		Encryption: esp.EncAESCBC,
		EncKey:     []byte("0123456789abcdef"),
		Integrity:  esp.AuthHMACSHA196,
		AuthKey:    []byte("0123456789abcdef0123"),
	}
	out, err := esp.NewOutbound(cfg)
	if err != nil {
		panic(err)
	}
	in, err := esp.NewInbound(cfg)
	if err != nil {
		panic(err)
	}

	inner := []byte{0x45, 0x00, 0x00, 0x14} // start of an IPv4 header
	buf := make([]byte, esp.HeaderRoom+len(inner)+esp.TailRoom)
	n := copy(buf[esp.HeaderRoom:], inner)
	pkt, err := out.Seal(buf, esp.HeaderRoom, n, 0) // tunnel mode: next header from the version nibble
	if err != nil {
		panic(err)
	}
	fmt.Println("ESP packet:", len(pkt), "bytes, overhead", out.Overhead(n))
	fmt.Println(esp.Classify(pkt))

	payload, nextHeader, seq, err := in.Open(pkt)
	fmt.Printf("%x next header %d seq %d err %v\n", payload, nextHeader, seq, err)

	_, _, _, err = in.Open(pkt) // the same sequence number again: refused before any crypto
	fmt.Println(err, esp.ReasonOf(err))
	// Output:
	// ESP packet: 52 bytes, overhead 48
	// esp
	// 45000014 next header 4 seq 1 err <nil>
	// esp: replayed or too old sequence number replay
}

// Sorting datagrams that arrive on UDP port 4500 (RFC 3948).
func ExampleClassify() {
	for _, d := range [][]byte{
		esp.Keepalive(),
		{0, 0, 0, 0, 0x11, 0x22},             // non-ESP marker: IKE
		{0x00, 0x00, 0x10, 0x00, 0, 0, 0, 1}, // SPI 0x1000, seq 1
		{0x00, 0x00, 0x00, 0x07, 0, 0, 0, 1}, // reserved SPI
	} {
		fmt.Println(esp.Classify(d))
	}
	// Output:
	// keepalive
	// non-esp
	// esp
	// invalid
}

// Writing SA keys for Wireshark (Preferences → Protocols → ESP → SAs, or
// tshark -o "uat:esp_sa:<line>").
func ExampleKeyLog() {
	kl := esp.NewKeyLog(os.Stdout)
	_ = kl.Log(esp.Config{
		SPI:        0x1000,
		Encryption: esp.EncAESGCM,
		EncKey:     make([]byte, 20), // AES-128 key || salt
		Integrity:  esp.AuthNull,
	}, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7"))
	// Output:
	// "IPv4","192.0.2.1","198.51.100.7","0x00001000","AES-GCM with 16 octet ICV [RFC4106]","0x0000000000000000000000000000000000000000","NULL",""
}
