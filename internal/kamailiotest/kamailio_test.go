//go:build linux

package kamailiotest

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/imsec/imsec/internal/loopback"
)

// TestStartConnectsCDP starts the S-CSCF against a bare TCP listener standing
// in for the HSS and checks that cdp connects and sends a CER (code 257).
func TestStartConnectsCDP(t *testing.T) {
	Skip(t)
	addr := loopback.Random()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 3868)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	k := Start(t, Config{Addr: addr, HSS: netip.MustParseAddrPort(ln.Addr().String())})
	if k.SIP != netip.AddrPortFrom(addr, SIPPort) {
		t.Errorf("SIP = %v", k.SIP)
	}
	_ = ln.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("cdp did not connect: %v", err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [20]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		t.Fatalf("no Diameter header from cdp: %v", err)
	}
	flags, code := hdr[4], binary.BigEndian.Uint32(hdr[4:8])&0xffffff
	if hdr[0] != 1 || code != 257 || flags&0x80 == 0 {
		t.Fatalf("first message: version %d flags %#x code %d, want a CER (v1, R, 257)", hdr[0], flags, code)
	}
}

// TestStopKillsWorkers checks Stop leaves no kamailio process behind.
func TestStopKillsWorkers(t *testing.T) {
	Skip(t)
	addr := loopback.Random()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 3868)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	k := Start(t, Config{Addr: addr, HSS: netip.MustParseAddrPort(ln.Addr().String())})
	k.Stop()
	select {
	case <-k.Done():
	default:
		t.Fatal("Stop returned before kamailio exited")
	}
	// Nothing answers on its SIP port any more: the workers are gone too.
	if err := k.probe(300 * time.Millisecond); err == nil {
		t.Fatal("kamailio still answers SIP after Stop")
	}
}
