package sidecarrbac

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/operator/ownerref"
	"github.com/kalpc/kalpc/internal/operator/sidecarrbac/sidecarrole"
)

// ControllerName names the controller in logs and metrics.
const ControllerName = "sidecar-rbac"

// ManagedByValue is the value of the managed-by label on the bindings the
// Reconciler owns.
const ManagedByValue = "kalpc-operator"

// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterrolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=get;bind,resourceNames=kalpc-sidecar
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch

// Reconciler keeps one ClusterRoleBinding per namespace that runs injected
// pods. Requests are keyed by namespace name.
type Reconciler struct {
	// Client reads namespaces, pods and bindings (from the manager's cache)
	// and writes bindings.
	Client client.Client

	// ClusterRoleName is the ClusterRole the bindings refer to, and their
	// owner. Defaults to sidecarrole.Name.
	ClusterRoleName string

	// Reader reads the ClusterRole, by name and without a cache (the
	// operator may get only that one ClusterRole). Defaults to the
	// manager's APIReader.
	Reader client.Reader
}

var _ reconcile.Reconciler = &Reconciler{}

// BindingName returns the name of the ClusterRoleBinding for namespace.
func BindingName(namespace string) string {
	return "kalpc-sidecar:" + namespace
}

// SetupWithManager registers the Reconciler with mgr. It watches namespaces,
// injected pods and its own ClusterRoleBindings.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.ClusterRoleName == "" {
		r.ClusterRoleName = sidecarrole.Name
	}
	if r.Reader == nil {
		r.Reader = mgr.GetAPIReader()
	}
	byNamespace := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: obj.GetNamespace()}}}
	})
	byBindingLabel := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, obj client.Object) []reconcile.Request {
		ns, ok := obj.GetLabels()[kalpcv1alpha1.LabelRBACNamespace]
		if !ok || obj.GetLabels()[kalpcv1alpha1.LabelManagedBy] != ManagedByValue {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: ns}}}
	})
	err := ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		For(&corev1.Namespace{}).
		Watches(&corev1.Pod{}, byNamespace).
		Watches(&rbacv1.ClusterRoleBinding{}, byBindingLabel).
		Complete(r)
	if err != nil {
		return fmt.Errorf("failed to set up the %s controller: %w", ControllerName, err)
	}
	return nil
}

// Reconcile makes the namespace's binding match the ServiceAccounts of its
// injected pods.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	namespace := req.Name
	log := logf.FromContext(ctx).WithValues("clusterRoleBinding", BindingName(namespace))

	accounts, err := r.serviceAccounts(ctx, namespace)
	if err != nil {
		return reconcile.Result{}, err
	}

	current := &rbacv1.ClusterRoleBinding{}
	err = r.Client.Get(ctx, client.ObjectKey{Name: BindingName(namespace)}, current)
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, fmt.Errorf("failed to get ClusterRoleBinding: %w", err)
	}
	exists := err == nil

	if len(accounts) == 0 {
		if !exists {
			return reconcile.Result{}, nil
		}
		if err := r.Client.Delete(ctx, current, client.Preconditions{UID: &current.UID}); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, fmt.Errorf("failed to delete ClusterRoleBinding: %w", err)
		}
		log.Info("Deleted sidecar ClusterRoleBinding: no injected pods left")
		return reconcile.Result{}, nil
	}

	owner, err := r.owner(ctx)
	if err != nil {
		return reconcile.Result{}, err
	}
	want := r.binding(namespace, accounts, owner)
	if !exists {
		if err := r.Client.Create(ctx, want); err != nil {
			return reconcile.Result{}, fmt.Errorf("failed to create ClusterRoleBinding: %w", err)
		}
		log.Info("Created sidecar ClusterRoleBinding", "serviceAccounts", accounts)
		return reconcile.Result{}, nil
	}
	if current.RoleRef != want.RoleRef {
		// roleRef is immutable: replace the binding. The next reconcile
		// (triggered by the deletion) creates it again.
		if err := r.Client.Delete(ctx, current, client.Preconditions{UID: &current.UID}); client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, fmt.Errorf("failed to delete ClusterRoleBinding with an outdated roleRef: %w", err)
		}
		log.Info("Deleted sidecar ClusterRoleBinding with an outdated roleRef", "roleRef", current.RoleRef.Name)
		return reconcile.Result{}, nil
	}
	owners := ownerref.WithOwner(current.OwnerReferences, owner)
	if equality.Semantic.DeepEqual(current.Subjects, want.Subjects) && labelsContain(current.Labels, want.Labels) &&
		equality.Semantic.DeepEqual(current.OwnerReferences, owners) {
		return reconcile.Result{}, nil
	}
	patch := client.MergeFromWithOptions(current.DeepCopy(), client.MergeFromWithOptimisticLock{})
	current.Subjects = want.Subjects
	current.OwnerReferences = owners
	if current.Labels == nil {
		current.Labels = map[string]string{}
	}
	for k, v := range want.Labels {
		current.Labels[k] = v
	}
	if err := r.Client.Patch(ctx, current, patch); err != nil {
		return reconcile.Result{}, fmt.Errorf("failed to update ClusterRoleBinding subjects: %w", err)
	}
	log.Info("Updated sidecar ClusterRoleBinding", "serviceAccounts", accounts)
	return reconcile.Result{}, nil
}

// serviceAccounts returns the sorted names of the ServiceAccounts that the
// injected, not yet finished pods of namespace run as. It returns none for a
// namespace that is gone or being deleted.
func (r *Reconciler) serviceAccounts(ctx context.Context, namespace string) ([]string, error) {
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to get namespace: %w", err)
	}
	if !ns.DeletionTimestamp.IsZero() {
		return nil, nil
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(namespace),
		client.MatchingLabels{kalpcv1alpha1.LabelSidecar: kalpcv1alpha1.LabelSidecarInjected}); err != nil {
		return nil, fmt.Errorf("failed to list injected pods: %w", err)
	}
	var accounts []string
	for _, pod := range pods.Items {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		sa := pod.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		accounts = append(accounts, sa)
	}
	slices.Sort(accounts)
	return slices.Compact(accounts), nil
}

// owner returns the owner reference of the bindings: the ClusterRole they
// bind. When the ClusterRole is deleted (helm uninstall), Kubernetes' garbage
// collector deletes every binding the Reconciler made, even with the
// operator gone.
func (r *Reconciler) owner(ctx context.Context) (metav1.OwnerReference, error) {
	role := &rbacv1.ClusterRole{}
	if err := r.Reader.Get(ctx, client.ObjectKey{Name: r.ClusterRoleName}, role); err != nil {
		if apierrors.IsNotFound(err) {
			return metav1.OwnerReference{}, fmt.Errorf("the sidecar ClusterRole %q does not exist (it comes with the chart): not binding it: %w", r.ClusterRoleName, err)
		}
		return metav1.OwnerReference{}, fmt.Errorf("failed to get the sidecar ClusterRole %q: %w", r.ClusterRoleName, err)
	}
	return metav1.OwnerReference{
		APIVersion: rbacv1.SchemeGroupVersion.String(),
		Kind:       "ClusterRole",
		Name:       role.Name,
		UID:        role.UID,
	}, nil
}

// binding returns the desired ClusterRoleBinding for namespace's accounts,
// owned by owner.
func (r *Reconciler) binding(namespace string, accounts []string, owner metav1.OwnerReference) *rbacv1.ClusterRoleBinding {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{
			Name: BindingName(namespace),
			Labels: map[string]string{
				kalpcv1alpha1.LabelManagedBy:     ManagedByValue,
				kalpcv1alpha1.LabelRBACNamespace: namespace,
			},
			OwnerReferences: []metav1.OwnerReference{owner},
		},
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: r.ClusterRoleName},
	}
	for _, sa := range accounts {
		crb.Subjects = append(crb.Subjects, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: namespace})
	}
	return crb
}

// labelsContain reports whether every label of want is in have.
func labelsContain(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
