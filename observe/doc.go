// Package observe is how an operator watches a running imsec process: the
// Prometheus metrics (the exposition format of
// https://prometheus.io/docs/instrumenting/exposition_formats/, names per
// https://prometheus.io/docs/practices/naming/), the status API, Go's
// profiles, and the structured log of the sip events.
//
// Nothing here sits on the packet path. The collectors read the counters
// the data plane already keeps (tun.Pump.Counters, sip.Server.Stats and
// Gauges, the media relay's, the Diameter server's) when Prometheus
// scrapes; registrations and calls are counted from sip events, and the
// HSS's vectors and their latency by a wrapper around the HSS the
// registrar asks. Labels never name a UE: per-UE detail is the status
// API's (GET /status), which lists every registration with its SAs.
//
// docs/metrics.md lists every metric; docs/grafana-dashboard.json is a
// dashboard over them.
package observe
