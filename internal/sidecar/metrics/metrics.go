// Package metrics defines the sidecar's Prometheus metrics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Roles of a sidecar in a connection, the value of the role label.
const (
	RoleClient = "client"
	RoleServer = "server"
)

// Unverified is the service_account label of a refused client whose
// identity was not established.
const Unverified = "unverified"

// Results of a connection attempt, the value of the result label.
const (
	ResultAccepted        = "accepted"
	ResultRejected        = "rejected"
	ResultDenied          = "denied"
	ResultUnauthenticated = "unauthenticated"
	ResultPortNotFound    = "port_not_found"
	ResultNotServer       = "not_server"
	ResultNoServer        = "no_server"
	ResultServerIdentity  = "server_identity"
	ResultLimit           = "limit"
	ResultUnavailable     = "unavailable"
	ResultError           = "error"
)

// Metrics are the sidecar's metrics, in their own registry.
type Metrics struct {
	// Registry holds every metric below plus the Go and process collectors.
	Registry *prometheus.Registry
	// Connections counts connection attempts by port ("namespace/name"),
	// role and result.
	Connections *prometheus.CounterVec
	// ConnectDuration observes how long brokering a connection took, from
	// the request to the channel handed over (or the refusal), by role and
	// result.
	ConnectDuration *prometheus.HistogramVec
	// Refusals counts the connection requests the server side refused,
	// by port, the client's ServiceAccount ("namespace/name", or
	// "unverified" when the client's identity was not established) and
	// result (every result but accepted).
	Refusals *prometheus.CounterVec
	// ActiveChannels is the number of open channels of the pod's published
	// ports, as reported by the server application's library, by port.
	ActiveChannels *prometheus.GaugeVec
	// PublishedPorts is the number of ports the pod publishes.
	PublishedPorts prometheus.Gauge
	// TokenReviews counts peer token verifications by result ("valid",
	// "invalid", "error").
	TokenReviews *prometheus.CounterVec
	// StaleEntries counts node-directory entries of dead processes removed.
	StaleEntries prometheus.Counter
	// SilentEndpoints counts server endpoints a connect skipped because
	// they did not answer within the endpoint answer timeout.
	SilentEndpoints prometheus.Counter
	// RefusedConnections counts connections closed at once because their
	// listener ("pod" socket or "endpoint") had its most connections open.
	RefusedConnections *prometheus.CounterVec
}

// Listener labels of RefusedConnections.
const (
	ListenerPod      = "pod"
	ListenerEndpoint = "endpoint"
)

// New creates and registers the metrics.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kalpc_sidecar_connections_total",
			Help: "Connection attempts brokered by this sidecar, by port, role (client or server) and result.",
		}, []string{"port", "role", "result"}),
		ConnectDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kalpc_sidecar_connect_duration_seconds",
			Help:    "Time to broker a connection, from the request to the channel handed over or the refusal.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"role", "result"}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kalpc_sidecar_refusals_total",
			Help: "Connection requests refused by this server sidecar or its application, by port, client ServiceAccount (namespace/name, or unverified) and result.",
		}, []string{"port", "service_account", "result"}),
		ActiveChannels: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kalpc_sidecar_active_channels",
			Help: "Open channels of the ports this pod publishes, by port.",
		}, []string{"port"}),
		PublishedPorts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kalpc_sidecar_published_ports",
			Help: "Connection ports this pod publishes.",
		}),
		TokenReviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kalpc_sidecar_token_reviews_total",
			Help: "Verifications of peer sidecars' tokens, by result (valid, invalid, error).",
		}, []string{"result"}),
		StaleEntries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kalpc_sidecar_stale_entries_removed_total",
			Help: "Node-directory entries of dead processes removed by this sidecar.",
		}),
		SilentEndpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kalpc_sidecar_silent_endpoints_total",
			Help: "Server endpoints skipped by a connect because they did not answer within --endpoint-answer-timeout.",
		}),
		RefusedConnections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kalpc_sidecar_refused_connections_total",
			Help: "Connections closed at once because their listener (pod socket or endpoint) had its most connections open.",
		}, []string{"listener"}),
	}
	m.Registry.MustRegister(m.Connections, m.ConnectDuration, m.Refusals, m.ActiveChannels, m.PublishedPorts,
		m.TokenReviews, m.StaleEntries, m.SilentEndpoints, m.RefusedConnections,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
