package sip

import (
	"fmt"
	"net/netip"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
)

// SASet is one TS 33.203 §7.1 set of four SAs between a UE and its P-CSCF,
// built from the UE's Security-Client entry, the P-CSCF's Security-Server
// entry and the CK/IK of the AKA run. With mod=UDP-enc-tun every SA is in
// tunnel mode and carried in UDP (RFC 3948); with mod=tun in tunnel mode in
// plain ESP (IP protocol 50); with mod=trans in transport mode in plain ESP.
// In every mode the ports select the SA:
//
//	SA1  UE port-c    -> P-CSCF port-s  SPI = P-CSCF spi-s
//	SA2  P-CSCF port-s -> UE port-c     SPI = UE spi-c
//	SA3  P-CSCF port-c -> UE port-s     SPI = UE spi-s
//	SA4  UE port-s    -> P-CSCF port-c  SPI = P-CSCF spi-c
//
// Traffic that is not SIP on the protected ports (DHCP, ICMP) uses SA3
// towards the UE and SA1 towards the P-CSCF.
type SASet struct {
	UE, PCSCF Mechanism // each side's SPIs and ports
	Suite     Suite     // negotiated (the chosen entry's)
	// keys are the set's encryption and integrity keys, prepared once: the
	// four SAs share them (one key schedule per set, not four), and they
	// are the only copy the set keeps.
	keys *esp.Keys
}

// NewSASet derives the ESP keys from CK/IK (TS 33.203 Annex I via
// akakeys) for the negotiated algorithms.
func NewSASet(ue, pcscf Mechanism, ck akakeys.CK, ik akakeys.IK) (*SASet, error) {
	suite := pcscf.Suite()
	ek, err := akakeys.EncryptionKey(string(suite.EAlg), ck)
	if err != nil {
		return nil, err
	}
	ak, err := akakeys.IntegrityKey(string(suite.Alg), ik)
	if err != nil {
		return nil, err
	}
	for _, v := range []struct {
		name string
		val  esp.SPI
	}{{"UE spi-c", ue.SPIc}, {"UE spi-s", ue.SPIs}, {"P-CSCF spi-c", pcscf.SPIc}, {"P-CSCF spi-s", pcscf.SPIs}} {
		if v.val <= esp.SPIReservedMax {
			return nil, fmt.Errorf("sip: %s %d is reserved (RFC 4303 §2.1)", v.name, v.val)
		}
	}
	for _, v := range []struct {
		name string
		val  uint16
	}{{"UE port-c", ue.PortC}, {"UE port-s", ue.PortS}, {"P-CSCF port-c", pcscf.PortC}, {"P-CSCF port-s", pcscf.PortS}} {
		if v.val == 0 {
			return nil, fmt.Errorf("sip: %s missing", v.name)
		}
	}
	keys, err := esp.NewKeys(suite.EAlg, ek, suite.Alg, ak)
	if err != nil {
		return nil, err
	}
	return &SASet{UE: ue, PCSCF: pcscf, Suite: suite, keys: keys}, nil
}

// Mode is the negotiated sec-agree mode (the P-CSCF's entry's).
func (s *SASet) Mode() string { return s.PCSCF.EffectiveMod() }

// espMode is the ESP mode of the set's SAs: transport for mod=trans, tunnel
// for mod=tun and mod=UDP-enc-tun.
func (s *SASet) espMode() esp.Mode {
	if TransportMode(s.Mode()) {
		return esp.Transport
	}
	return esp.Tunnel
}

// Configs returns the four SA configurations in the order SA1..SA4.
func (s *SASet) Configs() [4]esp.Config {
	ek, ak := s.keys.Raw()
	config := func(spi esp.SPI) esp.Config {
		return esp.Config{SPI: spi, Mode: s.espMode(), Encryption: s.Suite.EAlg, EncKey: ek,
			Integrity: s.Suite.Alg, AuthKey: ak, Keys: s.keys}
	}
	return [4]esp.Config{config(s.PCSCF.SPIs), config(s.UE.SPIc), config(s.UE.SPIs), config(s.PCSCF.SPIc)}
}

// Side is what one end installs in its pump.
type Side struct {
	Inbound  []*esp.Inbound   // the two SAs this end receives on
	Outbound []tun.OutboundSA // the two SAs it sends on, with port selectors
	Default  *esp.Outbound    // for traffic no selector takes
}

// PCSCFSide builds the P-CSCF's half: it receives on SA1 and SA4 and sends
// on SA2 (from its port-s to the UE's port-c) and SA3 (port-c to port-s).
func (s *SASet) PCSCFSide() (Side, error) {
	c := s.Configs()
	return s.side(
		[2]esp.Config{c[0], c[3]},
		[2]esp.Config{c[1], c[2]},
		[2][2]uint16{{s.PCSCF.PortS, s.UE.PortC}, {s.PCSCF.PortC, s.UE.PortS}},
		1)
}

// UESide builds the UE's half: it receives on SA2 and SA3 and sends on SA1
// (from its port-c to the P-CSCF's port-s) and SA4 (port-s to port-c).
func (s *SASet) UESide() (Side, error) {
	c := s.Configs()
	return s.side(
		[2]esp.Config{c[1], c[2]},
		[2]esp.Config{c[0], c[3]},
		[2][2]uint16{{s.UE.PortC, s.PCSCF.PortS}, {s.UE.PortS, s.PCSCF.PortC}},
		0)
}

func (s *SASet) side(in, out [2]esp.Config, ports [2][2]uint16, def int) (Side, error) {
	var sd Side
	for _, c := range in {
		i, err := esp.NewInbound(c)
		if err != nil {
			return Side{}, err
		}
		sd.Inbound = append(sd.Inbound, i)
	}
	for k, c := range out {
		o, err := esp.NewOutbound(c)
		if err != nil {
			return Side{}, err
		}
		sd.Outbound = append(sd.Outbound, tun.OutboundSA{SrcPort: ports[k][0], DstPort: ports[k][1], SA: o})
	}
	sd.Default = sd.Outbound[def].SA
	return sd, nil
}

// LogKeys writes the four SAs to a Wireshark key log (nil: nothing). peer
// is the other end's outer address as this end knows it; only its family
// is written (the addresses are "*", so the lines match whatever the NATs
// between the ends made of them), since Wireshark matches an SA only on
// packets of its IP version.
func (s *SASet) LogKeys(kl *esp.KeyLog, peer netip.Addr) error {
	if kl == nil {
		return nil
	}
	for _, c := range s.Configs() {
		if err := kl.Log(c, outerAny(peer), outerAny(peer)); err != nil {
			return err
		}
	}
	return nil
}

// outerAny is the unspecified address of a's family ("*" in a Wireshark
// key log, with a's IP version): IPv4 unless a is IPv6.
func outerAny(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}
