package sip

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/imsec/imsec/akakeys/hss"
	"github.com/imsec/imsec/tun/nat"
)

// twoDomains is server A and server B, peered, with alice (behind a NAT)
// at A and bob at B, both registered.
type twoDomains struct {
	a, b       *rig
	alice, bob *UE
	bobEnded   chan CallReport
}

func newTwoDomains(t *testing.T, bobMode AnswerMode, mod func(*ServerConfig)) *twoDomains {
	t.Helper()
	td := &twoDomains{bobEnded: make(chan CallReport, 4)}
	lo := netip.MustParseAddr("127.0.0.1")
	td.a = newRig(t, func(c *ServerConfig) { c.Domain = "a.example"; mod2(c, mod) })
	td.b = newRig(t, func(c *ServerConfig) { c.Domain = "b.example"; mod2(c, mod) })
	td.a.srv.SetPeer("b.example", td.b.srv.SIPAddr())
	td.b.srv.SetPeer("a.example", td.a.srv.SIPAddr())
	sa := newSub(t, td.a.store, "alice", "a.example")
	sb := newSub(t, td.b.store, "bob", "b.example")
	n, err := nat.New(nat.Config{Outside: lo, Filtering: nat.AddressPortDependent, Forwards: []nat.Forward{
		{Inside: netip.AddrPortFrom(lo, 0), Destination: td.a.srv.SIPAddr()},
		{Inside: netip.AddrPortFrom(lo, 0), Destination: td.a.srv.ESPAddr()},
		{Inside: netip.AddrPortFrom(lo, 0), Destination: td.a.srv.MediaESPAddr()}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	in := n.InsideAddrs()
	td.alice = td.a.ue(sa, func(c *UEConfig) { c.PCSCF, c.PCSCFESP, c.PCSCFMediaESP = in[0], in[1], in[2] })
	td.bob = td.b.ue(sb, func(c *UEConfig) {
		c.Answer = bobMode
		c.OnCallEnd = func(r CallReport) { td.bobEnded <- r }
	})
	ctx := ctxT(t)
	for _, u := range []*UE{td.alice, td.bob} {
		if err := u.Register(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return td
}

func mod2(c *ServerConfig, mod func(*ServerConfig)) {
	if c.Peers == nil {
		c.Peers = map[string]netip.AddrPort{}
	}
	if mod != nil {
		mod(c)
	}
}

var _ = hss.NewMemStore

func TestCallAcrossDomainsWithMedia(t *testing.T) {
	td := newTwoDomains(t, AnswerAuto, nil)
	ctx := ctxT(t)
	rep, err := td.alice.Call(ctx, "sip:bob@b.example", 1500*time.Millisecond, MediaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alice:\n%s", rep)
	var bobRep CallReport
	select {
	case bobRep = <-td.bobEnded:
	case <-time.After(5 * time.Second):
		t.Fatal("bob never saw the BYE")
	}
	t.Logf("bob:\n%s", bobRep)
	for name, r := range map[string]CallReport{"alice": *rep, "bob": bobRep} {
		if len(r.Received.Streams) != 2 {
			t.Fatalf("%s received %d streams, want audio and video", name, len(r.Received.Streams))
		}
		for _, s := range r.Received.Streams {
			if s.Packets < 20 || s.LossPercent > 5 {
				t.Errorf("%s %s stream: %d packets, %.1f%% loss", name, s.Kind, s.Packets, s.LossPercent)
			}
		}
		if r.Sent.Audio.Packets < 50 || r.Sent.Video.Frames < 25 {
			t.Errorf("%s sent %+v", name, r.Sent)
		}
	}
	// Every relay closed; the media crossed the media tunnels, not the
	// signalling ones.
	waitFor(t, func() bool { return td.a.srv.relay.Len() == 0 && td.b.srv.relay.Len() == 0 })
	if p := td.alice.Info().MediaSAs; len(p) != 2 || p[0].Packets+p[1].Packets < 100 {
		t.Fatalf("alice's media SAs carried too little: %+v", p)
	}
}

func TestCallBusyAndUnknown(t *testing.T) {
	td := newTwoDomains(t, AnswerBusy, nil)
	ctx := ctxT(t)
	_, err := td.alice.Call(ctx, "sip:bob@b.example", time.Second, MediaConfig{})
	var cf *ErrCallFailed
	if !errors.As(err, &cf) || cf.Code != 486 {
		t.Fatalf("busy callee: %v", err)
	}
	_, err = td.alice.Call(ctx, "sip:carol@b.example", time.Second, MediaConfig{})
	if !errors.As(err, &cf) || cf.Code != 480 {
		t.Fatalf("unregistered callee: %v", err)
	}
	_, err = td.alice.Call(ctx, "sip:dave@c.example", time.Second, MediaConfig{})
	if !errors.As(err, &cf) || cf.Code != 404 {
		t.Fatalf("unknown domain: %v", err)
	}
	waitFor(t, func() bool { return td.a.srv.relay.Len() == 0 && td.b.srv.relay.Len() == 0 })
}

func TestCallCancelAndTimeout(t *testing.T) {
	td := newTwoDomains(t, AnswerIgnore, func(c *ServerConfig) { c.CallTimeout = 1500 * time.Millisecond })
	// The caller gives up while it rings: CANCEL all the way.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := td.alice.Call(ctx, "sip:bob@b.example", time.Second, MediaConfig{})
	var cf *ErrCallFailed
	if !errors.As(err, &cf) || cf.Code != 487 {
		t.Fatalf("cancelled call: %v", err)
	}
	// Nobody answers: the P-CSCF times the call out with 408.
	_, err = td.alice.Call(ctxT(t), "sip:bob@b.example", time.Second, MediaConfig{})
	if !errors.As(err, &cf) || cf.Code != 408 {
		t.Fatalf("unanswered call: %v", err)
	}
	waitFor(t, func() bool { return td.a.srv.relay.Len() == 0 && td.b.srv.relay.Len() == 0 })
}

// TestCallWithoutRinging: a 1xx may be lost (RFC 3261 §17.1.1: provisional
// responses are not reliable); a callee whose 180 never arrives is still
// reached, and the caller's call comes up on the 200 alone.
func TestCallWithoutRinging(t *testing.T) {
	td := newTwoDomains(t, AnswerAuto, nil)
	td.bob.hookNoRinging = true
	// An audio-only caller, while bob would send video too: bob's answer
	// declines the video it was not offered (RFC 3264 §6).
	rep, err := td.alice.Call(ctxT(t), "sip:bob@b.example", 500*time.Millisecond, MediaConfig{NoVideo: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent.Audio.Packets == 0 {
		t.Fatalf("no media sent: %+v", rep)
	}
	if td.a.lad.has(EvProvisional) || td.b.lad.has(EvProvisional) {
		t.Fatal("a 1xx was relayed though bob sent none")
	}
}
