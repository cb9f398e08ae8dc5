// Package podid holds the one type for a pod's identity: the client pod a
// server application sees, the server pod a client sees, the sidecar's own
// pod. pkg/alpc exports it as alpc.Identity; the control protocol
// (internal/ctl) carries it on the wire; the sidecar verifies it
// (internal/sidecar/identity), authorizes it (internal/sidecar/policy) and
// lists it (internal/sidecar/connections, whose JSON form is the only
// other shape of it). The package imports only the standard library, so
// every layer may use it.
package podid

import "fmt"

// Identity is a pod's identity as a kalpc sidecar verified it, never as
// the pod claimed it: in Kubernetes, from the pod's projected
// ServiceAccount token.
type Identity struct {
	// Namespace is the pod's namespace.
	Namespace string
	// ServiceAccount is the pod's ServiceAccount.
	ServiceAccount string
	// PodName is the pod's name.
	PodName string
	// PodUID is the pod's UID: a pod replaced under the same name has
	// another.
	PodUID string
}

// String describes the identity as "namespace/pod (serviceaccount SA, uid
// UID)".
func (id Identity) String() string {
	return fmt.Sprintf("%s/%s (serviceaccount %s, uid %s)", id.Namespace, id.PodName, id.ServiceAccount, id.PodUID)
}
