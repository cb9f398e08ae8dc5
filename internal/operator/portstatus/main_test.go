package portstatus_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/operator"
	"github.com/kalpc/kalpc/internal/operator/inject"
	"github.com/kalpc/kalpc/internal/operator/portstatus"
)

// k8s is a direct (uncached) client of the package's API server.
var k8s client.Client

func TestMain(m *testing.M) {
	os.Exit(runWithOperator(m))
}

// runWithOperator starts one API server and one manager running the
// Reconciler, shared by the package's tests.
func runWithOperator(m *testing.M) int {
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to start envtest (set KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh)):", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "failed to stop envtest:", err)
		}
	}()
	scheme, err := operator.NewScheme()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "failed to create client:", err)
		return 1
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  operator.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to create manager:", err)
		return 1
	}
	r := &portstatus.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kalpc-operator")}
	if err := r.SetupWithManager(mgr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager stopped with error:", err)
		return 1
	}
	return code
}

// newNamespace creates a namespace deleted when the test ends.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "portstatus-"}}
	if err := k8s.Create(t.Context(), ns); err != nil {
		t.Fatalf("failed to create namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	return ns.Name
}

// serverPod creates a pod as the scheduler leaves it: bound to node, with
// labels, and with the sidecar as the webhook injects it when sidecar is set.
func serverPod(t *testing.T, namespace, name, node string, labels map[string]string, sidecar bool) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "example/app"}},
		},
	}
	for k, v := range labels {
		pod.Labels[k] = v
	}
	if sidecar {
		pod.Labels[kalpcv1alpha1.LabelSidecar] = kalpcv1alpha1.LabelSidecarInjected
		pod.Spec.InitContainers = []corev1.Container{{
			Name: inject.SidecarName, Image: "example/sidecar",
			RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		}}
	}
	if err := k8s.Create(t.Context(), pod); err != nil {
		t.Fatalf("failed to create pod %s: %v", name, err)
	}
	return pod
}

// setPodStatus writes pod status as the kubelet would.
func setPodStatus(t *testing.T, pod *corev1.Pod, phase corev1.PodPhase, ready bool) {
	t.Helper()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase:     phase,
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: status, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: status, LastTransitionTime: now},
		},
	}
	if err := k8s.Status().Update(t.Context(), pod); err != nil {
		t.Fatalf("failed to update status of pod %s: %v", pod.Name, err)
	}
}
