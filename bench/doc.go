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
//     send; "pad_per_packet" is what that costs on the wire. Packets
//     per second counts datagrams delivered to the receiving socket; loss is
//     1 - delivered/sent. The generator (sendmmsg batches of 63 on a
//     connected socket in tun mode, one datagram per call on a netstack
//     socket) keeps at most 400
//     datagrams in flight above the highest sequence number the receiver
//     has seen, so that it runs at the rate the tunnel sustains instead of
//     filling the first queue and spending the two cores on datagrams that
//     queue drops. JSON "pps" is the slower direction.
//
// CPU per Gbit ("cpu_s_per_gbit") is CPU seconds, user plus system, spent
// during the TCP part, divided by the gigabits the stream carried. It is
// this process's getrusage(RUSAGE_SELF) — both pumps, and in netstack mode
// both TCP/IP stacks and the application writing and reading — plus, in tun
// mode, the user and system time of the two iperf3 processes (the kernel's
// TCP, TUN and veth work lands in the system time of whichever process
// made the system call, or of the pumps when a TUN write delivers to
// iperf3's socket). Softirq time the kernel spends in ksoftirqd is not
// counted; on these runs it is negligible.
//
// bench/wgcompare runs the same harness (MeasureNetstack, MeasureTUN) over
// wireguard-go, and bench/compare.sh prints both side by side.
//
// # Design notes from the measurements
//
// On the two-core development machine the tunnel is CPU-bound: both pumps,
// both kernels' TCP and iperf3 share the two cores. What helped, in the
// order it was done:
//
//   - UDP GSO and GRO in tun/udp: 1.46 to 3.47 Gbit/s, 1.05 to 0.48 CPU
//     s/Gbit (tun, aes-cbc).
//   - The pump's outbound pipeline (device reader | sealer): a TUN hands
//     over one small packet per read, and the sealer now sends whatever
//     arrived meanwhile in one sendmmsg (about 40 datagrams per call under
//     load): about 120k to 200k small packets/s with the first size mix.
//   - Sealing and opening in batches (esp.SealBatch, esp.OpenBatch): the
//     sealer was the bottleneck at about 4 Gbit/s (0.94 of a core, three
//     quarters of it in Seal), because CBC encryption is serial within a
//     packet, and HMAC-SHA1 is serial within a packet too. With a batch,
//     AES-CBC runs eight packets' chains interleaved
//     (esp/internal/aescbc.EncryptCBCN: 1400-byte packets 10.4 GB/s against
//     1.6 one by one) and HMAC-SHA1 two or four packets' SHA-NI chains
//     (esp/internal/hmacsha1: 5.0 GB/s four at a time, 1.7 for crypto/hmac),
//     the "multi-buffer" design of Intel's IPsec library. tun aes-cbc went
//     from about 4.0 to 6.9 Gbit/s, 0.47 to 0.27 CPU s/Gbit.
//   - A connected UDP socket where the peer cannot move (this harness,
//     `imsec tunnel` without --follow-peer): no route lookup per datagram.
//   - Short outbound passes of small packets (16; tun.passFull): a pass is
//     serial (seal, then one sendmmsg that also runs the local receiver's
//     softirq), and with passes of everything waiting both CPUs were idle
//     18% of the small-packet test, waiting on each other; with 16, 11%,
//     and about 10% more packets/s in alternating runs.
//   - Padding a pass's packets to one length (tun.Config.BatchPad, RFC
//     4303 §2.4 padding, default at most 64 bytes a packet): UDP GSO only
//     merges datagrams of one size, and the small-packet mix never has
//     two alike in a row, so each packet took its own trip down the outer
//     UDP and veth path and up the peer's, about a third of all the CPU.
//     Padded to one length (the last of a group may stay shorter, as
//     GSO allows), a group leaves as one GSO send and arrives as one GRO
//     read: at the default limit the mix's nine sizes (ESP 116 to 244
//     bytes with AES-CBC) make groups of up to five, so a pass of 16
//     takes about four sends instead of 16. tun aes-cbc small packets, slower
//     direction, medians of `bench/compare.sh -d 10s -r 3`: 173k
//     packets/s unpadded, 297k padded (aes-gcm 275k; wireguard-go 158k),
//     at 22 bytes of padding a packet on average with the default limit of
//     64 (an earlier run: 188k and 293k, wireguard-go 172k); single runs
//     with a limit of 240 gave about 10% more, at 64 bytes a packet. A packet is only padded up to another of its
//     pass, so none grows past the path MTU.
//
// What did not, measured with interleaved runs: splitting each batch's
// sealing between two goroutines (tun.Config.ParallelSeal, `--parallel-seal`:
// sequence numbers are reserved for the whole batch first, so order holds)
// lowered tun aes-cbc from 6.6, 5.8 and 6.9 Gbit/s to 5.6, 5.7 and 6.6 in
// three alternating pairs, because both cores are already busy here; it is
// off by default and kept for machines with a free core. Earlier, a
// per-packet fork-join cost about 10% more CPU per Gbit, and a third
// outbound stage that only sends (reader | sealer | sender) lowered tun
// aes-cbc from 4.11 to 3.73 Gbit/s.
//
// Small packets are bound by the kernel, not by the pumps: in tun mode
// about 85% of the CPU is kernel time, crypto about 2%. Before batch
// padding a profile (perf record -a) split it: the pumps' outer sendmmsg
// with the peer's receive path 31%, the TUN writes with the receiving
// application's socket 19%, the TUN reads 8%, the outer recvmmsg 5%, the
// harness's generator 21% and sinks 6%. Setting the TUNs' qdisc to
// noqueue (a TUN never pushes back, so its qdisc only costs) gained
// about 1%, within the noise. Tried and dropped, no better within the
// noise: busy-polling the UDP socket for 20 or 50 µs
// before parking, smaller inbound batches or opening and writing each batch
// 16 packets at a time (both cost stream throughput),
// yielding once before a short pass, GOMAXPROCS 1, 3 or 4, and a deeper
// generator window (900 or 4000 with a longer TUN queue). The small-packet
// generator waits on the receiver rather than sleeping: Go rounds a sleep
// below a millisecond up to one when nothing else wakes the scheduler, and
// with the earlier 50 µs sleep the same build measured anything from 163k
// to 235k packets/s from one run to the next.
package bench
