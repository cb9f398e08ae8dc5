package plugin_test

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/operator/portstatus"
	"github.com/kalpc/kalpc/internal/plugin"
	"github.com/kalpc/kalpc/internal/testenv"
)

var (
	// k8s is a direct client of the package's API server.
	k8s client.Client
	// kubeconfigPath is a kubeconfig for that API server, as a user has.
	kubeconfigPath string
)

// TestMain starts one API server and the operator's real ConnectionPort
// status reconciler (which writes status and records events), shared by the
// package's tests.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop()
	k8s = env.Client
	dir, err := os.MkdirTemp("", "kalpc-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if kubeconfigPath, err = env.AdminKubeconfig("kalpc-plugin-test", dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return env.RunWithManager(m, func(mgr ctrl.Manager) error {
		r := &portstatus.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kalpc-operator")}
		return r.SetupWithManager(mgr)
	})
}

// kubectlKalpc runs the plugin with args (and the test kubeconfig) and
// returns its standard output and error.
func kubectlKalpc(t *testing.T, opts plugin.Options, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	opts.IOStreams = genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	if opts.Now == nil {
		opts.Now = func() time.Time { return time.Now().Add(10 * time.Minute) }
	}
	cmd := plugin.NewCommand(opts)
	cmd.SetArgs(append(args, "--kubeconfig", kubeconfigPath))
	err = cmd.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

// mustRun is kubectlKalpc for a command that must succeed.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := kubectlKalpc(t, plugin.Options{}, args...)
	if err != nil {
		t.Fatalf("kubectl kalpc %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// newNamespace creates a namespace deleted when the test ends.
func newNamespace(t *testing.T) string {
	return testenv.Namespace(t, k8s, "plugin", nil)
}

// serverPod creates an injected server pod bound to node, running, and
// ready or not, as the webhook, the scheduler and the kubelet leave it.
func serverPod(t *testing.T, namespace, name, node string, labels map[string]string, ready bool) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{kalpcv1alpha1.LabelSidecar: kalpcv1alpha1.LabelSidecarInjected}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "example/app"}},
			InitContainers: []corev1.Container{{
				Name: kalpcv1alpha1.SidecarContainerName, Image: "example/sidecar",
				RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
				Ports: []corev1.ContainerPort{
					{Name: kalpcv1alpha1.SidecarHealthPortName, ContainerPort: 15980},
					{Name: kalpcv1alpha1.SidecarMetricsPortName, ContainerPort: 15981},
				},
			}},
		},
	}
	for k, v := range labels {
		pod.Labels[k] = v
	}
	if err := k8s.Create(t.Context(), pod); err != nil {
		t.Fatalf("failed to create pod %s: %v", name, err)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: status, LastTransitionTime: now},
		},
	}
	if err := k8s.Status().Update(t.Context(), pod); err != nil {
		t.Fatalf("failed to set the status of pod %s: %v", name, err)
	}
	return pod
}
