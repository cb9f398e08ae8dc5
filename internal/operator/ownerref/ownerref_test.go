package ownerref

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWithOwner(t *testing.T) {
	other := metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "x", UID: "1"}
	old := metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "kalpc-sidecar", UID: "old"}
	owner := old
	owner.UID = "new"
	for _, tc := range []struct {
		name string
		refs []metav1.OwnerReference
		want []metav1.OwnerReference
	}{
		{"none", nil, []metav1.OwnerReference{owner}},
		{"kept others", []metav1.OwnerReference{other}, []metav1.OwnerReference{other, owner}},
		{"replaced (new UID)", []metav1.OwnerReference{old, other}, []metav1.OwnerReference{other, owner}},
		{"already there", []metav1.OwnerReference{other, owner}, []metav1.OwnerReference{other, owner}},
	} {
		if diff := cmp.Diff(tc.want, WithOwner(tc.refs, owner)); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", tc.name, diff)
		}
	}
}
