package observe

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imsec/imsec/sip"
)

// Events counts registrations, calls and leases from sip events: one
// counter increment per event, never per packet. Register it, and give
// its Observe to the Server or UE (with Tee beside the ladder).
type Events struct {
	attempts, successes *prometheus.CounterVec // no labels but the role's
	failures            *prometheus.CounterVec
	deregistrations     *prometheus.CounterVec
	calls               *prometheus.CounterVec
	leases              prometheus.Counter
}

// failureCauses maps the refusal events to the cause label of
// imsec_registration_failures_total; the UE's own failures (retry, start
// over, unexpected answers) are there too.
var failureCauses = map[sip.EventKind]string{
	sip.EvBadRequest: "bad_request", sip.EvUnknownIdentity: "unknown_identity", sip.EvIPsecRequired: "ipsec_required",
	sip.EvNoCommonSecurity: "no_common_security", sip.EvWrongResponse: "wrong_response", sip.EvVerifyMismatch: "verify_mismatch",
	sip.EvWrongSA: "wrong_sa", sip.EvStaleNonce: "stale_nonce", sip.EvHSSError: "hss_error", sip.EvOverload: "overload",
	sip.EvIdentityMismatch: "identity_mismatch", sip.EvSCSCFError: "scscf_error",
	sip.EvRetry: "retry", sip.EvStartOver: "start_over", sip.EvUnexpected: "unexpected",
}

// NewEvents makes the event counters. Every cause is created at zero so
// that each series exists from the start.
func NewEvents() *Events {
	e := &Events{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imsec_registration_attempts_total",
			Help: "Registration runs started: AKA challenges sent (P-CSCF), or first REGISTERs of a registration or re-registration sent (UE)."}, nil),
		successes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imsec_registration_successes_total",
			Help: "Registrations and re-registrations answered 200 OK."}, nil),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imsec_registration_failures_total",
			Help: "REGISTERs refused (P-CSCF) or registrations that failed (UE), by cause."}, []string{"cause"}),
		deregistrations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imsec_deregistrations_total",
			Help: "Registrations ended: de-registered by the UE (deregister) or expired."}, []string{"cause"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imsec_calls_total",
			Help: "Calls by outcome: answered (200 OK and ACK) or failed (a final non-2xx, timeout or cancel)."}, []string{"result"}),
		leases: prometheus.NewCounter(prometheus.CounterOpts{Name: "imsec_dhcp_leases_granted_total",
			Help: "Inner addresses leased through the tunnels (DHCPACK)."}),
	}
	e.attempts.WithLabelValues()
	e.successes.WithLabelValues()
	seen := map[string]bool{}
	for _, c := range failureCauses {
		if !seen[c] {
			seen[c] = true
			e.failures.WithLabelValues(c)
		}
	}
	e.deregistrations.WithLabelValues("deregister")
	e.deregistrations.WithLabelValues("expired")
	e.calls.WithLabelValues("answered")
	e.calls.WithLabelValues("failed")
	return e
}

// Describe implements prometheus.Collector.
func (e *Events) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range e.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (e *Events) Collect(ch chan<- prometheus.Metric) {
	for _, c := range e.collectors() {
		c.Collect(ch)
	}
}

func (e *Events) collectors() []prometheus.Collector {
	return []prometheus.Collector{e.attempts, e.successes, e.failures, e.deregistrations, e.calls, e.leases}
}

// Observe counts one event; it is a sip.EventFunc.
func (e *Events) Observe(ev sip.Event) {
	switch ev.Kind {
	case sip.EvChallenge: // the P-CSCF's 401
		e.attempts.WithLabelValues().Inc()
	case sip.EvRegisterSent: // the UE's first REGISTER of a run (not its answer, resync or de-registration)
		if ev.What == "REGISTER (unprotected)" || strings.HasPrefix(ev.What, "REGISTER (re-registration") {
			e.attempts.WithLabelValues().Inc()
		}
	case sip.EvRegistered:
		e.successes.WithLabelValues().Inc()
	case sip.EvDeregistered:
		e.deregistrations.WithLabelValues("deregister").Inc()
	case sip.EvRegistrationExpired:
		e.deregistrations.WithLabelValues("expired").Inc()
	case sip.EvCallUp:
		// A UE that answers reports its 200 (to the P-CSCF) and then the
		// ACK (an action): the call is up once, at the action.
		if ev.To == "" {
			e.calls.WithLabelValues("answered").Inc()
		}
	case sip.EvCallFailed:
		e.calls.WithLabelValues("failed").Inc()
	case sip.EvDHCPLease:
		e.leases.Inc()
	default:
		if c, ok := failureCauses[ev.Kind]; ok {
			e.failures.WithLabelValues(c).Inc()
		}
	}
}

// Tee returns an EventFunc that gives each event to every non-nil fn in
// turn.
func Tee(fns ...sip.EventFunc) sip.EventFunc {
	var live []sip.EventFunc
	for _, f := range fns {
		if f != nil {
			live = append(live, f)
		}
	}
	return func(ev sip.Event) {
		for _, f := range live {
			f(ev)
		}
	}
}
