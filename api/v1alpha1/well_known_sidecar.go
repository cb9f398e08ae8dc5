package v1alpha1

// Names in the pods the operator injects that tools outside the operator rely
// on: kubectl kalpc reaches a sidecar's HTTP endpoints by the named port of
// the sidecar container, through the API server's pods/proxy subresource.
const (
	// SidecarContainerName is the name of the injected sidecar (a native
	// sidecar: an init container with restartPolicy Always).
	SidecarContainerName = "kalpc-sidecar"

	// SidecarHealthPortName names the sidecar's container port of /healthz
	// and /readyz.
	SidecarHealthPortName = "kalpc-health"

	// SidecarMetricsPortName names the sidecar's container port of /metrics
	// and /debug/connections.
	SidecarMetricsPortName = "kalpc-metrics"
)
