package demo

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imsec/imsec/sip"
)

// TestDemo runs the whole demonstrator in-process and checks its summary
// and ladder (the README's main job, as a test).
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, kl bytes.Buffer
	var diagram sip.SequenceDiagram
	var log eventLog
	// One lock over both records: events come from several goroutines
	// (the two UEs' "call up" at once), and the log and the diagram must
	// see them in the same order.
	var recordMu sync.Mutex
	sum, err := Run(ctx, Config{Out: &out, KeyLog: &lockedWriter{w: &kl}, Events: func(e sip.Event) {
		recordMu.Lock()
		defer recordMu.Unlock()
		log.add(e)
		diagram.Event(e)
	}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	// The Mermaid diagram (imsec demo --mermaid) has every event of the run.
	var mm strings.Builder
	if _, err := diagram.WriteTo(&mm); err != nil {
		t.Fatal(err)
	}
	if len(log.events) < 50 {
		t.Fatalf("only %d events", len(log.events))
	}
	checkMermaid(t, mm.String(), log.events)
	if len(sum.UEs) != 2 || len(sum.Servers) != 2 {
		t.Fatalf("summary %+v", sum)
	}
	for _, u := range sum.UEs {
		purposes := map[string]int{}
		for _, sa := range u.SAs {
			purposes[sa.Purpose]++
		}
		if u.InnerAddr == "" || u.InnerAddr == "invalid IP" || purposes["signalling"] != 4 || purposes["media"] != 2 || u.EAlg != "aes-cbc" || u.Media == nil {
			t.Errorf("UE summary %+v", u)
		}
	}
	if sum.Call == nil || len(sum.Call.Caller.Received.Streams) != 2 || len(sum.Call.Callee.Received.Streams) != 2 {
		t.Fatalf("call summary %+v", sum.Call)
	}
	for _, st := range append(sum.Call.Caller.Received.Streams, sum.Call.Callee.Received.Streams...) {
		if st.Packets < 50 || st.LossPercent > 5 {
			t.Errorf("media stream %+v", st)
		}
	}
	if !sum.UEs[0].BehindNAT || sum.UEs[1].BehindNAT || sum.NAT.MappingsCreated == 0 {
		t.Errorf("NAT placement wrong: %+v %+v", sum.UEs, sum.NAT)
	}
	for _, want := range []string{"NAT detected", "401 Unauthorized", "DHCPACK", "RES == XRES", "media SAs installed",
		"UE alice@a.example                 180 Ringing", // the 180 reached the caller
		"call up", "BYE", "old SAs deleted", "de-registered", "every step passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// 3 registrations (A, B, A again) x (4 signalling + 2 media SAs) x 2 ends.
	if n := strings.Count(kl.String(), "\n"); n != 36 {
		t.Errorf("key log has %d lines, want 36", n)
	}
}

// TestDemoIPv6 runs the demonstrator with --ipv6: IPv6 outside (loopback
// ::1, the NAT included) and inside the tunnels (DHCPv6 leases from each
// P-CSCF's IPv6 pool, SIP and media over them).
func TestDemoIPv6(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 loopback on this host: %v", err)
	} else {
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, kl bytes.Buffer
	sum, err := Run(ctx, Config{Out: &out, KeyLog: &lockedWriter{w: &kl}, IPv6: true, CallDuration: 2 * time.Second})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for i, u := range sum.UEs {
		a, err := netip.ParseAddr(u.InnerAddr)
		want := netip.MustParsePrefix([]string{"2001:db8:a::/64", "2001:db8:b::/64"}[i])
		if err != nil || !want.Contains(a) || !strings.HasPrefix(u.PCSCFInner, want.Addr().String()) || u.Media == nil {
			t.Errorf("UE summary %+v: want an inner address in %v", u, want)
		}
	}
	for _, s := range sum.Servers {
		for _, a := range []string{s.SIP, s.ESPSignalling, s.ESPMedia} {
			if !strings.HasPrefix(a, "[::1]:") {
				t.Errorf("server %s bound %s, want [::1]", s.Domain, a)
			}
		}
	}
	if !strings.HasPrefix(sum.NAT.Outside, "::1") || sum.NAT.MappingsCreated == 0 {
		t.Errorf("NAT %+v", sum.NAT)
	}
	if sum.Call == nil || len(sum.Call.Caller.Received.Streams) != 2 || len(sum.Call.Callee.Received.Streams) != 2 {
		t.Fatalf("call summary %+v", sum.Call)
	}
	for _, want := range []string{"NAT detected", "DHCPv6 REPLY", "ICMPv6 echo", "RES == XRES", "call up", "every step passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "DHCPACK") {
		t.Error("an IPv4 lease in an IPv6-only demo")
	}
	for _, l := range strings.Split(strings.TrimSpace(kl.String()), "\n") {
		if !strings.HasPrefix(l, `"IPv6",`) {
			t.Fatalf("key log line %q", l)
		}
	}
}
