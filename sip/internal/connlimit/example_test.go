package connlimit_test

import (
	"fmt"
	"net"

	"github.com/imsec/imsec/sip/internal/connlimit"
)

// The P-CSCF wraps its unprotected TCP listener before handing it to
// sipgo; a load test where one host plays many UEs turns the per-source
// cap off.
func ExampleNew() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	l := connlimit.New(ln, connlimit.Config{MaxPerSource: connlimit.Off})
	defer l.Close()
	// go srv.ServeTCP(l)

	cfg := l.Config()
	fmt.Println("per source:", cfg.MaxPerSource)
	fmt.Println("idle:", cfg.IdleTimeout, "header:", cfg.HeaderTimeout)
	fmt.Printf("%+v\n", l.Stats())
	// Output:
	// per source: -1
	// idle: 10m0s header: 32s
	// {Accepted:0 RefusedTotal:0 RefusedPerSource:0 RefusedNoAddr:0 IdleTimeouts:0 HeaderTimeouts:0 AcceptRetries:0 Open:0}
}
