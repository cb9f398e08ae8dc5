// Package testenv starts the real Kubernetes API server (kube-apiserver and
// etcd through controller-runtime's envtest) that a package's tests share,
// with kalpc's CRDs installed, and runs controllers against it. It is for
// tests only: the binaries come from hack/envtest-bins.sh
// (KUBEBUILDER_ASSETS), and every failure is an error for TestMain to
// report.
//
//	func TestMain(m *testing.M) { os.Exit(run(m)) }
//
//	func run(m *testing.M) int {
//		env, err := testenv.Start()
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			return 1
//		}
//		defer env.Stop()
//		return env.RunWithManager(m, func(mgr ctrl.Manager) error { ... })
//	}
package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kalpc/kalpc/internal/operator"
)

// Env is a running API server with kalpc's CRDs.
type Env struct {
	*envtest.Environment
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Scheme is the operator's scheme: client-go's types and kalpc's API.
	Scheme *kruntime.Scheme
	// Client is a direct (uncached) client.
	Client client.Client
}

// Repo returns the path of a file or directory of this repository, given
// relative to its root.
func Repo(elem ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", ".."}, elem...)...)
}

// Start starts the API server with the CRDs of config/crd/bases; each
// option may change the envtest.Environment first (webhooks, more CRDs).
func Start(options ...func(*envtest.Environment)) (*Env, error) {
	e := &Env{Environment: &envtest.Environment{
		CRDDirectoryPaths:     []string{Repo("config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}}
	for _, o := range options {
		o(e.Environment)
	}
	cfg, err := e.Start()
	if err != nil {
		return nil, fmt.Errorf("failed to start envtest (set KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh)): %w", err)
	}
	e.Config = cfg
	if e.Scheme, err = operator.NewScheme(); err == nil {
		e.Client, err = client.New(cfg, client.Options{Scheme: e.Scheme})
	}
	if err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

// Stop stops the API server, reporting a failure on stderr.
func (e *Env) Stop() {
	if err := e.Environment.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "failed to stop envtest:", err)
	}
}

// RunWithManager runs the package's tests (m) while a controller-runtime
// manager runs what setup registers on it, configured as the operator
// configures its own (scheme, cache; no metrics or health listeners). It
// returns the exit code for TestMain: m's, or 1 if the manager failed.
func (e *Env) RunWithManager(m *testing.M, setup func(ctrl.Manager) error) int {
	mgr, err := ctrl.NewManager(e.Config, ctrl.Options{
		Scheme:                 e.Scheme,
		Cache:                  operator.CacheOptions(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err == nil {
		err = setup(mgr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to set up the manager:", err)
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

// AdminKubeconfig writes a kubeconfig for a new cluster-admin user named
// user into dir, as a user of the cluster would have, and returns its path.
func (e *Env) AdminKubeconfig(user, dir string) (string, error) {
	u, err := e.AddUser(envtest.User{Name: user, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", err
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, kc, 0o600)
}

// Namespace creates a namespace named prefix-<random>, with labels, through
// c, and deletes it when the test ends.
func Namespace(t testing.TB, c client.Client, prefix string, labels map[string]string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: labels}}
	if err := c.Create(t.Context(), ns); err != nil {
		t.Fatalf("failed to create namespace: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ns) })
	return ns.Name
}
