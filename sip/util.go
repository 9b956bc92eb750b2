package sip

import "net/netip"

// netipAny is the zero address: "*" in a Wireshark key log, so the lines
// match whatever the NATs between the ends made of the outer addresses.
var netipAny netip.Addr
