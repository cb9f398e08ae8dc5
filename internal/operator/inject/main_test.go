package inject_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kalpc/kalpc/internal/operator"
	"github.com/kalpc/kalpc/internal/operator/inject"
	"github.com/kalpc/kalpc/internal/testenv"
)

// operatorNamespace is the operator's namespace in these tests, as in
// config/webhook.
const operatorNamespace = "kalpc-system"

var (
	env    *envtest.Environment
	cfg    *rest.Config
	scheme *runtime.Scheme
	k8s    client.Client
)

func TestMain(m *testing.M) {
	os.Exit(runWithAPIServer(m))
}

// runWithAPIServer starts one API server for the package, with the
// generated MutatingWebhookConfiguration pointed at a local port; tests start
// and stop the webhook server on that port.
func runWithAPIServer(m *testing.M) int {
	te, err := testenv.Start(func(e *envtest.Environment) {
		e.WebhookInstallOptions = envtest.WebhookInstallOptions{Paths: []string{testenv.Repo("config", "webhook")}}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer te.Stop()
	env, cfg, scheme, k8s = te.Environment, te.Config, te.Scheme, te.Client
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		fmt.Fprintln(os.Stderr, "failed to create the operator namespace:", err)
		return 1
	}
	return m.Run()
}

// sidecarConfig is the injection config of these tests.
func sidecarConfig() inject.Config {
	return inject.Config{
		Image:             "registry.example/kalpc/sidecar:test",
		LogLevel:          "debug",
		OperatorNamespace: operatorNamespace,
	}
}

// startWebhook runs the operator's webhook server, as cmd/operator wires it,
// until the test ends.
func startWebhook(t *testing.T, sidecar inject.Config) {
	t.Helper()
	opts := env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Cache:   operator.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"},
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    opts.LocalServingHost,
			Port:    opts.LocalServingPort,
			CertDir: opts.LocalServingCertDir,
		}),
	})
	if err != nil {
		t.Fatalf("failed to create manager: %v", err)
	}
	injector, err := inject.New(sidecar, mgr.GetClient())
	if err != nil {
		t.Fatal(err)
	}
	if err := injector.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager stopped with error: %v", err)
		}
	})
	waitForTLS(t, net.JoinHostPort(opts.LocalServingHost, strconv.Itoa(opts.LocalServingPort)))
}

// waitForTLS waits until a TLS server answers at addr.
func waitForTLS(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only probing that the server is up
		if err == nil {
			_ = conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook server at %s did not come up: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// newNamespace creates a namespace with labels, deleted when the test ends.
func newNamespace(t *testing.T, labels map[string]string) string {
	return testenv.Namespace(t, k8s, "inject", labels)
}

// appPod returns a pod with two app containers and an init container.
func appPod(namespace string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: new(bool),
			InitContainers:               []corev1.Container{{Name: "setup", Image: "busybox"}},
			Containers: []corev1.Container{
				{Name: "server", Image: "example/server", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}},
				{Name: "helper", Image: "example/helper", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}},
			},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
}

// createPod creates pod and returns what the API server stored.
func createPod(t *testing.T, pod *corev1.Pod) (*corev1.Pod, error) {
	t.Helper()
	err := k8s.Create(t.Context(), pod)
	if err == nil {
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), pod) })
	}
	var status interface{ Status() metav1.Status }
	if errors.As(err, &status) {
		return nil, fmt.Errorf("%w (reason %s)", err, status.Status().Reason)
	}
	return pod, err
}
