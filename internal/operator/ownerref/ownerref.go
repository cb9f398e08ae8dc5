// Package ownerref edits the owner references through which Kubernetes'
// garbage collector deletes what the operator creates together with an
// object of the Helm release (helm uninstall leaves nothing behind).
package ownerref

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// WithOwner returns refs with owner in place of any reference to an object
// of the same kind and name (one deleted and created again has a new UID),
// or added.
func WithOwner(refs []metav1.OwnerReference, owner metav1.OwnerReference) []metav1.OwnerReference {
	out := make([]metav1.OwnerReference, 0, len(refs)+1)
	for _, ref := range refs {
		if ref.APIVersion == owner.APIVersion && ref.Kind == owner.Kind && ref.Name == owner.Name {
			continue
		}
		out = append(out, ref)
	}
	return append(out, owner)
}
