package chart_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// networkPolicyValues turns every NetworkPolicy knob.
const networkPolicyValues = `
networkPolicy:
  enabled: true
  webhookFrom: [{ipBlock: {cidr: 10.0.0.0/24}}]
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
  operatorEgress: [{to: [{ipBlock: {cidr: 10.0.0.1/32}}], ports: [{protocol: TCP, port: 6443}]}]
  nodePrepEgress: [{to: [{ipBlock: {cidr: 10.0.0.1/32}}], ports: [{protocol: TCP, port: 6443}]}]
`

func tcpPort(p int) []networkingv1.NetworkPolicyPort {
	return []networkingv1.NetworkPolicyPort{{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt(p))}}
}

// checkNetworkPolicies checks the two policies as networkPolicyValues sets
// them: the operator's pods accept only the webhook and metrics ports (from
// the given peers), the node pods nothing in, and in csi mode (the default)
// reach only nodePrepEgress (their CSI driver reads pods from the API server).
func checkNetworkPolicies(t *testing.T, op, np *networkingv1.NetworkPolicy, operatorPods, nodePrepPods map[string]string) {
	t.Helper()
	want := networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: operatorPods},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{
			{Ports: tcpPort(9443), From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/24"}}}},
			{Ports: tcpPort(8443), From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}}},
		},
		Egress: []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.1/32"}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt(6443))}},
		}},
	}
	if diff := cmp.Diff(want, op.Spec); diff != "" {
		t.Errorf("operator NetworkPolicy (-want +got):\n%s", diff)
	}
	wantNP := networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: nodePrepPods},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		Egress:      want.Egress,
	}
	if diff := cmp.Diff(wantNP, np.Spec); diff != "" {
		t.Errorf("nodeprep NetworkPolicy (-want +got):\n%s", diff)
	}
}

func TestNetworkPolicies(t *testing.T) {
	// Off by default.
	r := render(t, nil)
	if r.find("NetworkPolicy", "kalpc-operator") != nil || r.find("NetworkPolicy", "kalpc-nodeprep") != nil {
		t.Errorf("NetworkPolicies rendered by default: %v", r.kinds())
	}

	r = render(t, values(t, networkPolicyValues))
	op := get[networkingv1.NetworkPolicy](t, r, "NetworkPolicy", "kalpc-operator")
	np := get[networkingv1.NetworkPolicy](t, r, "NetworkPolicy", "kalpc-nodeprep")
	dep := get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator")
	ds := get[appsv1.DaemonSet](t, r, "DaemonSet", "kalpc-nodeprep")
	checkNetworkPolicies(t, op, np, dep.Spec.Selector.MatchLabels, ds.Spec.Selector.MatchLabels)
	// Defaults of the peers: any source, egress open.
	r = render(t, values(t, "networkPolicy: {enabled: true}\nmetrics: {enabled: false}"))
	op = get[networkingv1.NetworkPolicy](t, r, "NetworkPolicy", "kalpc-operator")
	wantIngress := []networkingv1.NetworkPolicyIngressRule{{Ports: tcpPort(9443)}}
	if diff := cmp.Diff(wantIngress, op.Spec.Ingress); diff != "" || len(op.Spec.PolicyTypes) != 1 || op.Spec.Egress != nil {
		t.Errorf("operator policy without metrics and egress: types %v, egress %v, ingress (-want +got):\n%s", op.Spec.PolicyTypes, op.Spec.Egress, diff)
	}
	// csi mode without nodePrepEgress: nothing in, egress open (the
	// driver must reach the API server); hostPath mode: nothing in or out.
	for mode, wantTypes := range map[string][]networkingv1.PolicyType{
		"csi":      {networkingv1.PolicyTypeIngress},
		"hostPath": {networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
	} {
		r = render(t, values(t, "networkPolicy: {enabled: true}\nsidecar: {nodeVolume: "+mode+"}"))
		np = get[networkingv1.NetworkPolicy](t, r, "NetworkPolicy", "kalpc-nodeprep")
		if diff := cmp.Diff(wantTypes, np.Spec.PolicyTypes); diff != "" || np.Spec.Ingress != nil || np.Spec.Egress != nil {
			t.Errorf("%s mode: nodeprep policy ingress %v, egress %v, types (-want +got):\n%s", mode, np.Spec.Ingress, np.Spec.Egress, diff)
		}
	}
	// No node preparation, no policy for it.
	r = render(t, values(t, "networkPolicy: {enabled: true}\nnodePrep: {enabled: false}\nsidecar: {nodeVolume: hostPath}"))
	if r.find("NetworkPolicy", "kalpc-nodeprep") != nil {
		t.Errorf("nodePrep.enabled=false still renders its NetworkPolicy")
	}
}

// TestInstallNetworkPolicies installs the chart with NetworkPolicies into a
// real API server (which validates them), checks what it holds, and turns
// them off with an upgrade.
func TestInstallNetworkPolicies(t *testing.T) {
	e := startAPIServer(t)
	ctx := t.Context()
	e.install(t, values(t, networkPolicyValues))
	var op, np networkingv1.NetworkPolicy
	var dep appsv1.Deployment
	var ds appsv1.DaemonSet
	for key, obj := range map[string]client.Object{"kalpc-operator": &op, "kalpc-nodeprep": &np} {
		if err := e.k8s.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: key}, obj); err != nil {
			t.Fatalf("NetworkPolicy %s after install: %v", key, err)
		}
	}
	if err := e.k8s.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "kalpc-operator"}, &dep); err != nil {
		t.Fatal(err)
	}
	if err := e.k8s.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "kalpc-nodeprep"}, &ds); err != nil {
		t.Fatal(err)
	}
	checkNetworkPolicies(t, &op, &np, dep.Spec.Selector.MatchLabels, ds.Spec.Selector.MatchLabels)
	if sc := ds.Spec.Template.Spec.Containers[0].SecurityContext; ptr.Deref(sc.RunAsUser, -1) != 0 || ptr.Deref(sc.RunAsGroup, 0) != 65534 {
		t.Errorf("nodeprep runs as %v:%v, want 0:65534", ptr.Deref(sc.RunAsUser, -1), ptr.Deref(sc.RunAsGroup, -1))
	}

	// (Helm reuses the last values when an upgrade passes none.)
	e.upgrade(t, values(t, "networkPolicy: {enabled: false}"))
	for _, name := range []string{"kalpc-operator", "kalpc-nodeprep"} {
		if err := e.k8s.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: name}, &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
			t.Errorf("NetworkPolicy %s after an upgrade turning them off: %v, want NotFound", name, err)
		}
	}
	e.uninstall(t)
}
