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
// HSS never hands out a vector whose SQN is not already covered by the store:
// [HSS.Vector] issues SQNs from a range it reserved with one
// [Store.UpdateSQN], which stores the top of the range and commits durably
// (SQLite: BEGIN IMMEDIATE, WAL, synchronous=FULL) before it returns. The
// range is Config.Reserve steps of Annex C (SEQ+1, IND+1 each; 64 by
// default, [DefaultReserve]); the HSS issues them from memory and reserves
// the next range when it is used up. A crash loses at most the unissued rest
// of each range, which is harmless: the USIM accepts gaps up to Δ = 2^28
// (Annex C.2.1), and the next process starts above the stored top, so no SQN
// is ever issued twice. Several HSS values or processes sharing the store
// each issue from ranges of their own. (A UE served alternately by two
// processes may see SQNs of one range below those of the other already
// used in the same IND slot, and answer with AUTS once; the resync moves the
// HSS above both. One process per UE, or Reserve 1, avoids it.)
//
// A subscriber's range stays in use while the store's identity generation
// ([Generational]) is unchanged; when it moves, the subscriber's row is read
// again, and a re-provisioned subscriber (other keys, or an SQN set by the
// operator) or a range taken by another process since voids the range.
// With a Generational store the HSS also answers [HSS.LookupIMPU] and
// [HSS.IMPUs] from memory while the generation holds.
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
