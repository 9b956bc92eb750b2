// Package akakeys is the arithmetic of 3GPP AKA for IMS: Milenage f1..f5*
// (TS 35.206), authentication vectors and SQN management (TS 33.102 §6.3 and
// Annex C), the USIM side with its freshness checks and AUTS, the RFC 3310
// AKAv1-MD5 digest, and the TS 33.203 derivation of ESP keys from CK and IK.
//
// It is a leaf package: no I/O, no SIP, no files. The HSS that stores
// subscribers and issues vectors is the sub-package hss.
package akakeys
