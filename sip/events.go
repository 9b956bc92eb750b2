package sip

import (
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"
)

// Event is one step of a registration or a call as docs/architecture.md's Figures 2
// and 3 draw it: a message between two parties, or something one party
// did. Kind is what programs (and tests) look at; What and Detail are the
// words a person reads on the ladder.
type Event struct {
	Kind     EventKind
	Time     time.Time
	From, To string // parties, e.g. "UE alice", "P-CSCF a.example", "HSS"; To is "" for an action
	What     string // the message or action, e.g. "REGISTER (unprotected)"
	Detail   string // one line of detail, may be ""
	// Addr is the remote address of a message received or sent, when the
	// step has one (the source of a REGISTER, the far end of an OPTIONS).
	Addr netip.AddrPort
	// Transport is "UDP" or "TCP" for a message, when known.
	Transport string
	// NAT is set on a received unprotected REGISTER whose Via differs from
	// its source address (TS 24.229 Annex F).
	NAT bool
}

// EventKind says what an Event is.
type EventKind uint8

// Event kinds. The P-CSCF's refusals each have their own kind, so that a
// test or a monitor can tell a bid-down from a wrong RES.
const (
	EvUnknown EventKind = iota

	// Registration, P-CSCF side.
	EvRegisterReceived   // a REGISTER arrived (unprotected, or protected: see Detail and Addr)
	EvHSSVector          // a vector requested from / delivered by the HSS (MAR/MAA)
	EvHSSResync          // resynchronisation asked of the HSS (auts)
	EvHSSResynced        // the HSS accepted AUTS and issued a fresh vector
	EvChallenge          // 401 with the AKA challenge (and Security-Server)
	EvSATemporary        // temporary SA set installed
	EvAuthenticated      // RES == XRES through the new set
	EvMediaSAs           // a media SA pair installed
	EvRegistered         // 200 OK to a registration
	EvDeregistered       // 200 OK to a de-registration; SAs deleted
	EvSATemporaryExpired // a temporary set saw no protected REGISTER in time
	EvSAOldDeleted       // an old set was deleted after its successor took over
	EvRegistrationExpired
	EvDHCPLease   // an inner address leased through the tunnel
	EvOptionsSent // the P-CSCF's OPTIONS to a UE

	// Refusals (the P-CSCF's answer is in What).
	EvBadRequest       // 400: a malformed REGISTER
	EvUnknownIdentity  // 403: the IMPU/IMPI is not the HSS's
	EvIPsecRequired    // 421: no Security-Client and IPsec required
	EvNoCommonSecurity // 494: no acceptable sec-agree offer
	EvWrongResponse    // 403: RES != XRES, or a digest for another realm/user/URI
	EvVerifyMismatch   // 403: Security-Verify differs from the Security-Server sent (bid-down)
	EvWrongSA          // 403: an answer or request through the wrong SA set or port
	EvStaleNonce       // 403: auts or an answer for a nonce never issued
	EvHSSError         // 403: the HSS refused or failed
	EvOverload         // 503: a limit was reached
	EvIdentityMismatch // 403: the REGISTER's IMPU is not one of its IMPI's
	EvIdentityAsserted // a UE's From or P-Preferred-Identity was outside its registered set

	// The proxy role (ServerConfig.SCSCF).
	EvForwarded  // a REGISTER forwarded to the S-CSCF
	EvSCSCFError // the S-CSCF did not answer, or answered with a failure (relayed)

	// UE side.
	EvRegisterSent   // a REGISTER left (unprotected, protected, re-registration, de-registration)
	EvUSIM           // the USIM checked AUTN and computed RES, CK, IK (or refused)
	EvSAsInstalled   // the UE installed a new SA set
	EvDHCP           // DHCPDISCOVER through the tunnel
	EvInnerAddress   // the UE learnt its inner address
	EvPing           // an ICMP echo through a tunnel was answered
	EvUnexpected     // a response the UE did not expect
	EvRetry          // a registration failed and will be retried
	EvStartOver      // a re-registration failed: starting from an unprotected REGISTER
	EvMediaUnconfirm // the media tunnel did not answer its pinhole ping
	EvOptionsAnswered

	// Calls, either side.
	EvInvite      // an INVITE sent or received
	EvProvisional // a 1xx to an INVITE (180 Ringing)
	EvCallUp      // 200 OK and ACK: media flows
	EvCallFailed  // a final non-2xx answer, timeout or cancel
	EvBye         // the call ended
)

var eventKindNames = [...]string{
	EvUnknown: "unknown", EvRegisterReceived: "register-received", EvHSSVector: "hss-vector",
	EvHSSResync: "hss-resync", EvHSSResynced: "hss-resynced", EvChallenge: "challenge",
	EvSATemporary: "sa-temporary", EvAuthenticated: "authenticated", EvMediaSAs: "media-sas",
	EvRegistered: "registered", EvDeregistered: "deregistered", EvSATemporaryExpired: "sa-temporary-expired",
	EvSAOldDeleted: "sa-old-deleted", EvRegistrationExpired: "registration-expired", EvDHCPLease: "dhcp-lease",
	EvOptionsSent: "options-sent", EvBadRequest: "bad-request", EvUnknownIdentity: "unknown-identity",
	EvIPsecRequired: "ipsec-required", EvNoCommonSecurity: "no-common-security", EvWrongResponse: "wrong-response",
	EvVerifyMismatch: "verify-mismatch", EvWrongSA: "wrong-sa", EvStaleNonce: "stale-nonce", EvHSSError: "hss-error",
	EvOverload: "overload", EvIdentityMismatch: "identity-mismatch", EvIdentityAsserted: "identity-asserted", EvForwarded: "forwarded", EvSCSCFError: "scscf-error", EvRegisterSent: "register-sent", EvUSIM: "usim", EvSAsInstalled: "sas-installed",
	EvDHCP: "dhcp", EvInnerAddress: "inner-address", EvPing: "ping", EvUnexpected: "unexpected", EvRetry: "retry",
	EvStartOver: "start-over", EvMediaUnconfirm: "media-unconfirmed", EvOptionsAnswered: "options-answered",
	EvInvite: "invite", EvProvisional: "provisional", EvCallUp: "call-up", EvCallFailed: "call-failed", EvBye: "bye",
}

func (k EventKind) String() string {
	if int(k) < len(eventKindNames) && eventKindNames[k] != "" {
		return eventKindNames[k]
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// EventFunc receives events; it must not block for long. It is never
// called with a lock of the Server or UE held, so it may call their
// methods (Registrations, Info).
type EventFunc func(Event)

// LadderPrinter returns an EventFunc that prints one line per event to w,
// in the order they arrive (safe for concurrent use).
func LadderPrinter(w io.Writer) EventFunc {
	var mu sync.Mutex
	return func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		arrow := e.From
		if e.To != "" {
			arrow = fmt.Sprintf("%s -> %s", e.From, e.To)
		}
		if e.Detail != "" {
			fmt.Fprintf(w, "%-34s %s  [%s]\n", arrow, e.What, e.Detail)
		} else {
			fmt.Fprintf(w, "%-34s %s\n", arrow, e.What)
		}
	}
}
