// Package sidecarrbac provisions the RBAC the kalpc sidecars need, and only
// while they need it.
//
// # What is provisioned
//
// For every namespace with at least one injected pod (label
// kalpc.io/sidecar=injected, not yet Succeeded or Failed), the Reconciler
// keeps one ClusterRoleBinding named kalpc-sidecar:<namespace>. It binds the
// kalpc-sidecar ClusterRole (see package sidecarrole, shipped with the
// operator) to exactly the ServiceAccounts those pods run as. A
// ClusterRoleBinding is needed because TokenReviews are cluster-scoped.
//
// Binding individual ServiceAccounts, not the namespace's group
// system:serviceaccounts:<namespace>, keeps pods that never opted in from
// gaining the sidecar's rights. Labelling a namespace
// kalpc.io/injection=enabled grants nothing by itself: the first injected pod
// does.
//
// # Cleanup
//
// Every binding is owned (metadata.ownerReferences) by the ClusterRole it
// binds, so that deleting that ClusterRole (helm uninstall) makes
// Kubernetes' garbage collector delete the bindings, whether or not the
// operator still runs. The Reconciler creates no binding while the
// ClusterRole is missing, and gives a binding of a recreated ClusterRole
// its new owner.
//
// When the last injected pod of a ServiceAccount goes away the account is
// removed from the subjects; when no injected pod is left, or the namespace
// is deleted, the binding is deleted. Bindings carry the labels
// app.kubernetes.io/managed-by=kalpc-operator and
// kalpc.io/sidecar-namespace=<namespace>, and the Reconciler watches them, so
// a binding left behind while the operator was down is cleaned up when it
// starts.
//
// # Ordering
//
// The kubelet starts a pod's containers only after the pod was created, and
// the binding follows the pod's creation within the operator's reaction
// time. A sidecar that starts first sees 403 Forbidden and must retry; the
// sidecar's startup probe allows for it.
package sidecarrbac
