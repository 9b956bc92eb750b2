package observe

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imsec/imsec/esp"
	"github.com/imsec/imsec/tun"
)

// Descriptions of the ESP data plane's metrics; the tunnel label names the
// pump: "signalling" and "media" at the P-CSCF and the UE, "manual" for
// 'imsec tunnel'.
var (
	descESPPackets = prometheus.NewDesc("imsec_esp_packets_total",
		"ESP packets accepted (direction in) or sent (out).", []string{"tunnel", "direction"}, nil)
	descESPBytes = prometheus.NewDesc("imsec_esp_bytes_total",
		"Inner packet bytes carried in ESP, accepted (in) or sent (out).", []string{"tunnel", "direction"}, nil)
	descESPPadding = prometheus.NewDesc("imsec_esp_batch_padding_bytes_total",
		"Padding added beyond the cipher's so that packets sent together have one length (--batch-pad).", []string{"tunnel"}, nil)
	descESPDrops = prometheus.NewDesc("imsec_esp_drops_total",
		"Packets dropped, by reason: the esp codec's (unknown_spi, replay, auth, ...) and the pump's (no_route, no_sa, spoofed, device_not_ip, non_esp, invalid, send_error, read_error, device_error).",
		[]string{"tunnel", "reason"}, nil)
	descKeepalives = prometheus.NewDesc("imsec_nat_keepalives_total",
		"RFC 3948 NAT-keepalives sent and received.", []string{"tunnel", "direction"}, nil)
	descRebindings = prometheus.NewDesc("imsec_nat_rebindings_total",
		"Authenticated ESP from a new address that moved a peer's endpoint (a NAT rebinding).", []string{"tunnel"}, nil)
	descPumpSAs = prometheus.NewDesc("imsec_esp_sas_installed",
		"SAs in the data plane, by direction (outbound: the SAs each peer may send with).", []string{"tunnel", "direction"}, nil)
)

// pumpDropReasons are the pump's own drop counters, under the names the
// metric's reason label gives them.
func pumpDrops(c tun.Counters) []struct {
	reason string
	n      uint64
} {
	return []struct {
		reason string
		n      uint64
	}{
		{"no_route", c.NoRoute}, {"no_sa", c.NoSA}, {"spoofed", c.Spoofed}, {"device_not_ip", c.NotIP},
		{"non_esp", c.NonESP}, {"invalid", c.Invalid}, {"send_error", c.SendErrors},
		{"read_error", c.ReadErrors}, {"device_error", c.DeviceErrors},
	}
}

// Pump names a pump for PumpCollector. Get returns nil while there is
// no pump yet (a UE before its first registration): then its series are
// absent.
type Pump struct {
	Name string // the tunnel label
	Get  func() *tun.Pump
}

// pumpCollector reads the pumps' counters at scrape time.
type pumpCollector []Pump

// PumpCollector collects the counters of every pump, each labelled
// tunnel=its name.
func PumpCollector(pumps ...Pump) prometheus.Collector { return pumpCollector(pumps) }

func (c pumpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descESPPackets, descESPBytes, descESPPadding, descESPDrops, descKeepalives, descRebindings, descPumpSAs} {
		ch <- d
	}
}

func (c pumpCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c {
		if pump := p.Get(); pump != nil {
			collectPump(ch, p.Name, pump)
		}
	}
}

func collectPump(ch chan<- prometheus.Metric, t string, p *tun.Pump) {
	k := p.Counters()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descESPPackets, k.RxPackets, t, "in")
	counter(descESPPackets, k.TxPackets, t, "out")
	counter(descESPBytes, k.RxBytes, t, "in")
	counter(descESPBytes, k.TxBytes, t, "out")
	counter(descESPPadding, k.TxPadBytes, t)
	// Every reason, zeros included, so that rate() works from the start.
	for r := esp.ReasonNone + 1; r < esp.NumReasons; r++ {
		counter(descESPDrops, k.Drops[r.String()], t, r.String())
	}
	for _, d := range pumpDrops(k) {
		counter(descESPDrops, d.n, t, d.reason)
	}
	counter(descKeepalives, k.KeepalivesSent, t, "sent")
	counter(descKeepalives, k.KeepalivesReceived, t, "received")
	counter(descRebindings, k.EndpointMoves, t)
	var in, out int
	for _, sa := range p.SACounters(nil) {
		if sa.Inbound {
			in++
		} else {
			out++
		}
	}
	ch <- prometheus.MustNewConstMetric(descPumpSAs, prometheus.GaugeValue, float64(in), t, "inbound")
	ch <- prometheus.MustNewConstMetric(descPumpSAs, prometheus.GaugeValue, float64(out), t, "outbound")
}
