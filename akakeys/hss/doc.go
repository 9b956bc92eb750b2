// Package hss is the home subscriber server of imsec: it stores subscribers
// (IMPI, IMPUs, K, OP/OPc, AMF, SQN), issues AKA authentication vectors
// (TS 33.102 §6.3.2) with a durable sequence number, and handles
// re-synchronisation (TS 33.102 §6.3.5, Annex C.3.4), which is what a
// registrar (S-CSCF) obtains from an HSS over Cx with a
// Multimedia-Auth-Request (TS 29.228/29.229).
//
// # Layers
//
// [Store] is persistence only: subscribers, IMPU ownership, and one atomic
// read-modify-write of the SQN state ([Store.UpdateSQN]). [SQLiteStore] keeps
// them in a local SQLite file; [MemStore] keeps them in memory for tests;
// package [github.com/imsec/imsec/akakeys/hss/pgstore] keeps them in
// PostgreSQL, shared by HSS processes on several hosts. Package
// [github.com/imsec/imsec/akakeys/hss/storetest] is the contract all three
// pass. [HSS] is
// the logic on top: which SQN comes next (Annex C), the AUTS check, and the
// vector computation. A registrar needs only the method set
// Vector/Resync/LookupIMPU of [HSS]; a client of a real HSS over Diameter Cx
// can provide the same methods, so the registrar should depend on a small
// interface of its own with those methods rather than on *HSS.
//
// # The SQN is durable before a vector leaves
//
// A vector whose SQN was already used is rejected by the USIM at best, and at
// worst lets an attacker who recorded the earlier challenge replay it. So the
// HSS never hands out a vector whose SQN is not already stored: [HSS.Vector]
// reserves the next SQN with [Store.UpdateSQN], which commits durably
// (SQLite: BEGIN IMMEDIATE, WAL, synchronous=FULL) before it returns, and only
// then computes the vector. A crash after the commit loses at most unused
// SQNs, which is harmless: the USIM accepts gaps. Concurrent callers, in one
// process or in several processes sharing the database file, serialise on
// the store's write lock, so no two vectors carry the same SQN.
//
// # Re-synchronisation
//
// When the USIM finds the SQN of a challenge not fresh it answers with AUTS =
// (SQN_MS xor AK*) || MAC-S. [HSS.Resync] checks MAC-S first (a forged AUTS
// changes nothing) and then decides, as TS 33.102 §6.3.5 steps 2 to 5
// describe: if the HSS is already ahead of the USIM (SEQ_HE >= SEQ_MS), the
// next SQN the HSS would issue is fresh for the USIM and the counter is left
// where it is; the failure came from an old vector (reused or delivered out
// of order), not from a counter that is behind. Only when SEQ_MS > SEQ_HE is
// the counter moved forward, and the next vector takes
// [akakeys.SQNScheme.AfterResync](SQN_MS). The counter therefore never moves
// backwards: moving it back to SQN_MS while vectors above SQN_MS are already
// out would issue some SQN a second time. (The one case this cannot repair —
// a USIM that refuses SQN_HE because it is too far ahead, beyond the optional
// Annex C limit Δ — needs 2^28 unused vectors with the usual Δ and is not
// a practical concern.) Every verified resync is counted with its time, for
// the operator (`imsec sub list`).
//
// # Secrets
//
// K, OP and OPc never appear in a log line, an error or the output of fmt:
// [Subscriber] formats, logs and marshals to JSON with key fingerprints only
// (see [Fingerprint]).
package hss
