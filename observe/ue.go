package observe

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/imsec/imsec/sip"
)

// ueCollector reads a UE's state and SIP counters.
type ueCollector struct{ ue *sip.UE }

// UE registers every collector of a UE in reg: its registration state,
// SIP counters, and both pumps once they exist (tunnel signalling and
// media). The event counters are registered apart (NewEvents).
func UE(reg prometheus.Registerer, ue *sip.UE) error {
	for _, c := range []prometheus.Collector{&ueCollector{ue},
		PumpCollector(Pump{"signalling", ue.Pump}, Pump{"media", ue.MediaPump})} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (c *ueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRegistrations
	ch <- descSIPRequests
	ch <- descSIPResponsesIn
	ch <- descSIPResponsesOut
}

func (c *ueCollector) Collect(ch chan<- prometheus.Metric) {
	registered := 0
	if c.ue.Info().Registered {
		registered = 1
	}
	ch <- prometheus.MustNewConstMetric(descRegistrations, prometheus.GaugeValue, float64(registered), "registered")
	collectSIP(ch, c.ue.SIPCounts())
}
