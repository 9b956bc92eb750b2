// Package bench holds imsec's end-to-end benchmarks and the comparison
// harness behind `imsec bench`. Unit benchmarks live beside their code
// (for example esp/internal/aescbc); this package measures whole paths and
// compares them with what Go's standard library primitives do for the same
// job, in the same run, so that a ratio means something on any machine.
//
// RunCodec measures the ESP codec (RFC 4303 Seal/Open from package esp) for
// each algorithm suite and packet size, with a fixed time budget per
// measurement.
//
// # Tunnel
//
// RunTunnel (`imsec bench tunnel`) measures the data plane end to end: two
// tun.Pumps with mirrored SAs (tunnel mode, fixed keys), ESP in UDP between
// them, in one of two modes.
//
//   - netstack: two tun.Netstacks (in-process gVisor stacks, no privilege)
//     holding InnerA and InnerB, each under a Pump on a loopback udp.Conn.
//   - tun: two network namespaces made with `ip netns add`
//     (imsec-bench-PID-a and -b), joined by a veth pair with OuterA/24 and
//     OuterB/24 and MTU PathMTU; in each a kernel TUN (tun.Kernel) with
//     InnerA or InnerB, and a Pump on a udp.Conn bound to the veth address,
//     port 4500. iperf3 runs inside the namespaces (`ip netns exec`). The
//     namespaces are deleted when the measurement ends, also on failure or
//     interruption. Needs root, ip(8) and iperf3.
//
// Addresses come only from 198.51.100.0/24 (RFC 5737) and 100.64.0.0/10
// (RFC 6598). Both modes size the inner MTU for a 1500-byte IPv4 path
// (tun.InnerMTUFor): 1422 for aes-cbc, 1438 for aes-gcm.
//
// Each measurement has two parts:
//
//   - TCP: one TCP stream from A to B for Duration (netstack: the stacks'
//     own sockets, 128 KiB writes; tun: iperf3 -c, whole seconds).
//     Gbit/s is the payload the receiving application read per second,
//     in 10^9 bits.
//   - Small packets: UDP datagrams whose IP packets cycle through 64, 81,
//     ..., 200 bytes (steps of 17: no two consecutive packets have the same
//     size on the wire under any padding up to 16-byte blocks, so no
//     offload merges them as they are; the per-packet worst case, the
//     same for every algorithm and for WireGuard), from A to B for
//     Duration/2, then from B to A. Our pumps pad a pass's packets to
//     one length (tun.Config.BatchPad) so that they do leave in one GSO
//     send; "pad_per_packet" is what that costs on the wire: the padding
//     both pumps added during the small-packet test divided by the
//     packets they sent in it. Packets
//     per second counts datagrams delivered to the receiving socket; loss is
//     1 - delivered/sent. The generator (sendmmsg batches of 63 on a
//     connected socket in tun mode, one datagram per call on a netstack
//     socket) keeps at most 400
//     datagrams in flight above the highest sequence number the receiver
//     has seen, so that it runs at the rate the tunnel sustains instead of
//     filling the first queue and spending the two cores on datagrams that
//     queue drops. A generator with a full window waits on the receiver
//     instead of sleeping, since Go may round a timer below a millisecond
//     up to one. JSON "pps" is the slower direction.
//
// CPU per Gbit ("cpu_s_per_gbit") is CPU seconds, user plus system, spent
// during the TCP part, divided by the gigabits the stream carried. It is
// this process's getrusage(RUSAGE_SELF) — both pumps, and in netstack mode
// both TCP/IP stacks and the application writing and reading — plus, in tun
// mode, the user and system time of the two iperf3 processes (the kernel's
// TCP, TUN and veth work lands in the system time of whichever process
// made the system call, or of the pumps when a TUN write delivers to
// iperf3's socket). Softirq time the kernel spends in ksoftirqd is not
// counted.
//
// bench/wgcompare runs the same harness (MeasureNetstack, MeasureTUN) over
// wireguard-go, and bench/compare.sh prints both side by side.
//
// # Registration load
//
// RunRegister (`imsec bench register`, register.go) loads a P-CSCF with
// registrations. Its UEs (register_ue.go) each do what sip.UE does for a
// registration, built by hand on one UDP socket of their own without a
// network stack: the unprotected REGISTER with Security-Client, the
// USIM's AKA, the four SAs from CK/IK, DHCP inside the tunnel with the
// inner IPv4/UDP packets made in place, the protected REGISTER; then NAT
// keepalives and, if asked, re-registrations with new SAs. Workers
// (register_worker.go) run at most RegisterConfig.PerWorker UEs each (a
// process's file limit bounds its sockets), as child processes that report
// JSON lines, or as goroutines in tests. The subscriber range is
// hss.TestRange's, what `imsec sub gen` writes. CPU and RSS of the P-CSCF
// (register_proc_*.go) are measured in-process or, on Linux, for a
// process named by PID.
//
// # Results
//
// Measured figures are not kept here: the side-by-side runs against
// wireguard-go, and the experiment log behind the pump's design (what was
// tried, what it measured, what was kept or dropped), are in
// docs/results.md at the module root, each with its date, command and
// machine.
package bench
