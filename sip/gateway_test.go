package sip

import (
	"testing"

	"github.com/imsec/imsec/tun/dhcp"
)

// TestDHCPQueueFullIsCounted: a DHCP request that finds the queue full is
// dropped (the UE retransmits) and counted, not lost silently.
func TestDHCPQueueFullIsCounted(t *testing.T) {
	s := &Server{dhcpIn: make(chan dhcpRequest, 1), spis: newSPIPool(), lazy: newLazySAs(), ovl: newOverload(Limits{})}
	cl, err := dhcp.NewClient([]byte("alice"))
	if err != nil {
		t.Fatal(err)
	}
	pkt, err := cl.Discover()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if !s.intercept(nil, pkt) {
			t.Fatal("a DISCOVER not taken by the intercept")
		}
	}
	if got := s.Stats().DHCPDropped; got != 2 {
		t.Fatalf("DHCPDropped = %d, want 2 (queue of 1, 3 requests)", got)
	}
	if s.intercept(nil, []byte{0x45, 0}) {
		t.Fatal("a non-DHCP packet taken by the intercept")
	}
}
