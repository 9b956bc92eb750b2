package observe

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imsec/imsec/akakeys"
	"github.com/imsec/imsec/akakeys/hss/cx"
)

// HSSBackend is what both the registrar (sip.HSS) and the Diameter server
// (cx.Backend) ask of an HSS; *hss.HSS and *cx.Client have it.
type HSSBackend interface {
	Vector(ctx context.Context, impi string) (akakeys.Vector, error)
	Resync(ctx context.Context, impi string, rand akakeys.RAND, auts akakeys.AUTS) (akakeys.Vector, error)
	LookupIMPU(ctx context.Context, impu string) (string, error)
	IMPUs(ctx context.Context, impi string) ([]string, error)
}

// HSS wraps an HSS and counts its vectors and resynchronisations with
// their latency: at the P-CSCF that is the round trip to the HSS (the
// embedded store's durable write, or a Diameter MAR), at 'imsec hss' the
// HSS's own work. One histogram observation per vector, never per packet.
type HSS struct {
	HSSBackend
	vectors, resyncs *prometheus.CounterVec
	latency          *prometheus.HistogramVec
}

var _ HSSBackend = (*HSS)(nil)

// HSSLatencyBuckets span 100 µs (a vector from memory) to about 6.5 s (a
// stalled database or peer), by factors of 4.
var HSSLatencyBuckets = prometheus.ExponentialBuckets(0.0001, 4, 9)

// NewHSS wraps h; register the result in a registry (it is a Collector).
func NewHSS(h HSSBackend) *HSS {
	w := &HSS{HSSBackend: h,
		vectors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imsec_hss_vectors_total",
			Help: "Authentication vectors asked of the HSS, by result (ok, error)."}, []string{"result"}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imsec_hss_resyncs_total",
			Help: "Resynchronisations (AUTS) asked of the HSS, by result (ok, error)."}, []string{"result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "imsec_hss_request_duration_seconds",
			Help: "Time the HSS took to issue a vector (op vector) or resynchronise (op resync).", Buckets: HSSLatencyBuckets},
			[]string{"op"}),
	}
	for _, r := range []string{"ok", "error"} {
		w.vectors.WithLabelValues(r)
		w.resyncs.WithLabelValues(r)
	}
	w.latency.WithLabelValues("vector")
	w.latency.WithLabelValues("resync")
	return w
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// Vector asks the wrapped HSS and counts the answer.
func (h *HSS) Vector(ctx context.Context, impi string) (akakeys.Vector, error) {
	t := time.Now()
	v, err := h.HSSBackend.Vector(ctx, impi)
	h.latency.WithLabelValues("vector").Observe(time.Since(t).Seconds())
	h.vectors.WithLabelValues(result(err)).Inc()
	return v, err
}

// Resync asks the wrapped HSS and counts the answer.
func (h *HSS) Resync(ctx context.Context, impi string, rand akakeys.RAND, auts akakeys.AUTS) (akakeys.Vector, error) {
	t := time.Now()
	v, err := h.HSSBackend.Resync(ctx, impi, rand, auts)
	h.latency.WithLabelValues("resync").Observe(time.Since(t).Seconds())
	h.resyncs.WithLabelValues(result(err)).Inc()
	return v, err
}

// Describe implements prometheus.Collector.
func (h *HSS) Describe(ch chan<- *prometheus.Desc) {
	h.vectors.Describe(ch)
	h.resyncs.Describe(ch)
	h.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (h *HSS) Collect(ch chan<- prometheus.Metric) {
	h.vectors.Collect(ch)
	h.resyncs.Collect(ch)
	h.latency.Collect(ch)
}

var (
	descDiameterConns = prometheus.NewDesc("imsec_diameter_connections_total",
		"Diameter connections accepted.", nil, nil)
	descDiameterRequests = prometheus.NewDesc("imsec_diameter_requests_total",
		"Diameter requests received, by command (CER, DWR, DPR, MAR, UAR, SAR, LIR).", []string{"command"}, nil)
	descDiameterErrors = prometheus.NewDesc("imsec_diameter_errors_total",
		"Diameter requests refused or dropped, by reason.", []string{"reason"}, nil)
	descDiameterAnswers = prometheus.NewDesc("imsec_diameter_answers_total",
		"Diameter answers written.", nil, nil)
)

// cxCollector reads a Diameter Cx server's counters.
type cxCollector struct{ srv *cx.Server }

// Cx collects the counters of a Diameter Cx server.
func Cx(srv *cx.Server) prometheus.Collector { return cxCollector{srv} }

func (c cxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDiameterConns
	ch <- descDiameterRequests
	ch <- descDiameterErrors
	ch <- descDiameterAnswers
}

func (c cxCollector) Collect(ch chan<- prometheus.Metric) {
	k := c.srv.Counters()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descDiameterConns, k.Connections)
	counter(descDiameterAnswers, k.Answers)
	for _, x := range []struct {
		name string
		n    uint64
	}{{"CER", k.CER}, {"DWR", k.DWR}, {"DPR", k.DPR}, {"MAR", k.MAR}, {"UAR", k.UAR}, {"SAR", k.SAR}, {"LIR", k.LIR}} {
		counter(descDiameterRequests, x.n, x.name)
	}
	for _, x := range []struct {
		name string
		n    uint64
	}{{"framing", k.Framing}, {"malformed", k.Malformed}, {"unsupported", k.Unsupported}, {"before_cer", k.BeforeCER},
		{"missing_avp", k.MissingAVP}, {"invalid_avp", k.InvalidAVP}, {"user_unknown", k.UserUnknown},
		{"identity_mismatch", k.IdentityMismatch}, {"auth_rejected", k.AuthRejected}, {"failed", k.Failed}} {
		counter(descDiameterErrors, x.n, x.name)
	}
}
