package operator

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/operator/inject"
	"github.com/kalpc/kalpc/internal/operator/portstatus"
	"github.com/kalpc/kalpc/internal/operator/sidecarrbac"
	"github.com/kalpc/kalpc/internal/operator/sidecarrbac/sidecarrole"
)

// Options are the operator's settings that Setup needs.
type Options struct {
	// Namespace is the operator's own namespace. Required.
	Namespace string

	// Sidecar describes the injected sidecar. Its OperatorNamespace defaults
	// to Namespace.
	Sidecar inject.Config

	// SidecarClusterRole is the ClusterRole bound to the sidecars'
	// ServiceAccounts. Defaults to kalpc-sidecar.
	SidecarClusterRole string

	// EventRecorderName is the reporting controller of the operator's events.
	// Defaults to "kalpc-operator".
	EventRecorderName string
}

// NewScheme returns a scheme with the Kubernetes built-in types and kalpc's.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("failed to add Kubernetes types to the scheme: %w", err)
	}
	if err := kalpcv1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("failed to add kalpc types to the scheme: %w", err)
	}
	return s, nil
}

// CacheOptions returns the manager cache settings the operator's controllers
// are written for: see the package documentation.
func CacheOptions() cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{
				kalpcv1alpha1.LabelSidecar: kalpcv1alpha1.LabelSidecarInjected,
			})},
			&rbacv1.ClusterRoleBinding{}: {Label: labels.SelectorFromSet(labels.Set{
				kalpcv1alpha1.LabelManagedBy: sidecarrbac.ManagedByValue,
			})},
		},
	}
}

// Setup adds the reconcilers and the injection webhook to mgr. The
// certificate rotator, when used, is set up separately because it must be
// created before the manager (see package cert).
func Setup(mgr manager.Manager, opts Options) error {
	if opts.Namespace == "" {
		return errors.New("operator namespace is required")
	}
	if opts.Sidecar.OperatorNamespace == "" {
		opts.Sidecar.OperatorNamespace = opts.Namespace
	}
	if opts.SidecarClusterRole == "" {
		opts.SidecarClusterRole = sidecarrole.Name
	}
	if opts.EventRecorderName == "" {
		opts.EventRecorderName = "kalpc-operator"
	}

	status := &portstatus.Reconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder(opts.EventRecorderName),
	}
	if err := status.SetupWithManager(mgr); err != nil {
		return err
	}
	rbac := &sidecarrbac.Reconciler{Client: mgr.GetClient(), ClusterRoleName: opts.SidecarClusterRole}
	if err := rbac.SetupWithManager(mgr); err != nil {
		return err
	}
	injector, err := inject.New(opts.Sidecar, mgr.GetClient())
	if err != nil {
		return err
	}
	return injector.SetupWithManager(mgr)
}
