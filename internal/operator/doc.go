// Package operator wires the kalpc operator's parts into a controller-runtime
// manager: the ConnectionPort status reconciler (package portstatus), the
// sidecar RBAC reconciler (package sidecarrbac), the pod injection webhook
// (package inject) and, when the operator manages its own certificate, the
// webhook certificate rotator (package cert).
//
// # Cache
//
// CacheOptions restricts the manager's cache to what the operator needs, so
// that its memory does not grow with the cluster: only pods carrying the
// kalpc.io/sidecar=injected label and only the ClusterRoleBindings the
// operator manages are cached. Namespaces and ConnectionPorts are cached in
// full.
//
// # Leader election
//
// The reconcilers run on the elected leader only; the webhook server and the
// certificate rotator run on every replica, so that any replica can answer
// the API server.
package operator
