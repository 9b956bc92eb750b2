// Package tun will hold the data plane: packet devices (kernel TUN through
// golang.zx2c4.com/wireguard/tun, or a gVisor netstack that needs no
// privilege) pumped through ESP-in-UDP (RFC 3948) with keepalives and NAT
// following. Not written yet: see the project's open issue on the data plane.
package tun
