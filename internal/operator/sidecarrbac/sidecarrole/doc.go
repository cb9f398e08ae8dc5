// Package sidecarrole holds the rules of the kalpc-sidecar ClusterRole: what
// a sidecar may do with the API server. hack/generate.sh turns the markers
// below into config/rbac/sidecar_role.yaml; the operator binds the role to
// the ServiceAccounts that injected pods run as (see package sidecarrbac).
//
// # Rules
//
//   - connectionports get, list, watch, in every namespace: a ConnectionPort
//     is a cluster-visible name, as an ALPC port is; a server sidecar checks
//     that its pod may serve the port, and a client sidecar checks the
//     server's verified identity against the port's spec and status in the
//     port's namespace, which is usually not its own.
//   - tokenreviews create: a sidecar verifies the projected token its peer
//     presents. TokenReviews are cluster-scoped, so only a
//     ClusterRoleBinding can grant this.
//   - subjectaccessreviews create: a sidecar serves /debug/connections (and,
//     with --metrics-auth, /metrics) only to callers the API server allows
//     (get on pods/proxy of the sidecar's pod; get on /metrics). Like
//     tokenreviews, only a ClusterRoleBinding can grant it. It lets the pod
//     ask whether a user may do something, which reveals authorization
//     policy but grants nothing; see docs/security.md.
//   - namespaces get, list, watch: to evaluate a client rule's
//     namespaceSelector against the client's namespace labels.
//   - pods get: to evaluate a client rule's podSelector against the verified
//     client pod's labels, and to check that the pod named in a peer's token
//     still has the UID the token was issued for.
//
// Nothing is writable.
//
// +kubebuilder:rbac:groups=kalpc.io,resources=connectionports,verbs=get;list;watch
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get
package sidecarrole

// Name is the name of the ClusterRole the sidecars are bound to.
const Name = "kalpc-sidecar"
