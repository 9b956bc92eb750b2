package observe

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imsec/imsec/sip"
)

var (
	descRegistrations = prometheus.NewDesc("imsec_registrations",
		"Registrations held: registered, or pending (a challenge out, not yet registered).", []string{"state"}, nil)
	descSAs = prometheus.NewDesc("imsec_sas",
		"SAs (one direction each) by state of their set (temporary, active, old) and purpose (signalling: four per set; media: two per set).",
		[]string{"state", "purpose"}, nil)
	descPending = prometheus.NewDesc("imsec_challenges_pending",
		"AKA challenges sent and not yet answered.", nil, nil)
	descLeases = prometheus.NewDesc("imsec_dhcp_leases_active",
		"Inner addresses leased now.", nil, nil)
	descSPIs = prometheus.NewDesc("imsec_spis_in_use",
		"SPIs the P-CSCF receives on (signalling and media).", nil, nil)
	descOverload = prometheus.NewDesc("imsec_overload_refusals_total",
		"Requests answered 503 by a flood limit or by overload control (imsec_registrations_shed_total).", nil, nil)
	descProtDropped = prometheus.NewDesc("imsec_protected_sip_dropped_total",
		"Datagrams for the protected UDP ports dropped: their queue full, or a bad UDP checksum or length.", nil, nil)
	descShed = prometheus.NewDesc("imsec_registrations_shed_total",
		"New registrations refused by overload control: 503 with Retry-After at the first REGISTER, by the signal that refused them.", []string{"signal"}, nil)
	descSocketDrops = prometheus.NewDesc("imsec_socket_drops_total",
		"Datagrams the kernel dropped at the P-CSCF's UDP sockets, their receive buffers full (Linux).", []string{"socket"}, nil)
	descInFlight = prometheus.NewDesc("imsec_register_in_flight",
		"REGISTER handlers running now (overload control sheds past its limit).", nil, nil)
	descTCPAccepted = prometheus.NewDesc("imsec_sip_tcp_connections_accepted_total",
		"Unprotected SIP TCP connections accepted.", nil, nil)
	descTCPRefused = prometheus.NewDesc("imsec_sip_tcp_connections_refused_total",
		"Unprotected SIP TCP connections closed at accept, by the cap reached (per_source, total) or no_addr.", []string{"reason"}, nil)
	descTCPClosed = prometheus.NewDesc("imsec_sip_tcp_connections_closed_total",
		"Unprotected SIP TCP connections closed by a timeout: idle, or header (a message header too slow).", []string{"reason"}, nil)
	descTCPOpen = prometheus.NewDesc("imsec_sip_tcp_connections_open",
		"Unprotected SIP TCP connections open.", nil, nil)
	descSIPRequests = prometheus.NewDesc("imsec_sip_requests_received_total",
		"SIP requests received, by method (unknown methods are other).", []string{"method"}, nil)
	descSIPResponsesIn = prometheus.NewDesc("imsec_sip_responses_received_total",
		"SIP responses received, by the method they answer (CSeq) and status code.", []string{"method", "code"}, nil)
	descSIPResponsesOut = prometheus.NewDesc("imsec_sip_responses_sent_total",
		"SIP responses sent, by the method they answer and status code.", []string{"method", "code"}, nil)
	descCalls = prometheus.NewDesc("imsec_calls_active",
		"Calls in the B2BUA, ringing or up.", nil, nil)
	descRelaySessions = prometheus.NewDesc("imsec_media_relay_sessions",
		"Media relay sessions open (one per stream of a call).", nil, nil)
	descRelayPackets = prometheus.NewDesc("imsec_media_relayed_packets_total",
		"Media datagrams relayed, both directions of every session.", nil, nil)
	descRelayBytes = prometheus.NewDesc("imsec_media_relayed_bytes_total",
		"UDP payload bytes of the media datagrams relayed.", nil, nil)
	descRelayDrops = prometheus.NewDesc("imsec_media_relay_drops_total",
		"Media datagrams dropped: unexpected (not from the leg's peer), no_peer (nowhere to go yet), write_error.", []string{"reason"}, nil)
)

// pcscfCollector reads a P-CSCF's registrar, SIP and relay counters.
type pcscfCollector struct{ srv *sip.Server }

// PCSCF registers every collector of a P-CSCF in reg: its registrar, SIP
// and relay counters, and both pumps (tunnel signalling and media). The
// event counters and the HSS's are registered apart (NewEvents, HSS).
func PCSCF(reg prometheus.Registerer, srv *sip.Server) error {
	for _, c := range []prometheus.Collector{&pcscfCollector{srv},
		PumpCollector(Pump{"signalling", srv.Pump}, Pump{"media", srv.MediaPump})} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (c *pcscfCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRegistrations, descSAs, descPending, descLeases, descSPIs, descOverload, descShed, descSocketDrops, descInFlight, descProtDropped,
		descTCPAccepted, descTCPRefused, descTCPClosed, descTCPOpen, descSIPRequests, descSIPResponsesIn, descSIPResponsesOut,
		descCalls, descRelaySessions, descRelayPackets, descRelayBytes, descRelayDrops} {
		ch <- d
	}
}

func (c *pcscfCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	g := c.srv.Gauges()
	gauge(descRegistrations, g.Registered, "registered")
	gauge(descRegistrations, g.Registrations-g.Registered, "pending")
	for _, s := range g.SAs {
		gauge(descSAs, s.SAs, s.State, s.Purpose)
	}
	gauge(descCalls, g.Calls)
	st := c.srv.Stats()
	gauge(descPending, st.Pending)
	gauge(descLeases, st.Leases)
	gauge(descSPIs, st.SPIs)
	counter(descOverload, st.Overloaded)
	counter(descShed, st.ShedBy.InFlight, "in-flight")
	counter(descShed, st.ShedBy.DHCP, "dhcp")
	counter(descShed, st.ShedBy.SocketWait, "socket-wait")
	counter(descShed, st.ShedBy.Ceiling, "ceiling")
	counter(descSocketDrops, st.SocketDrops.SIP, "sip")
	counter(descSocketDrops, st.SocketDrops.ESP, "esp")
	counter(descSocketDrops, st.SocketDrops.MediaESP, "media-esp")
	counter(descProtDropped, st.ProtectedDropped)
	gauge(descInFlight, st.InFlight)
	counter(descTCPAccepted, st.TCP.Accepted)
	counter(descTCPRefused, st.TCP.RefusedPerSource, "per_source")
	counter(descTCPRefused, st.TCP.RefusedTotal, "total")
	counter(descTCPRefused, st.TCP.RefusedNoAddr, "no_addr")
	counter(descTCPClosed, st.TCP.IdleTimeouts, "idle")
	counter(descTCPClosed, st.TCP.HeaderTimeouts, "header")
	gauge(descTCPOpen, st.TCP.Open)
	collectSIP(ch, c.srv.SIPCounts())
	r := c.srv.MediaRelay()
	gauge(descRelaySessions, r.Len())
	rs := r.Stats()
	counter(descRelayPackets, rs.Packets)
	counter(descRelayBytes, rs.Bytes)
	counter(descRelayDrops, rs.Unexpected, "unexpected")
	counter(descRelayDrops, rs.NoPeer, "no_peer")
	counter(descRelayDrops, rs.WriteErrors, "write_error")
}

// collectSIP sends the SIP message counters: REGISTER and INVITE always
// (zero until seen), every other method and code once seen.
func collectSIP(ch chan<- prometheus.Metric, s sip.SIPCounts) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, m := range []string{"REGISTER", "INVITE"} {
		if _, ok := s.RequestsReceived[m]; !ok {
			s.RequestsReceived[m] = 0
		}
	}
	for m, v := range s.RequestsReceived {
		counter(descSIPRequests, v, m)
	}
	for r, v := range s.ResponsesReceived {
		counter(descSIPResponsesIn, v, r.Method, codeLabel(r.Code))
	}
	for r, v := range s.ResponsesSent {
		counter(descSIPResponsesOut, v, r.Method, codeLabel(r.Code))
	}
}

func codeLabel(code int) string {
	if code == 0 {
		return "invalid"
	}
	return strconv.Itoa(code)
}
