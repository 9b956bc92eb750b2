// Package sip is imsec's IMS signalling on sipgo: the P-CSCF (registrar,
// ESP gateway, B2BUA) and the UE, with SIP-AKA (RFC 3310, TS 33.203 §6.1),
// sec-agree (RFC 3329, TS 33.203 §7 and Annex H) and ESP-in-UDP SAs (RFC
// 3948) built from CK/IK. docs/architecture.md draws the flows; this
// comment says where each part lives.
//
// # Roles and files
//
// The P-CSCF is a Server (pcscf.go: config, New, Close). Its parts:
//
//   - registrar.go: REGISTER on the unprotected port and on the protected
//     port-s: the AKA challenge (the 401 and its headers), the answer's
//     checks (RES, Security-Verify, the SA it came through), the 200 OK
//     (okHeaders), re-registration and de-registration.
//   - proxy.go, proxy_register.go: the proxy role (ServerConfig.SCSCF):
//     REGISTER forwarded to a real S-CSCF, the SAs built from the CK/IK in
//     its 401, Service-Route and P-Associated-URI kept from its 200.
//   - registration.go: the per-IMPI state (pending challenges, the shared
//     vector), the housekeeper (expiry, teardown), Registrations, Stats.
//   - identity.go: public identities bound to the IMPI that authenticated,
//     and the identity asserted on a UE's requests (P-Asserted-Identity).
//   - overload.go: overload control, which refuses new registrations
//     (503, Retry-After) when the P-CSCF cannot finish them in time, over
//     UDP statelessly in the unprotected socket's read filter.
//   - limits.go: what unauthenticated requests may make the P-CSCF spend
//     (per-source token buckets, pending challenges, temporary sets per
//     source); internal/connlimit: the unprotected TCP listener's caps and
//     timeouts.
//   - salifecycle.go: the SA lifecycle that the P-CSCF and the UE share,
//     and the SPI pool. pcscf_sas.go builds the P-CSCF's sets from the UE's
//     offer; the UE's are built in ue_register.go. This is the place to
//     change rekeying.
//   - gateway.go: the ESP gateway: the netstack, the pump, DHCP and DHCPv6
//     inside the tunnels (docs/ipv6.md), the protected SIP ports (tun.Socket
//     on the pump, the netstack for fragments) and their port discipline;
//     lazysa.go: SAs that enter the pump only with their first packet.
//   - listeners.go: the unprotected UDP and TCP listeners, supervised
//     (Wait reports one that dies).
//   - b2bua.go, dialog.go: calls; sip/media: the media relay.
//   - secagree.go, negotiate.go: the Security-* headers and the choice of
//     algorithms; saset.go: the four SAs of a set; mediatunnel.go: the
//     imsec extension that gives media its own SAs.
//
// The UE is a UE (ue.go: config, NewUE, Close, Info): ue_register.go runs
// registration, re-registration and de-registration; ue_tunnel.go its
// tunnel (SAs, DHCP, pinhole ping, inner listeners); ue_call.go its calls;
// ue_run.go keeps it registered (Run).
//
// sipgo.go and sockets.go hold the glue between sipgo and our sockets
// (docs/sipgo.md lists what needs care and why). observe.go is what a
// monitor reads (the observe package): SIP messages by method and code,
// the registrations, calls and SAs held (Gauges), the media relay.
//
// # SA lifecycle
//
// A set is temporary from the 401 until the protected REGISTER's 200 OK,
// active after it, old once a newer set is active, and deleted when its
// successor carries traffic or its deadline passes (salifecycle.go). The
// P-CSCF keeps at most MaxSAPairsPerIMPI pairs per IMPI and MaxTempSets
// temporary sets in all.
//
// # Concurrency and lock rules
//
// Server.mu guards the registrations (every registration field), the
// call table, the SPI pool and the temporary-set count; the fields say so
// where they are declared. Events are never delivered with Server.mu held:
// code under the lock queues them (emitLocked) and Server.unlock delivers
// them, so an EventFunc may call Registrations. The pump is called with
// Server.mu held (SA installs), never the other way round: the pump's DHCP
// intercept only queues the packet for the DHCP goroutine.
//
// UE.mu guards the UE's registration state and its SA sets. Register,
// Reregister, Deregister and Call are not meant to run concurrently with
// each other (Run calls them in turn); handlers of incoming requests may
// run at any time.
//
// Each Server and UE has a root context that Close cancels (lifetime.go,
// shared by both). Every goroutine
// they start (sipgo's Serve loops, the housekeeper, the DHCP server) and
// every request handler running is counted in a WaitGroup that Close waits
// for; the package's tests check for leaked goroutines (goleak). Timers
// decide by the injected clock (Config.Now); Housekeep runs one round of
// them for tests with a fake clock.
package sip
