package pcap_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"

	"github.com/imsec/imsec/tun/pcap"
)

// A capture of one datagram (checksums checked with a Python one-liner, RFC 1071): a 24-byte file header, a 16-byte record
// header, then the IPv4 packet (20 + 8 bytes of headers and the payload).
func ExampleWriter() {
	var file bytes.Buffer
	w, err := pcap.NewWriter(&file, pcap.Options{Now: func() time.Time { return time.Unix(1_700_000_000, 0) }})
	if err != nil {
		panic(err)
	}
	src := netip.MustParseAddrPort("192.0.2.1:4500")
	dst := netip.MustParseAddrPort("198.51.100.2:4500")
	if err := w.WriteUDP(src, dst, []byte{0xff}); err != nil { // a NAT keepalive
		panic(err)
	}
	b := file.Bytes()
	fmt.Println(len(b), "bytes")
	fmt.Printf("IPv4 header % x\n", b[40:60])
	fmt.Printf("UDP header  % x\n", b[60:68])
	// Output:
	// 69 bytes
	// IPv4 header 45 00 00 1d 00 00 40 00 40 11 4e 99 c0 00 02 01 c6 33 64 02
	// UDP header  11 94 11 94 00 09 f1 7b
}
