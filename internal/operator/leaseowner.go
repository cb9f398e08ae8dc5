package operator

import (
	"context"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/kalpc/kalpc/internal/operator/cert"
	"github.com/kalpc/kalpc/internal/operator/ownerref"
)

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get,resourceNames=kalpc-sidecar-injector

// leaseOwnerInterval is how often the leader checks its Lease's owner.
const leaseOwnerInterval = time.Minute

// LeaseOwner makes the webhook configuration the owner of the leader
// election Lease, so that Kubernetes' garbage collector deletes the Lease
// with the configuration (helm uninstall). client-go creates the Lease
// without owner references and keeps the ones it finds, so the elected
// leader adds the reference after winning, and checks it again every minute
// (a Lease deleted and created again has none).
type LeaseOwner struct {
	// Client patches the Lease.
	Client client.Client
	// Reader reads the Lease and the webhook configuration without a cache.
	Reader client.Reader
	// Lease is the leader election Lease. Required.
	Lease client.ObjectKey
	// WebhookConfigurationName names the owner. Required.
	WebhookConfigurationName string
}

var (
	_ manager.Runnable               = &LeaseOwner{}
	_ manager.LeaderElectionRunnable = &LeaseOwner{}
)

// NeedLeaderElection returns true: only the holder of the Lease touches it.
func (o *LeaseOwner) NeedLeaderElection() bool { return true }

// Start sets the owner at once and then every minute until ctx is done.
// Failures are logged and retried: the Lease works without an owner.
func (o *LeaseOwner) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("lease-owner")
	for {
		if err := o.Sync(ctx); err != nil && ctx.Err() == nil {
			log.Error(err, "Failed to set the owner of the leader election Lease", "lease", o.Lease)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(leaseOwnerInterval):
		}
	}
}

// Sync gives the Lease the webhook configuration as owner if it lacks it.
func (o *LeaseOwner) Sync(ctx context.Context) error {
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := o.Reader.Get(ctx, client.ObjectKey{Name: o.WebhookConfigurationName}, cfg); err != nil {
		return fmt.Errorf("failed to get MutatingWebhookConfiguration %q: %w", o.WebhookConfigurationName, err)
	}
	lease := &coordinationv1.Lease{}
	if err := o.Reader.Get(ctx, o.Lease, lease); err != nil {
		return fmt.Errorf("failed to get Lease %s: %w", o.Lease, err)
	}
	owners := ownerref.WithOwner(lease.OwnerReferences, cert.OwnerReference(cfg))
	if equality.Semantic.DeepEqual(lease.OwnerReferences, owners) {
		return nil
	}
	patch := client.MergeFromWithOptions(lease.DeepCopy(), client.MergeFromWithOptimisticLock{})
	lease.OwnerReferences = owners
	if err := o.Client.Patch(ctx, lease, patch); err != nil {
		return fmt.Errorf("failed to set the owner of Lease %s: %w", o.Lease, err)
	}
	logf.FromContext(ctx).WithName("lease-owner").Info("Set the owner of the leader election Lease", "lease", o.Lease, "owner", cfg.Name)
	return nil
}
