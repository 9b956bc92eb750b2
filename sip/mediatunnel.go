package sip

import (
	"net/netip"
	"strconv"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
)

// Media tunnels: the design's extension of TS 33.203 to RTP (docs/architecture.md): next
// to the signalling SAs each UE gets a separate ESP-in-UDP SA pair for its
// media, terminating at the P-CSCF's media relay, which listens on its own
// ESP port (a separate RTP proxy in the design).
//
// TS 33.203 protects signalling only, so this is an imsec extension, kept
// inside sec-agree so that it is bid-down protected too: the UE adds
// `media-spi=N` (the SPI it receives media on) to each Security-Client
// entry; the P-CSCF answers `media-spi=M;media-port=P` (its own SPI and the
// port of its media ESP socket, on the same address as the signalling one)
// in Security-Server, and the UE echoes that in Security-Verify. The keys
// come from CK and IK through the TS 33.220 Annex B KDF with the label
// "imsec-media" (akakeys.MediaKeys), so no media key equals a signalling
// key; the algorithms are the negotiated ones. Both ends install the pair
// when the SA set becomes active.
const (
	paramMediaSPI  = "media-spi"
	paramMediaPort = "media-port"
)

// mediaParams returns the media-spi and media-port parameters of m.
func mediaParams(m Mechanism) (spi esp.SPI, port uint16, ok bool) {
	for _, p := range m.Other {
		switch p.Name {
		case paramMediaSPI:
			v, err := strconv.ParseUint(p.Value, 10, 32)
			if err != nil || v <= esp.SPIReservedMax {
				return 0, 0, false
			}
			spi = esp.SPI(v)
		case paramMediaPort:
			v, err := strconv.ParseUint(p.Value, 10, 16)
			if err != nil || v == 0 {
				return 0, 0, false
			}
			port = uint16(v)
		}
	}
	return spi, port, spi != 0
}

func withParam(m Mechanism, name, value string) Mechanism {
	m.Other = append(append([]Param(nil), m.Other...), Param{Name: name, Value: value})
	return m
}

// mediaPair is one media SA pair seen from one end.
type mediaPair struct {
	in  *esp.Inbound
	out *esp.Outbound
}

// newMediaPair builds the media SAs: inbound on inSPI, outbound on outSPI,
// keyed with the media keys derived from CK/IK.
func newMediaPair(suite Suite, ck akakeys.CK, ik akakeys.IK, inSPI, outSPI esp.SPI) (mediaPair, [2]esp.Config, error) {
	mck, mik, err := akakeys.MediaKeys(ck, ik, akakeys.MediaLabel)
	if err != nil {
		return mediaPair{}, [2]esp.Config{}, err
	}
	ek, err := akakeys.EncryptionKey(string(suite.EAlg), mck)
	if err != nil {
		return mediaPair{}, [2]esp.Config{}, err
	}
	ak, err := akakeys.IntegrityKey(string(suite.Alg), mik)
	if err != nil {
		return mediaPair{}, [2]esp.Config{}, err
	}
	keys, err := esp.NewKeys(suite.EAlg, ek, suite.Alg, ak) // both directions share them
	if err != nil {
		return mediaPair{}, [2]esp.Config{}, err
	}
	cfg := func(spi esp.SPI) esp.Config {
		return esp.Config{SPI: spi, Mode: esp.Tunnel, Encryption: suite.EAlg, EncKey: ek, Integrity: suite.Alg, AuthKey: ak, Keys: keys}
	}
	in, err := esp.NewInbound(cfg(inSPI))
	if err != nil {
		return mediaPair{}, [2]esp.Config{}, err
	}
	out, err := esp.NewOutbound(cfg(outSPI))
	if err != nil {
		return mediaPair{}, [2]esp.Config{}, err
	}
	return mediaPair{in: in, out: out}, [2]esp.Config{cfg(inSPI), cfg(outSPI)}, nil
}

func logMediaKeys(kl *esp.KeyLog, cfgs [2]esp.Config, peer netip.Addr) error {
	if kl == nil {
		return nil
	}
	for _, c := range cfgs {
		if err := kl.Log(c, outerAny(peer), outerAny(peer)); err != nil {
			return err
		}
	}
	return nil
}
