package sip

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// A minimal dialog layer for the calls: our end of one SIP dialog, enough
// to send ACK for a 2xx, BYE, and CANCEL on the routes we use (direct, no
// Record-Route: each P-CSCF is a back-to-back user agent, as the design's (docs/architecture.md)
// P-CSCF in its "hiding role" is, so every dialog has two hops at most).
type dialogEnd struct {
	mu        sync.Mutex
	callID    string
	local     sip.Uri // our URI (From when we are the UAC)
	localTag  string
	remote    sip.Uri
	remoteTag string
	target    sip.Uri // the remote Contact: Request-URI of in-dialog requests
	// routes is the dialog's route set (RFC 3261 §12.1): the Record-Route
	// of the request or response that made it, in the order our requests
	// carry them as Route. Empty between two P-CSCFs; an S-CSCF in the
	// path (the proxy role) records itself.
	routes []sip.Uri
	cseq   uint32
	path   requester // how in-dialog requests (BYE, ACK) reach the remote end
}

func newTag() string {
	b := make([]byte, 6)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func newCallID(host string) string {
	b := make([]byte, 10)
	rand.Read(b)
	return fmt.Sprintf("%x@%s", b, host)
}

// request builds an in-dialog request with the next CSeq (ACK and CANCEL
// take the INVITE's: pass cseq).
func (d *dialogEnd) request(method sip.RequestMethod, cseq uint32) *sip.Request {
	d.mu.Lock()
	if cseq == 0 {
		d.cseq++
		cseq = d.cseq
	}
	target, routes := d.target, d.routes
	d.mu.Unlock()
	req := sip.NewRequest(method, target)
	for _, r := range routes {
		req.AppendHeader(&sip.RouteHeader{Address: r})
	}
	from := &sip.FromHeader{Address: d.local}
	from.Params.Add("tag", d.localTag)
	to := &sip.ToHeader{Address: d.remote}
	if d.remoteTag != "" {
		to.Params.Add("tag", d.remoteTag)
	}
	cid := sip.CallIDHeader(d.callID)
	req.AppendHeader(from)
	req.AppendHeader(to)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	return req
}

// bye ends the dialog.
func (d *dialogEnd) bye(ctx context.Context) error {
	res, err := d.path.send(ctx, d.request(sip.BYE, 0))
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 && res.StatusCode != 481 {
		return fmt.Errorf("sip: BYE answered %d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// fromResponse completes a UAC dialog from the 2xx to its INVITE.
func (d *dialogEnd) fromResponse(res *sip.Response) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if to := res.To(); to != nil {
		d.remoteTag, _ = to.Params.Get("tag")
	}
	if c := res.Contact(); c != nil {
		d.target = c.Address
	}
	d.routes = recordRoute(res.GetHeaders("Record-Route"), true)
}

// recordRoute is the route set a Record-Route list makes: as is for the
// UAS, reversed for the UAC (RFC 3261 §12.1.1, §12.1.2).
func recordRoute(hs []sip.Header, reverse bool) []sip.Uri {
	var rs []sip.Uri
	for _, h := range hs {
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			rs = append(rs, rr.Address)
		}
	}
	if reverse {
		slices.Reverse(rs)
	}
	return rs
}

// uasDialog is our end of a dialog that an incoming INVITE opened.
func uasDialog(req *sip.Request, localTag string) *dialogEnd {
	d := &dialogEnd{callID: req.CallID().Value(), localTag: localTag, local: req.To().Address, remote: req.From().Address}
	d.remoteTag, _ = req.From().Params.Get("tag")
	if c := req.Contact(); c != nil {
		d.target = c.Address
	}
	d.routes = recordRoute(req.GetHeaders("Record-Route"), false)
	d.cseq = 1 << 20 // our own CSeq space, above the UAC's
	return d
}

// ackFor builds the ACK for a 2xx to invite (RFC 3261 §13.2.2.4): a new
// transaction-less request to the Contact, with the INVITE's CSeq number.
func ackFor(invite *sip.Request, res *sip.Response) *sip.Request {
	target := invite.Recipient
	if c := res.Contact(); c != nil {
		target = c.Address
	}
	ack := sip.NewRequest(sip.ACK, target)
	for _, r := range recordRoute(res.GetHeaders("Record-Route"), true) {
		ack.AppendHeader(&sip.RouteHeader{Address: r})
	}
	ack.AppendHeader(sip.HeaderClone(invite.From()))
	ack.AppendHeader(sip.HeaderClone(res.To()))
	cid := sip.CallIDHeader(invite.CallID().Value())
	ack.AppendHeader(&cid)
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: invite.CSeq().SeqNo, MethodName: sip.ACK})
	return ack
}

// cancelFor builds the CANCEL of a pending INVITE (RFC 3261 §9.1): same
// Request-URI, Call-ID, From, To, top Via and CSeq number.
func cancelFor(invite *sip.Request) *sip.Request {
	c := sip.NewRequest(sip.CANCEL, invite.Recipient)
	c.AppendHeader(invite.Via().Clone())
	c.AppendHeader(sip.HeaderClone(invite.From()))
	c.AppendHeader(sip.HeaderClone(invite.To()))
	cid := sip.CallIDHeader(invite.CallID().Value())
	c.AppendHeader(&cid)
	c.AppendHeader(&sip.CSeqHeader{SeqNo: invite.CSeq().SeqNo, MethodName: sip.CANCEL})
	for _, h := range invite.GetHeaders("Route") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.SetDestination(invite.Destination())
	c.Laddr = invite.Laddr
	c.SetTransport(invite.Transport())
	return c
}

// ErrCallFailed is a final non-2xx answer to an INVITE.
type ErrCallFailed struct {
	Code   int
	Reason string
}

func (e *ErrCallFailed) Error() string {
	return fmt.Sprintf("sip: call failed: %d %s", e.Code, e.Reason)
}

var errNoFinal = errors.New("sip: INVITE transaction ended without a final response")

// runInvite sends a prepared INVITE and waits for its final response,
// calling onProvisional for each 1xx. When ctx ends first it sends CANCEL
// and waits (briefly) for the 487.
func runInvite(ctx context.Context, cli *sipgo.Client, req *sip.Request, onProvisional func(*sip.Response)) (*sip.Response, error) {
	tx, err := cli.TransactionRequest(context.Background(), req, noBuild)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	cancelled := false
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				if onProvisional != nil && res.StatusCode > 100 {
					onProvisional(res)
				}
				continue
			}
			return res, nil
		case <-tx.Done():
			if err := tx.Err(); err != nil {
				return nil, err
			}
			return nil, errNoFinal
		case <-ctx.Done():
			if cancelled {
				return nil, ctx.Err()
			}
			cancelled = true
			cli.WriteRequest(cancelFor(req), noBuild)
			var c2 context.CancelFunc
			ctx, c2 = context.WithTimeout(context.Background(), defaultSIPTimeout)
			defer c2()
		}
	}
}
