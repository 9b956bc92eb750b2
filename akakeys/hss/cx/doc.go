// Package cx is the HSS on Diameter Cx (TS 29.228 procedures, TS 29.229
// protocol): a [Server] that answers an I-/S-CSCF from an [hss.HSS], and a
// [Client] that gives a registrar the same Vector/Resync/LookupIMPU/IMPUs
// method set over the wire. It is built on github.com/fiorix/go-diameter/v4:
// its dictionary decodes and encodes the messages (the Cx application,
// Auth-Application-Id 16777216, vendor 10415, is loaded into dict.Default
// at init from cx.xml, TS 29.229 §6.1 and §6.3) and its sm package answers
// CER/CEA and DWR/DWA (RFC 6733 §5.3, §5.5).
//
// # Server
//
// The server owns its goroutines: one per connection reading framed
// messages (RFC 6733 §3; garbage closes the connection), and one per Cx
// request in progress (at most 32 per connection), all joined by Serve
// before it returns. Requests are answered per TS 29.229 §6.2: Cx errors
// (DIAMETER_ERROR_USER_UNKNOWN 5001, _IDENTITIES_DONT_MATCH 5002,
// _IDENTITY_NOT_REGISTERED 5003, _AUTH_SCHEME_NOT_SUPPORTED 5006) and the
// registration results (DIAMETER_FIRST_REGISTRATION 2001,
// _SUBSEQUENT_REGISTRATION 2002, _UNREGISTERED_SERVICE 2003) in
// Experimental-Result, base errors (DIAMETER_MISSING_AVP 5005,
// _INVALID_AVP_VALUE 5004 with Failed-AVP, _INVALID_AVP_LENGTH 5014,
// _COMMAND_UNSUPPORTED 3001, _UNABLE_TO_COMPLY 5012) in Result-Code. Each
// disposition is counted ([Server.Counters]), none is logged per message.
// Unknown non-mandatory AVPs (Kamailio's vendor-50 AVP 494 in SAR) are
// ignored.
//
// MAR (§6.1.7): SIP-Number-Auth-Items vectors, at most [MaxAuthItems], each
// a SIP-Auth-Data-Item with scheme Digest-AKAv1-MD5, SIP-Authenticate =
// RAND||AUTN, SIP-Authorization = XRES, Confidentiality-Key, Integrity-Key.
// The scheme names "Digest-AKAv1-MD5", Kamailio's default "unknown", or
// none are accepted. A SIP-Authorization of RAND||AUTS (30 bytes) asks for
// re-synchronisation first ([hss.HSS.Resync]); a forged AUTS is answered
// DIAMETER_AUTHENTICATION_REJECTED 4001.
//
// SAR (§6.1.3) records the S-CSCF for every IMPU of the subscriber (imsec
// has one implicit registration set per subscriber) and returns User-Data,
// the TS 29.228 Annex E IMSSubscription XML ([MarshalUserData]). The
// registration state is in memory only, not durable: after a restart the
// HSS knows no S-CSCF until the next SAR (a re-registration) names it.
// UAR (§6.1.1) and LIR (§6.1.5) report it.
package cx
