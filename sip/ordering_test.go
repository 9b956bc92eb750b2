package sip

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/goleak"
)

// TestOrderingProvisionalBeforeFinal: a UAS that sends 180 and 200 back to
// back (no delay) over loopback UDP; the UAC's INVITE client transaction
// must pass the 180 up before the 200, every time. Upstream sipgo v1.7.3
// handled each response in its own goroutine, so the 200 could overtake the
// 180 and the Accepted transaction dropped it (third_party/sipgo/IMSEC.md).
func TestOrderingProvisionalBeforeFinal(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// UAS: answers every INVITE with 180 then 200 at once.
	uasUA, err := newUA("ordering-uas", log, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer uasUA.Close()
	uas, err := sipgo.NewServer(uasUA, sipgo.WithServerLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	uas.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := tx.Respond(sip.NewResponseFromRequest(req, sip.StatusRinging, "Ringing", nil)); err != nil {
			t.Errorf("180: %v", err)
			return
		}
		if err := tx.Respond(sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)); err != nil {
			t.Errorf("200: %v", err)
		}
	})
	uas.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	uasPC, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uasPC.Close()
	uasAddr := uasPC.LocalAddr().(*net.UDPAddr)

	// UAC: sends from, and reads responses on, its own listening socket.
	uacUA, err := newUA("ordering-uac", log, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer uacUA.Close()
	uacSrv, err := sipgo.NewServer(uacUA, sipgo.WithServerLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	uacPC, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer uacPC.Close()

	served := make(chan struct{}, 2)
	go func() { uas.ServeUDP(uasPC); served <- struct{}{} }()
	go func() { uacSrv.ServeUDP(uacPC); served <- struct{}{} }()
	defer func() { uasPC.Close(); uacPC.Close(); <-served; <-served }()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := waitPool(ctx, uasUA, "udp", uasPC.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	if err := waitPool(ctx, uacUA, "udp", uacPC.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(uacUA, sipgo.WithClientLogger(log),
		sipgo.WithClientConnectionAddr(uacPC.LocalAddr().String()))
	if err != nil {
		t.Fatal(err)
	}

	const iterations = 200
	bad := 0
	for i := range iterations {
		req := sip.NewRequest(sip.INVITE, sip.Uri{User: "bob", Host: "127.0.0.1", Port: uasAddr.Port})
		tx, err := cli.TransactionRequest(context.Background(), req)
		if err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		var got []int
		var final *sip.Response
		timeout := time.After(5 * time.Second)
		for final == nil {
			select {
			case res := <-tx.Responses():
				got = append(got, res.StatusCode)
				if !res.IsProvisional() {
					final = res
				}
			case <-tx.Done():
				t.Fatalf("iteration %d: transaction ended (%v) after %v", i, tx.Err(), got)
			case <-timeout:
				t.Fatalf("iteration %d: no final response, got %v", i, got)
			}
		}
		if err := cli.WriteRequest(ackFor(req, final)); err != nil {
			t.Fatalf("iteration %d: ACK: %v", i, err)
		}
		tx.Terminate()
		if len(got) != 2 || got[0] != sip.StatusRinging || got[1] != sip.StatusOK {
			bad++
			if bad <= 3 {
				t.Logf("iteration %d: responses passed up %v, want [180 200]", i, got)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d INVITEs did not see the 180 before the 200", bad, iterations)
	}
}
