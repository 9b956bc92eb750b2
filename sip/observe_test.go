package sip

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestSIPCounters: requests by method (unknown ones as other), responses
// by the CSeq's method and code (codes outside 100..699 as 0), received
// and sent apart.
func TestSIPCounters(t *testing.T) {
	var c sipCounters
	req := func(m string) *sip.Request {
		r := sip.NewRequest(sip.RequestMethod(m), sip.Uri{Host: "a.example"})
		r.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.RequestMethod(m)})
		return r
	}
	for _, m := range []string{"REGISTER", "REGISTER", "INVITE", "FROBNICATE", "register"} {
		c.received(req(m))
	}
	c.received(sip.NewResponseFromRequest(req("REGISTER"), 401, "Unauthorized", nil))
	c.received(sip.NewResponseFromRequest(req("INVITE"), 180, "Ringing", nil))
	c.received(sip.NewResponseFromRequest(req("INVITE"), 999, "Odd", nil))
	c.sent(sip.NewResponseFromRequest(req("REGISTER"), 401, "Unauthorized", nil))
	c.sent(sip.NewResponseFromRequest(req("REGISTER"), 401, "Unauthorized", nil))
	c.sent(sip.NewResponseFromRequest(req("BREW"), 405, "Method Not Allowed", nil))
	s := c.snapshot()
	wantReq := map[string]uint64{"REGISTER": 2, "INVITE": 1, "other": 2}
	if len(s.RequestsReceived) != len(wantReq) {
		t.Errorf("requests %v, want %v", s.RequestsReceived, wantReq)
	}
	for m, n := range wantReq {
		if s.RequestsReceived[m] != n {
			t.Errorf("requests %v, want %v", s.RequestsReceived, wantReq)
		}
	}
	wantIn := map[SIPResponse]uint64{{"REGISTER", 401}: 1, {"INVITE", 180}: 1, {"INVITE", 0}: 1}
	wantOut := map[SIPResponse]uint64{{"REGISTER", 401}: 2, {"other", 405}: 1}
	for _, x := range []struct {
		got, want map[SIPResponse]uint64
	}{{s.ResponsesReceived, wantIn}, {s.ResponsesSent, wantOut}} {
		if len(x.got) != len(x.want) {
			t.Errorf("responses %v, want %v", x.got, x.want)
		}
		for k, n := range x.want {
			if x.got[k] != n {
				t.Errorf("responses %v, want %v", x.got, x.want)
			}
		}
	}
}

// BenchmarkSIPCounters is the cost each SIP message pays for the metrics:
// a request by method, a response by method and code.
func BenchmarkSIPCounters(b *testing.B) {
	var c sipCounters
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: "a.example"})
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.REGISTER})
	res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.received(req)
			c.sent(res)
		}
	})
}
