// Package tun is imsec's data plane: packet devices that carry the inner IP
// traffic of a UE or a P-CSCF, and the Pump that moves their packets through
// ESP (RFC 4303) in UDP (RFC 3948) under the security associations of
// TS 33.203.
//
// # Devices
//
// A Device (device.go) reads and writes whole IP packets in batches, at an
// offset that leaves headroom for the outer UDP and ESP headers and the IV,
// in the style of wireguard-go's tun.Device. Two implementations:
//
//   - Kernel: an operating-system TUN interface through
//     golang.zx2c4.com/wireguard/tun (Linux with virtio-net offloads and
//     batches of up to 128, macOS utun, Windows Wintun, the BSDs). It needs
//     privilege. On Linux, SetUp, SetMTU, AddAddress, RemoveAddress and
//     AddRoute speak rtnetlink directly (no `ip` binary). The netlink socket
//     is opened by CreateKernel, so it belongs to the network namespace of
//     the thread that created the Kernel, and later calls act there from any
//     goroutine. To put a TUN in a namespace, create it from a goroutine
//     that has called runtime.LockOSThread and then unix.Setns (or
//     unix.Unshare(CLONE_NEWNET), as the root-only test does).
//
//   - Netstack: an in-process gVisor TCP/IP stack (gvisor.dev/gvisor) with
//     one point-to-point NIC. It needs no privilege. Its sockets are
//     ordinary net.Conn, net.PacketConn and net.Listener values addressed
//     with netip; no gVisor type leaves this package.
//
// # Endpoints
//
// NewEndpoint assembles one end of a tunnel in one call: the ESP-in-UDP
// socket, an optional wrapper (a pcap tap), the device (a Netstack or a
// Kernel), the Pump between them and its first peer. The Endpoint owns all
// of it, and its Close releases all of it; a NewEndpoint that fails has
// already released whatever it had made or been given.
//
// # Routing tables
//
// A Pump finds the inbound SA of each ESP packet by its SPI and the peer
// of each outbound packet by its inner destination. At a P-CSCF those
// tables hold every registered UE, and they change on every registration,
// with the registrar's lock held. They are hash tables (table.go) whose
// buckets are copied on write one at a time: a lookup takes no lock and
// allocates nothing; an install or a removal costs the same with 100k UEs
// as with ten, and so does the resize that doubles or shrinks a table,
// which later writes carry out a few buckets at a time. Prefix routes
// (the UE's default route) are few and stay in one copy-on-write list.
// BenchmarkTableInstall, BenchmarkTableLookup and BenchmarkTableFill
// measure them at 1k, 10k and 100k UEs.
//
// # Sockets on the Pump
//
// A Socket (socket.go, Pump.ListenUDP) is a UDP socket on the Pump's inner
// side that bypasses the Device: the inbound path hands it the whole,
// unfragmented datagrams for its address and port after the SA's and the
// source's checks, and a write seals in the caller's goroutine. A gateway
// that serves many peers on a few ports (the P-CSCF's protected SIP) uses
// it instead of a netstack socket, whose writes take locks a burst queues
// on. The socket reader also coalesces the wakeups of many idle peers'
// NAT keepalives, its socket out of the runtime's poller meanwhile
// (inbound.go, clock.go, udp.Conn.SetQuiet).
//
// # Netstack details
//
// The stack is built here (stack.New, our own link endpoint, one NIC,
// default routes for IPv4 and IPv6), not taken from wireguard-go's
// tun/netstack, because we need the *stack.Stack itself: for dials from a
// bound port, for addresses that arrive after the link is up, and for the
// address-less DHCP phase.
//
//   - Addresses: AddAddress and RemoveAddress at any time. Until an IPv4
//     address exists the stack holds 0.0.0.0 as its source, so a DHCP
//     client can bind 0.0.0.0:68 and send to 255.255.255.255:67 (RFC 2131
//     §4.1); the server must answer to the limited broadcast. gVisor's
//     promiscuous mode is not used: with HandleLocal it drops every packet
//     as coming from the stack itself.
//   - Sockets: ListenUDP, DialUDP (SO_BROADCAST on), ListenTCP
//     (SO_REUSEADDR), DialTCP from a chosen local port with SO_REUSEADDR and
//     SO_REUSEPORT set before bind, so one 33.203 port-c can carry several
//     connections; re-dialing a 4-tuple whose last connection is in
//     TIME_WAIT on this stack first drops that TIME_WAIT endpoint, as Linux
//     does with net.ipv4.tcp_tw_reuse.
//   - Conns cache LocalAddr and RemoteAddr when created (gonet returns nil
//     after close and sipgo dereferences it), return errors matching
//     net.ErrClosed after Close (gonet returns io.EOF for UDP), keep io.EOF
//     for a TCP peer's FIN, and map gVisor's refusal, reset and
//     unreachable errors to the syscall errors a kernel socket gives.
//   - Ping sends an ICMP or ICMPv6 echo and waits for the reply; the stack
//     answers echo requests by itself.
//   - Read returns up to BatchSize packets per call (the first blocks, the
//     rest are those already queued); Write copies packets into the stack.
//     Bad packets are counted (Stats), never an error.
//
// # TCP performance
//
// Every Netstack sets, with the options gVisor exposes:
// RACK loss detection off: with it on, this gVisor version's TCP
// stops for good after a loss (no retransmission, no timer: google/gvisor#6113,
// reproduced by TestFakeLossyNetworkTCP; tailscale turned it off too, PR
// #14896), although off costs throughput under reordering
// (tailscale/tailscale#20893); SACK off as well: with SACK on, the same
// test still stalled now and then (11 of 220 runs under load, loss with
// reordering; none of 140 without SACK), so recovery is NewReno, one loss
// per round trip; receive buffer
// auto-tuning on; CUBIC congestion control; TCP buffer ranges up to 6 MiB
// (send) and 8 MiB (receive), the values of tailscale PR #12994 (gVisor's
// own maximum is 4 MiB, google/gvisor#11837); a 1 MiB default UDP receive
// buffer. Segmentation offload inside gVisor (tailscale PR #12869) is not
// used: packets leave the stack at the link MTU.
//
// BenchmarkNetstackTCP measures one TCP stream between two netstacks
// joined by a trivial pump (no ESP); its figures are in docs/results.md.
//
// # Portability
//
// The gVisor packages used (stack, link via our own endpoint, network/ipv4,
// network/ipv6, transport/tcp, udp, icmp, adapters/gonet) build for Linux,
// macOS and Windows, as wireguard-go's tun/netstack relies on; the Kernel's
// netlink configuration is Linux-only and returns errors.ErrUnsupported
// elsewhere.
//
// # Test helpers
//
// tun/tuntest has a channel-backed fake Device, two such devices back to
// back, a trivial pump between any two Devices (Connect) and a builder of
// valid IPv4/IPv6 UDP packets. tun/udptest is an in-memory UDP network whose
// sockets implement PacketConn, with hooks to drop and delay datagrams and a
// NAT that can rebind.
package tun
