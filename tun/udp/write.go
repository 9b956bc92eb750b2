package udp

import (
	"errors"
	"net"
	"net/netip"
)

// writeEach sends datagrams one by one, carrying on past per-datagram
// errors (the first is returned after the rest are sent). On a socket
// connected to remote, datagrams to remote go without an address.
func writeEach(c *net.UDPConn, remote netip.AddrPort, msgs []Message) (int, error) {
	sent := 0
	var first error
	for i := range msgs {
		var err error
		if remote.IsValid() && msgs[i].Addr == remote {
			_, err = c.Write(msgs[i].Buf[:msgs[i].N])
		} else {
			_, err = c.WriteToUDPAddrPort(msgs[i].Buf[:msgs[i].N], msgs[i].Addr)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return sent, err
			}
			if first == nil {
				first = err
			}
			continue
		}
		sent++
	}
	return sent, first
}
