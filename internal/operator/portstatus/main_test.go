package portstatus_test

import (
	"fmt"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/operator/inject"
	"github.com/kalpc/kalpc/internal/operator/portstatus"
	"github.com/kalpc/kalpc/internal/testenv"
)

// k8s is a direct (uncached) client of the package's API server.
var k8s client.Client

func TestMain(m *testing.M) {
	os.Exit(runWithOperator(m))
}

// runWithOperator starts one API server and one manager running the
// Reconciler, shared by the package's tests.
func runWithOperator(m *testing.M) int {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop()
	k8s = env.Client
	return env.RunWithManager(m, func(mgr ctrl.Manager) error {
		r := &portstatus.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kalpc-operator")}
		return r.SetupWithManager(mgr)
	})
}

// newNamespace creates a namespace deleted when the test ends.
func newNamespace(t *testing.T) string {
	return testenv.Namespace(t, k8s, "portstatus", nil)
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
