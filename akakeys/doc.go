// Package akakeys is the arithmetic of 3GPP AKA for IMS: Milenage f1..f5*
// (TS 35.206), authentication vectors and SQN management (TS 33.102 §6.3 and
// Annex C), the USIM side with its freshness checks and AUTS, the RFC 3310
// AKAv1-MD5 digest, and the TS 33.203 derivation of ESP keys from CK and IK.
//
// It is a leaf package: no I/O, no SIP, no files. The HSS that stores
// subscribers and issues vectors is the sub-package hss.
//
// # Pieces
//
// Milenage (milenage.go) is keyed with K and OPc and computes f1 and f1*
// (MAC-A, MAC-S), f2..f5 (RES, CK, IK, AK) and f5* (AK*). It is checked
// against every test set of TS 35.208 §4.3.
//
// A network builds a Vector (RAND, XRES, CK, IK, AUTN) for a SQN chosen by
// SQNScheme: SQN = SEQ || IND, each new vector taking SEQ+1 and the next IND
// (Annex C.1). On a synchronisation failure the network recovers SQN_MS from
// AUTS with VerifyAUTS and carries on from SQNScheme.AfterResync.
//
// The USIM (usim.go) verifies MAC-A in constant time, then checks freshness
// with the array of Annex C.2: SEQ must be above SEQ_MS of its IND slot, at
// most Δ above the highest SEQ accepted, and, if the optional ageing limit L
// is set, at most L below it. A stale SQN yields a *SyncFailureError carrying
// AUTS. Its state (the SEQ_MS array) can be saved and restored.
//
// The digest (digest.go) carries RAND || AUTN base64-encoded in the nonce
// (RFC 3310 §3.2) and uses RES as the RFC 2617 password, as raw octets. The
// same code computes the response on the UE and verifies it on the
// registrar, in constant time. On a synchronisation failure the UE sends the
// auts parameter with a response computed with an empty password (RFC 3310
// §3.4); such credentials never pass Verify, since what authenticates a
// re-synchronisation is MAC-S inside AUTS. The header parser is ours because
// general SIP digest code knows neither AKAv1-MD5 nor the auts and
// integrity-protected parameters (TS 24.229).
//
// ESP keys (espkeys.go) follow TS 33.203 Annex I: IK for hmac-md5-96,
// IK || 32 zero bits for hmac-sha-1-96, CK for aes-cbc, CK1 || CK2 || CK1 for
// des-ede3-cbc (interop only).
//
// # Errors
//
// Attacker-controlled input (AUTN, AUTS, headers, nonces) gets preallocated
// sentinel errors (ErrMACFailure, ErrAUTSMAC, ErrHeaderSyntax, ...); the one
// rich error, *SyncFailureError, carries the AUTS the UE must send back.
// Caller mistakes (an unknown algorithm name, a bad IND length) get
// descriptive errors.
package akakeys
