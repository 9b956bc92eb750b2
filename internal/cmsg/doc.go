// Package cmsg reads the control messages a recvmsg or recvmmsg returns
// (Linux), without allocating, and turns on the receive time: the UDP_GRO segment size and the
// SO_TIMESTAMPNS receive time, for the P-CSCF's sockets (internal/rawudp,
// tun/udp).
package cmsg
