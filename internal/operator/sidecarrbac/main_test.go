package sidecarrbac_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/kalpc/kalpc/internal/operator"
	"github.com/kalpc/kalpc/internal/operator/sidecarrbac"
)

var (
	cfg    *rest.Config
	scheme *runtime.Scheme
	k8s    client.Client
)

func TestMain(m *testing.M) {
	os.Exit(runWithOperator(m))
}

// runWithOperator starts one API server with the CRDs and the shipped
// kalpc-sidecar ClusterRole, and one manager running the Reconciler.
func runWithOperator(m *testing.M) int {
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "failed to start envtest (set KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh)):", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "failed to stop envtest:", err)
		}
	}()
	if scheme, err = operator.NewScheme(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		fmt.Fprintln(os.Stderr, "failed to create client:", err)
		return 1
	}
	if err := installSidecarRole(); err != nil {
		fmt.Fprintln(os.Stderr, err)
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
	if err := (&sidecarrbac.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
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

// installSidecarRole creates the ClusterRole from config/rbac, as the chart
// would.
func installSidecarRole() error {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "rbac", "sidecar_role.yaml"))
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		return fmt.Errorf("failed to decode sidecar_role.yaml: %w", err)
	}
	if err := k8s.Create(context.Background(), role); err != nil {
		return fmt.Errorf("failed to create the sidecar ClusterRole: %w", err)
	}
	return nil
}
