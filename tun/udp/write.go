package udp

import (
	"errors"
	"net"
)

// writeEach sends datagrams one by one, carrying on past per-datagram
// errors (the first is returned after the rest are sent).
func writeEach(c *net.UDPConn, msgs []Message) (int, error) {
	sent := 0
	var first error
	for i := range msgs {
		if _, err := c.WriteToUDPAddrPort(msgs[i].Buf[:msgs[i].N], msgs[i].Addr); err != nil {
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
