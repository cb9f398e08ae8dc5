package portstatus_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

const (
	timeout  = 20 * time.Second
	interval = 50 * time.Millisecond
)

// TestStatusConverges drives a port's server pods through their life as a
// kubelet would report it and checks the status the Reconciler writes.
func TestStatusConverges(t *testing.T) {
	g := NewWithT(t)
	ctx := t.Context()
	ns := newNamespace(t)

	port := &kalpcv1alpha1.ConnectionPort{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: kalpcv1alpha1.ConnectionPortSpec{
			Servers: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}},
		},
	}
	g.Expect(k8s.Create(ctx, port)).To(Succeed())

	// No servers yet: Ready is False.
	expectStatus(t, port, func(g Gomega, st kalpcv1alpha1.ConnectionPortStatus) {
		c := meta.FindStatusCondition(st.Conditions, kalpcv1alpha1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(kalpcv1alpha1.ReasonNoReadyServers))
		g.Expect(st.ObservedGeneration).To(Equal(int64(1)))
	})
	// The stored status says 0 (kubectl's SERVERS READY and NODES columns
	// show 0, not an empty cell).
	g.Eventually(func(g Gomega) {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(kalpcv1alpha1.GroupVersion.WithKind("ConnectionPort"))
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(port), u)).To(Succeed())
		for _, f := range []string{"readyServers", "nodes"} {
			v, found, err := unstructured.NestedInt64(u.Object, "status", f)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(found).To(BeTrue(), "status.%s is not stored", f)
			g.Expect(v).To(BeZero())
		}
	}, timeout, interval).Should(Succeed())

	echo := map[string]string{"app": "echo"}
	a1 := serverPod(t, ns, "a1", "node-a", echo, true)
	a2 := serverPod(t, ns, "a2", "node-a", echo, true)
	b1 := serverPod(t, ns, "b1", "node-b", echo, true)
	noSidecar := serverPod(t, ns, "no-sidecar", "node-a", echo, false)
	other := serverPod(t, ns, "other", "node-c", map[string]string{"app": "other"}, true)
	pending := serverPod(t, ns, "pending", "node-c", echo, true)
	for _, p := range []*corev1.Pod{a1, a2, b1, noSidecar, other} {
		setPodStatus(t, p, corev1.PodRunning, true)
	}
	setPodStatus(t, pending, corev1.PodPending, false)

	expectStatus(t, port, func(g Gomega, st kalpcv1alpha1.ConnectionPortStatus) {
		g.Expect(st.Endpoints).To(Equal([]kalpcv1alpha1.NodeEndpoints{
			{NodeName: "node-a", Pods: []kalpcv1alpha1.EndpointPod{
				{Name: "a1", UID: a1.UID, Ready: true}, {Name: "a2", UID: a2.UID, Ready: true},
			}},
			{NodeName: "node-b", Pods: []kalpcv1alpha1.EndpointPod{{Name: "b1", UID: b1.UID, Ready: true}}},
		}))
		g.Expect(st.ReadyServers).To(Equal(int32(3)))
		g.Expect(st.Nodes).To(Equal(int32(2)))
		c := meta.FindStatusCondition(st.Conditions, kalpcv1alpha1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(c.Reason).To(Equal(kalpcv1alpha1.ReasonServersReady))
		g.Expect(c.Message).To(Equal("3 of 3 server endpoints ready on 2 nodes"))
	})
	expectEvent(t, ns, "echo", kalpcv1alpha1.ReasonServersReady)

	// b1 stops being ready: it stays an endpoint, node-b no longer counts.
	setPodStatus(t, b1, corev1.PodRunning, false)
	expectStatus(t, port, func(g Gomega, st kalpcv1alpha1.ConnectionPortStatus) {
		g.Expect(st.Endpoints).To(HaveLen(2))
		g.Expect(st.Endpoints[1].Pods).To(Equal([]kalpcv1alpha1.EndpointPod{{Name: "b1", UID: b1.UID, Ready: false}}))
		g.Expect(st.ReadyServers).To(Equal(int32(2)))
		g.Expect(st.Nodes).To(Equal(int32(1)))
	})

	// a1 loses its label: it leaves the port.
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(a1), a1)).To(Succeed())
	a1.Labels["app"] = "moved"
	g.Expect(k8s.Update(ctx, a1)).To(Succeed())
	// a2 is deleted.
	g.Expect(k8s.Delete(ctx, a2, client.GracePeriodSeconds(0))).To(Succeed())
	expectStatus(t, port, func(g Gomega, st kalpcv1alpha1.ConnectionPortStatus) {
		g.Expect(st.Endpoints).To(Equal([]kalpcv1alpha1.NodeEndpoints{
			{NodeName: "node-b", Pods: []kalpcv1alpha1.EndpointPod{{Name: "b1", UID: b1.UID, Ready: false}}},
		}))
		g.Expect(st.ReadyServers).To(BeZero())
		g.Expect(st.Nodes).To(BeZero())
		c := meta.FindStatusCondition(st.Conditions, kalpcv1alpha1.ConditionReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Message).To(Equal("none of 1 server endpoints is ready"))
	})
	expectEvent(t, ns, "echo", kalpcv1alpha1.ReasonNoReadyServers)

	// A spec change is observed.
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(port), port)).To(Succeed())
	port.Spec.Servers = kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "moved"}}
	g.Expect(k8s.Update(ctx, port)).To(Succeed())
	expectStatus(t, port, func(g Gomega, st kalpcv1alpha1.ConnectionPortStatus) {
		g.Expect(st.ObservedGeneration).To(Equal(int64(2)))
		g.Expect(st.Endpoints).To(Equal([]kalpcv1alpha1.NodeEndpoints{
			{NodeName: "node-a", Pods: []kalpcv1alpha1.EndpointPod{{Name: "a1", UID: a1.UID, Ready: true}}},
		}))
		g.Expect(meta.IsStatusConditionTrue(st.Conditions, kalpcv1alpha1.ConditionReady)).To(BeTrue())
	})
}

// TestInvalidSelector checks that a port whose spec.servers the operator
// cannot parse is reported in the Ready condition. The CRD refuses such a
// selector at admission, so only a port stored before it did (by an older
// kalpc) has one: the test stores it while the CRD's key rule is removed.
func TestInvalidSelector(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	port := &kalpcv1alpha1.ConnectionPort{
		ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns},
		Spec: kalpcv1alpha1.ConnectionPortSpec{Servers: kalpcv1alpha1.LabelSelector{
			MatchExpressions: []kalpcv1alpha1.LabelSelectorRequirement{{Key: "not a label key!", Operator: metav1.LabelSelectorOpExists}},
		}},
	}
	g.Expect(k8s.Create(t.Context(), port, client.DryRunAll)).To(MatchError(ContainSubstring("key must be a label key")))
	withoutServersKeyRule(t, func() {
		g.Expect(k8s.Create(t.Context(), port)).To(Succeed())
	})
	expectStatus(t, port, func(g Gomega, st kalpcv1alpha1.ConnectionPortStatus) {
		c := meta.FindStatusCondition(st.Conditions, kalpcv1alpha1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(kalpcv1alpha1.ReasonInvalidServerSelector))
		g.Expect(c.Message).To(ContainSubstring("spec.servers is not a valid label selector"))
	})
	expectEvent(t, ns, "bad", kalpcv1alpha1.ReasonInvalidServerSelector)
}

// withoutServersKeyRule runs create while the ConnectionPort CRD lacks the
// rule on spec.servers' matchExpressions keys, as an older CRD did; it
// waits until the API server uses each version of the CRD.
func withoutServersKeyRule(t *testing.T, create func()) {
	t.Helper()
	g := NewWithT(t)
	crd := &unstructured.Unstructured{}
	crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
	key := client.ObjectKey{Name: "connectionports.kalpc.io"}
	g.Expect(k8s.Get(t.Context(), key, crd)).To(Succeed())
	original, _, err := unstructured.NestedFieldCopy(crd.Object, "spec")
	g.Expect(err).NotTo(HaveOccurred())

	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	g.Expect(versions).To(HaveLen(1))
	v := versions[0].(map[string]any)
	path := []string{"schema", "openAPIV3Schema", "properties", "spec", "properties", "servers", "properties",
		"matchExpressions", "items", "properties", "key", "x-kubernetes-validations"}
	_, found, _ := unstructured.NestedSlice(v, path...)
	g.Expect(found).To(BeTrue(), "the CRD has no rule at %v", path)
	unstructured.RemoveNestedField(v, path...)
	g.Expect(unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions")).To(Succeed())
	g.Expect(k8s.Update(t.Context(), crd)).To(Succeed())

	restored := false
	restore := func() {
		if restored {
			return
		}
		restored = true
		g.Eventually(func(g Gomega) {
			g.Expect(k8s.Get(t.Context(), key, crd)).To(Succeed())
			g.Expect(unstructured.SetNestedField(crd.Object, original, "spec")).To(Succeed())
			g.Expect(k8s.Update(t.Context(), crd)).To(Succeed())
		}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	}
	defer restore()

	// The API server validates with the CRD it has read from its watch.
	probe := &kalpcv1alpha1.ConnectionPort{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "default"},
		Spec: kalpcv1alpha1.ConnectionPortSpec{Servers: kalpcv1alpha1.LabelSelector{
			MatchExpressions: []kalpcv1alpha1.LabelSelectorRequirement{{Key: "not a label key!", Operator: metav1.LabelSelectorOpExists}},
		}},
	}
	g.Eventually(func() error {
		return k8s.Create(t.Context(), probe.DeepCopy(), client.DryRunAll)
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
	create()
	restore()
	g.Eventually(func() error {
		return k8s.Create(t.Context(), probe.DeepCopy(), client.DryRunAll)
	}).WithTimeout(timeout).WithPolling(interval).Should(MatchError(ContainSubstring("key must be a label key")))
}

// expectStatus waits until port's status satisfies check.
func expectStatus(t *testing.T, port *kalpcv1alpha1.ConnectionPort, check func(Gomega, kalpcv1alpha1.ConnectionPortStatus)) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		got := &kalpcv1alpha1.ConnectionPort{}
		g.Expect(k8s.Get(t.Context(), client.ObjectKeyFromObject(port), got)).To(Succeed())
		check(g, got.Status)
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
}

// expectEvent waits for an event with reason about the port name.
func expectEvent(t *testing.T, namespace, name, reason string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		var events eventsv1.EventList
		g.Expect(k8s.List(t.Context(), &events, client.InNamespace(namespace))).To(Succeed())
		var seen []string
		for _, e := range events.Items {
			if e.Regarding.Name == name && e.Regarding.Kind == "ConnectionPort" {
				seen = append(seen, e.Reason)
			}
		}
		g.Expect(seen).To(ContainElement(reason), cmp.Diff(nil, seen))
	}).WithTimeout(timeout).WithPolling(interval).Should(Succeed())
}
