// Package sip will hold the IMS signalling: RFC 3329 sec-agree headers as
// TS 33.203 uses them, the registrar (P-CSCF role) and the UE on sipgo, and
// the SA lifecycle. Not written yet: see the project's open issue on SIP.
package sip
