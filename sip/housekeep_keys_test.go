package sip

import (
	"testing"
	"time"

	"github.com/imsec/imsec/esp"
)

// TestIdleUEKeysDropped: keysIdleAfter after a registered UE's last
// authenticated packet, the housekeeper drops what its SA set's keys
// prepared (esp's Idle); a packet from the UE before then puts the look
// off. Afterwards SIP and ICMP still flow both ways through the same SAs,
// which prepare their keys again.
func TestIdleUEKeysDropped(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	r := newRig(t, func(cfg *ServerConfig) { cfg.Now = c.Now })
	alice := newSub(t, r.store, "alice", "a.example")
	u := r.ue(alice, nil)
	ctx := ctxT(t)
	if err := u.Register(ctx); err != nil {
		t.Fatal(err)
	}
	sa := func() *esp.Inbound {
		r.srv.mu.Lock()
		defer r.srv.mu.Unlock()
		reg := r.srv.regs[alice.impi]
		if reg == nil || len(reg.sas.sets) != 1 {
			t.Fatal("no registration with one SA set")
		}
		return reg.sas.sets[0].side.Inbound[0]
	}
	in := sa()
	if !in.Prepared() {
		t.Fatal("the set's keys are not prepared after the protected REGISTER")
	}
	c.Add(20 * time.Second)
	if _, err := u.Ping(ctx, 1); err != nil { // authenticated ESP from the UE at 20 s
		t.Fatal(err)
	}
	c.Add(11 * time.Second)
	r.srv.Housekeep()
	if !in.Prepared() {
		t.Fatal("keys dropped 11 s after the UE's last packet")
	}
	c.Add(20 * time.Second)
	r.srv.Housekeep()
	if in.Prepared() {
		t.Fatalf("keys kept %v after the UE's last packet", 31*time.Second)
	}
	if res, err := r.srv.Options(ctx, alice.impi); err != nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS after the keys went idle: %v %v", res, err)
	}
	if _, err := u.Ping(ctx, 2); err != nil {
		t.Fatalf("ping after the keys went idle: %v", err)
	}
	if sa() != in || !in.Prepared() {
		t.Fatal("traffic after idle did not prepare the same SAs' keys again")
	}
}
