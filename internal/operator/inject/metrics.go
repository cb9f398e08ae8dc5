package inject

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Values of the result label of kalpc_operator_injections_total.
const (
	resultInjected = "injected"
	resultSkipped  = "skipped"
	resultError    = "error"
)

// injections counts the webhook's decisions.
var injections = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "kalpc_operator_injections_total",
	Help: "Pods seen by the sidecar injection webhook, by result (injected, skipped, error).",
}, []string{"result"})

func init() {
	metrics.Registry.MustRegister(injections)
}
