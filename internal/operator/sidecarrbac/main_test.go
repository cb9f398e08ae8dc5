package sidecarrbac_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kalpc/kalpc/internal/operator/sidecarrbac"
	"github.com/kalpc/kalpc/internal/testenv"
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
	env, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Stop()
	cfg, scheme, k8s = env.Config, env.Scheme, env.Client
	if err := installSidecarRole(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return env.RunWithManager(m, func(mgr ctrl.Manager) error {
		return (&sidecarrbac.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr)
	})
}

// installSidecarRole creates the ClusterRole from config/rbac, as the chart
// would.
func installSidecarRole() error {
	data, err := os.ReadFile(testenv.Repo("config", "rbac", "sidecar_role.yaml"))
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
