package sidecarrbac_test

import (
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/operator/inject"
	"github.com/kalpc/kalpc/internal/operator/sidecarrbac"
	"github.com/kalpc/kalpc/internal/testenv"
)

const (
	timeout  = 20 * time.Second
	interval = 50 * time.Millisecond
)

// TestProvisionsAndCleansUp follows a namespace from its first injected pod to
// its last, checking the binding, and what it lets each ServiceAccount do
// with the real API server's authorizer.
func TestProvisionsAndCleansUp(t *testing.T) {
	g := NewWithT(t)
	ctx := t.Context()
	ns := newNamespace(t)
	other := newNamespace(t)

	// A namespace without injected pods gets nothing.
	plain := pod(t, ns, "plain", "plain-sa", false)
	g.Consistently(func() error {
		return k8s.Get(ctx, client.ObjectKey{Name: sidecarrbac.BindingName(ns)}, &rbacv1.ClusterRoleBinding{})
	}).WithTimeout(time.Second).WithPolling(100 * time.Millisecond).Should(Satisfy(apierrors.IsNotFound))

	pod(t, ns, "a", "server-sa", true)
	b := pod(t, ns, "b", "", true) // the default ServiceAccount
	pod(t, ns, "a-twin", "server-sa", true)
	done := pod(t, ns, "done", "finished-sa", true)
	done.Status.Phase = corev1.PodSucceeded
	g.Expect(k8s.Status().Update(ctx, done)).To(Succeed())

	expectSubjects(t, ns, "default", "server-sa")
	crb := &rbacv1.ClusterRoleBinding{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: sidecarrbac.BindingName(ns)}, crb)).To(Succeed())
	g.Expect(crb.RoleRef).To(Equal(rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kalpc-sidecar"}))
	g.Expect(crb.Labels).To(HaveKeyWithValue(kalpcv1alpha1.LabelRBACNamespace, ns))
	g.Expect(crb.Labels).To(HaveKeyWithValue(kalpcv1alpha1.LabelManagedBy, "kalpc-operator"))

	// What the binding grants, checked by the API server's authorizer.
	sidecar := as(t, ns, "server-sa")
	g.Expect(sidecar.List(ctx, &kalpcv1alpha1.ConnectionPortList{}, client.InNamespace(other))).To(Succeed())
	g.Expect(sidecar.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: "not-a-token"}})).To(Succeed())
	g.Expect(sidecar.Get(ctx, client.ObjectKeyFromObject(plain), &corev1.Pod{})).To(Succeed())
	g.Expect(sidecar.Get(ctx, client.ObjectKey{Name: other}, &corev1.Namespace{})).To(Succeed())
	// ... and what it does not.
	forbidden := func(err error) {
		t.Helper()
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want Forbidden, got %v", err)
	}
	forbidden(sidecar.List(ctx, &corev1.PodList{}, client.InNamespace(ns)))
	forbidden(sidecar.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)))
	forbidden(sidecar.Create(ctx, &kalpcv1alpha1.ConnectionPort{
		ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: ns},
		Spec:       kalpcv1alpha1.ConnectionPortSpec{Servers: kalpcv1alpha1.LabelSelector{}},
	}))
	// A ServiceAccount of the namespace that runs no injected pod gets nothing.
	forbidden(as(t, ns, "plain-sa").List(ctx, &kalpcv1alpha1.ConnectionPortList{}, client.InNamespace(other)))
	forbidden(as(t, ns, "finished-sa").List(ctx, &kalpcv1alpha1.ConnectionPortList{}, client.InNamespace(other)))

	// The last pod of a ServiceAccount goes: the account goes.
	g.Expect(k8s.Delete(ctx, b, client.GracePeriodSeconds(0))).To(Succeed())
	expectSubjects(t, ns, "server-sa")

	// A subject added by hand is reverted.
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: sidecarrbac.BindingName(ns)}, crb)).To(Succeed())
	crb.Subjects = append(crb.Subjects, rbacv1.Subject{Kind: "ServiceAccount", Name: "intruder", Namespace: ns})
	g.Expect(k8s.Update(ctx, crb)).To(Succeed())
	expectSubjects(t, ns, "server-sa")

	// The last injected pod goes: the binding goes.
	g.Expect(k8s.DeleteAllOf(ctx, &corev1.Pod{}, client.InNamespace(ns), client.GracePeriodSeconds(0),
		client.MatchingLabels{kalpcv1alpha1.LabelSidecar: kalpcv1alpha1.LabelSidecarInjected})).To(Succeed())
	expectNoBinding(t, ns)
}

// TestNamespaceDeletion checks that a namespace being deleted loses its
// binding even while its pods are still there (envtest runs no namespace
// controller, so the namespace stays Terminating).
func TestNamespaceDeletion(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	pod(t, ns, "a", "sa", true)
	expectSubjects(t, ns, "sa")
	g.Expect(k8s.Delete(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	expectNoBinding(t, ns)
}

// TestOrphanedBindingIsDeleted checks that a binding for a namespace that no
// longer exists (e.g. deleted while the operator was down) is removed.
func TestOrphanedBindingIsDeleted(t *testing.T) {
	g := NewWithT(t)
	orphan := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{
			Name: sidecarrbac.BindingName("gone"),
			Labels: map[string]string{
				kalpcv1alpha1.LabelManagedBy:     sidecarrbac.ManagedByValue,
				kalpcv1alpha1.LabelRBACNamespace: "gone",
			},
		},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kalpc-sidecar"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "sa", Namespace: "gone"}},
	}
	g.Expect(k8s.Create(t.Context(), orphan)).To(Succeed())
	expectNoBinding(t, "gone")
}

// TestBindingsOwnedByClusterRole checks that every binding is owned by the
// sidecar ClusterRole, so that deleting the ClusterRole (helm uninstall)
// lets Kubernetes' garbage collector delete the bindings. envtest runs no
// garbage collector: test/e2e checks the collection itself.
func TestBindingsOwnedByClusterRole(t *testing.T) {
	g := NewWithT(t)
	ctx := t.Context()
	ns := newNamespace(t)
	pod(t, ns, "a", "server-sa", true)
	expectSubjects(t, ns, "server-sa")

	role := &rbacv1.ClusterRole{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: "kalpc-sidecar"}, role)).To(Succeed())
	want := []metav1.OwnerReference{{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "kalpc-sidecar", UID: role.UID}}
	owners := func(g Gomega) []metav1.OwnerReference {
		crb := &rbacv1.ClusterRoleBinding{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Name: sidecarrbac.BindingName(ns)}, crb)).To(Succeed())
		return crb.OwnerReferences
	}
	g.Expect(owners(g)).To(Equal(want))

	// A binding that lost its owner reference (removed by hand, or made by
	// an operator before owner references) gets it back.
	crb := &rbacv1.ClusterRoleBinding{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: sidecarrbac.BindingName(ns)}, crb)).To(Succeed())
	patch := client.MergeFrom(crb.DeepCopy())
	crb.OwnerReferences = []metav1.OwnerReference{{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "kalpc-sidecar", UID: "0000-stale"}}
	g.Expect(k8s.Patch(ctx, crb, patch)).To(Succeed())
	g.Eventually(owners).WithTimeout(timeout).WithPolling(interval).Should(Equal(want))
}

// TestNoBindingWithoutClusterRole checks that a Reconciler whose
// ClusterRole does not exist binds nothing and says why.
func TestNoBindingWithoutClusterRole(t *testing.T) {
	ns := newNamespace(t)
	pod(t, ns, "a", "server-sa", true)
	r := &sidecarrbac.Reconciler{Client: k8s, Reader: k8s, ClusterRoleName: "kalpc-sidecar-missing"}
	_, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: client.ObjectKey{Name: ns}})
	if err == nil || !strings.Contains(err.Error(), `the sidecar ClusterRole "kalpc-sidecar-missing" does not exist`) {
		t.Fatalf("Reconcile without the ClusterRole: %v", err)
	}
}

func newNamespace(t *testing.T) string {
	return testenv.Namespace(t, k8s, "rbac", nil)
}

// pod creates a pod running as serviceAccount, injected when sidecar is set.
func pod(t *testing.T, namespace, name, serviceAccount string, sidecar bool) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{
			ServiceAccountName: serviceAccount,
			Containers:         []corev1.Container{{Name: "app", Image: "example/app"}},
		},
	}
	if sidecar {
		p.Labels = map[string]string{kalpcv1alpha1.LabelSidecar: kalpcv1alpha1.LabelSidecarInjected}
		p.Spec.InitContainers = []corev1.Container{{Name: inject.SidecarName, Image: "example/sidecar", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}}
	}
	if err := k8s.Create(t.Context(), p); err != nil {
		t.Fatalf("failed to create pod %s: %v", name, err)
	}
	return p
}

// as returns a client that impersonates ServiceAccount namespace/name.
func as(t *testing.T, namespace, name string) client.Client {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	cl, err := client.New(c, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// expectSubjects waits until the namespace's binding names exactly accounts.
func expectSubjects(t *testing.T, namespace string, accounts ...string) {
	t.Helper()
	var want []rbacv1.Subject
	for _, a := range accounts {
		want = append(want, rbacv1.Subject{Kind: "ServiceAccount", Name: a, Namespace: namespace})
	}
	NewWithT(t).Eventually(func(g Gomega) {
		crb := &rbacv1.ClusterRoleBinding{}
		g.Expect(k8s.Get(t.Context(), client.ObjectKey{Name: sidecarrbac.BindingName(namespace)}, crb)).To(Succeed())
		g.Expect(crb.Subjects).To(Equal(want))
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
}

// expectNoBinding waits until the namespace's binding is gone.
func expectNoBinding(t *testing.T, namespace string) {
	t.Helper()
	NewWithT(t).Eventually(func() error {
		return k8s.Get(t.Context(), client.ObjectKey{Name: sidecarrbac.BindingName(namespace)}, &rbacv1.ClusterRoleBinding{})
	}).WithTimeout(timeout).WithPolling(interval).Should(Satisfy(apierrors.IsNotFound))
}
