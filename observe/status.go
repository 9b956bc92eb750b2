package observe

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/imsec/imsec/akakeys/hss/cx"
	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/sip"
	"github.com/imsec/imsec/tun"
)

// Status is what GET /status returns: the process's role and, at a
// P-CSCF, every registration with its SA sets; at a UE its own.
type Status struct {
	Role          string         `json:"role"` // pcscf, ue, hss, tunnel
	Name          string         `json:"name"` // the domain, IMPU or Origin-Host
	Time          time.Time      `json:"time"`
	Registrations []Registration `json:"registrations"`
	// Tunnels are the data plane's totals, by pump.
	Tunnels []TunnelStatus `json:"tunnels,omitempty"`
	// Diameter is an HSS's Cx counters.
	Diameter *cx.Counters `json:"diameter,omitempty"`
}

// Registration is one registration at the P-CSCF (or the UE's own).
type Registration struct {
	IMPI       string     `json:"impi,omitempty"`
	IMPU       string     `json:"impu"`
	Registered bool       `json:"registered"`
	Protected  bool       `json:"protected"` // inside the SAs (sec-agree), not AKA over plain SIP
	Inner      netip.Addr `json:"inner_address,omitzero"`
	// NATAddress is where ESP to the UE goes: its address as the P-CSCF
	// sees it, after any NAT; NAT says whether a NAT was seen.
	NATAddress netip.AddrPort `json:"nat_address,omitzero"`
	NAT        bool           `json:"nat"`
	Expires    time.Time      `json:"expires,omitzero"`
	Sets       []SASet        `json:"sa_sets"`
}

// SASet is one SA set: its state, algorithms and SAs.
type SASet struct {
	ID    int    `json:"id,omitempty"`
	State string `json:"state"` // temporary, active, old
	Suite string `json:"suite"` // ealg/alg
	SAs   []SA   `json:"sas"`
}

// SA is one direction of one SA with its traffic.
type SA struct {
	SPI       esp.SPI `json:"spi"`
	Direction string  `json:"direction"` // in, out
	Packets   uint64  `json:"packets"`
	Bytes     uint64  `json:"bytes"`
	// Sequence is, outbound, the last sequence number sent; inbound the
	// highest seen.
	Sequence uint64 `json:"sequence"`
}

// TunnelStatus is one pump's totals.
type TunnelStatus struct {
	Name     string           `json:"name"`
	Counters tun.Counters     `json:"counters"`
	SAs      []tun.SACounters `json:"sas,omitempty"` // a UE's media and a manual tunnel's SAs
}

type saKey struct {
	spi esp.SPI
	in  bool
}

func saIndex(p *tun.Pump) map[saKey]tun.SACounters {
	m := map[saKey]tun.SACounters{}
	if p == nil {
		return m
	}
	for _, c := range p.SACounters(nil) {
		m[saKey{c.SPI, c.Inbound}] = c
	}
	return m
}

func sa(idx map[saKey]tun.SACounters, spi esp.SPI, in bool) SA {
	s := SA{SPI: spi, Direction: "out"}
	if in {
		s.Direction = "in"
	}
	if c, ok := idx[saKey{spi, in}]; ok {
		s.Packets, s.Bytes, s.Sequence = c.Packets, c.Bytes, c.Sequence
	}
	return s
}

// PCSCFStatus makes a P-CSCF's status: every registration, its sets with
// their SPIs and per-SA counters (an inbound SA not yet in the data plane
// shows zeros), and both pumps' totals.
func PCSCFStatus(srv *sip.Server, domain string) Status {
	st := Status{Role: "pcscf", Name: domain, Time: time.Now().UTC(), Registrations: []Registration{}}
	idx := saIndex(srv.Pump())
	for _, r := range srv.Registrations() {
		reg := Registration{IMPI: r.IMPI, IMPU: r.IMPU, Registered: r.Registered, Protected: r.Protected,
			Inner: r.InnerAddr, NATAddress: r.Endpoint, NAT: r.NAT, Expires: r.Expires, Sets: []SASet{}}
		for _, s := range r.Sets {
			set := SASet{ID: s.ID, State: s.State, Suite: s.Suite.String()}
			for _, spi := range s.InboundSPI {
				set.SAs = append(set.SAs, sa(idx, spi, true))
			}
			for _, spi := range s.OutSPI {
				set.SAs = append(set.SAs, sa(idx, spi, false))
			}
			reg.Sets = append(reg.Sets, set)
		}
		st.Registrations = append(st.Registrations, reg)
	}
	st.Tunnels = []TunnelStatus{{Name: "signalling", Counters: srv.Pump().Counters()}, {Name: "media", Counters: srv.MediaPump().Counters()}}
	return st
}

// UEStatus makes a UE's status: its registration, with the SAs of its
// pumps (the UE keeps no set history: the SAs installed now).
func UEStatus(ue *sip.UE, impi, impu string) Status {
	in := ue.Info()
	st := Status{Role: "ue", Name: impu, Time: time.Now().UTC()}
	reg := Registration{IMPI: impi, IMPU: impu, Registered: in.Registered, Protected: in.Registered, Inner: in.InnerAddr, Expires: in.Expires, Sets: []SASet{}}
	if len(in.SAs) > 0 {
		set := SASet{State: "installed", Suite: in.Suite.String()}
		for _, c := range in.SAs {
			set.SAs = append(set.SAs, sa(map[saKey]tun.SACounters{{c.SPI, c.Inbound}: c}, c.SPI, c.Inbound))
		}
		reg.Sets = append(reg.Sets, set)
	}
	st.Registrations = []Registration{reg}
	if p := ue.Pump(); p != nil {
		st.Tunnels = append(st.Tunnels, TunnelStatus{Name: "signalling", Counters: p.Counters()})
	}
	if p := ue.MediaPump(); p != nil {
		st.Tunnels = append(st.Tunnels, TunnelStatus{Name: "media", Counters: p.Counters(), SAs: in.MediaSAs})
	}
	return st
}

// TunnelStatusOf makes a manual tunnel's status: its pump's totals and SAs.
func TunnelStatusOf(name string, p *tun.Pump) Status {
	return Status{Role: "tunnel", Name: name, Time: time.Now().UTC(), Registrations: []Registration{},
		Tunnels: []TunnelStatus{{Name: "manual", Counters: p.Counters(), SAs: p.SACounters(nil)}}}
}

// HSSStatus is an HSS's status: no registrations, its Diameter counters.
func HSSStatus(name string, srv *cx.Server) Status {
	c := srv.Counters()
	return Status{Role: "hss", Name: name, Time: time.Now().UTC(), Registrations: []Registration{}, Diameter: &c}
}

// String is a short form of an SA for tables: "0x1234 in 5 pkts".
func (s SA) String() string {
	return fmt.Sprintf("%#08x %s %d pkts", uint32(s.SPI), s.Direction, s.Packets)
}
