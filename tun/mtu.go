package tun

import "github.com/imsec/imsec/esp"

// MTU arithmetic for ESP in UDP (RFC 3948) in tunnel mode. Nothing may be
// fragmented on the outer path, so the inner MTU is what is left of the
// path MTU after the outer IP header, the UDP header and the ESP overhead:
//
//	outer IPv4 20 (IPv6 40) + UDP 8 + SPI/seq 8 + IV + padding + pad length/next header 2 + ICV
//
// On a 1500-byte IPv4 path that leaves (payload ≤):
//
//	aes-cbc + hmac-sha-1-96 / hmac-md5-96   1422  (IV 16, ICV 12, blocks of 16)
//	aes-cbc + hmac-sha-256-128              1422  (IV 16, ICV 16)
//	des-ede3-cbc + hmac-sha-1-96            1438  (IV 8, ICV 12, blocks of 8)
//	aes-gcm (ICV 16)                        1438  (IV 8, 4-byte alignment)
//	null + hmac-sha-1-96                    1450  (no IV, 4-byte alignment)
//
// InnerMTU gives the smallest of these (1422 on 1500 over IPv4, 1406 over
// IPv6), so a device sized with it fits whatever algorithm sec-agree picks.
const (
	outerIPv4 = 20
	outerIPv6 = 40
	udpHeader = 8
	// worstESP is the largest ESP overhead (header, IV, padding, trailer
	// and ICV) before the payload alignment: aes-cbc with a 16-byte ICV.
	worstIV, worstICV, worstBlock = 16, 16, 16
)

// InnerMTU returns the largest inner packet that fits a pathMTU-byte IPv4
// path under any supported ESP algorithm pair.
func InnerMTU(pathMTU int) int { return innerMTU(pathMTU - outerIPv4 - udpHeader) }

// InnerMTU6 is InnerMTU for an IPv6 outer path.
func InnerMTU6(pathMTU int) int { return innerMTU(pathMTU - outerIPv6 - udpHeader) }

func innerMTU(espRoom int) int {
	room := espRoom - esp.ESPHeaderLen - worstIV - worstICV
	room -= room % worstBlock
	return room - esp.TrailerLen
}

// InnerMTUFor is the exact inner MTU for one outbound SA on an IPv4 path.
func InnerMTUFor(pathMTU int, o *esp.Outbound) int {
	return o.MaxPayload(pathMTU - outerIPv4 - udpHeader)
}
