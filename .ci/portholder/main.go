// Command portholder holds N loopback TCP connections open until it is
// interrupted, so that the test suite can be run on a host whose ephemeral
// ports are largely taken (.ci/busy.sh). It listens on 127.0.0.1:0 and
// dials itself N times; it prints "holding N" once they are all up.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	n := flag.Int("n", 9000, "connections to hold")
	flag.Parse()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(2**n+100) {
		lim.Cur = min(lim.Max, uint64(2**n+100))
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	var out []net.Conn
	for i := 0; i < *n; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			fmt.Fprintf(os.Stderr, "after %d: %v\n", i, err)
			break
		}
		out = append(out, c)
	}
	fmt.Printf("holding %d\n", len(out))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	for _, c := range out {
		c.Close()
	}
	ln.Close()
}
