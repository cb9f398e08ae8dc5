// Package portstatus reconciles the status of ConnectionPorts: where each
// port is served.
//
// # Endpoints
//
// A pod is an endpoint of a port when it is in the port's namespace, matches
// spec.servers, carries the kalpc sidecar (the label kalpc.io/sidecar=injected
// and the kalpc-sidecar init container), is scheduled to a node and is in
// phase Running. An endpoint is ready when the pod's Ready condition is True
// and the pod is not being deleted. Endpoints are grouped by node, and the
// Ready condition is True when at least one endpoint is ready.
//
// The pod's Ready condition includes the injected sidecar's readiness probe,
// /readyz/published, which passes only while the pod's application publishes
// every port that selects the pod (internal/sidecar, readiness.go): so a
// ready endpoint is one that serves, with no pod status written by kalpc.
//
// # Events
//
// The Reconciler records an event on the port when its Ready condition
// changes, and a warning when spec.servers is not a valid label selector.
package portstatus
