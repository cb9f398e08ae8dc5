package cert

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// certificateExpiry is the expiry of the serving certificate this replica
// serves, for alerting when rotation is stuck.
var certificateExpiry = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "kalpc_operator_webhook_certificate_expiry_timestamp_seconds",
	Help: "Expiry (Unix time) of the webhook serving certificate this replica serves.",
})

func init() {
	metrics.Registry.MustRegister(certificateExpiry)
}
