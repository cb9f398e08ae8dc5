package portstatus

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/operator/inject"
)

// ControllerName names the controller in logs, metrics and events.
const ControllerName = "connectionport-status"

// +kubebuilder:rbac:groups=kalpc.io,resources=connectionports,verbs=get;list;watch
// +kubebuilder:rbac:groups=kalpc.io,resources=connectionports/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconciler computes the status of ConnectionPorts from their server pods.
type Reconciler struct {
	// Client reads ports and pods (from the manager's cache) and patches port
	// status.
	Client client.Client

	// Recorder records events on ports.
	Recorder events.EventRecorder
}

var _ reconcile.Reconciler = &Reconciler{}

// SetupWithManager registers the Reconciler with mgr: it watches
// ConnectionPorts and the pods that carry the sidecar.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).
		Named(ControllerName).
		For(&kalpcv1alpha1.ConnectionPort{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.portsForPod)).
		Complete(r)
	if err != nil {
		return fmt.Errorf("failed to set up the %s controller: %w", ControllerName, err)
	}
	return nil
}

// portsForPod maps a pod to the ports in its namespace whose server selector
// matches it. For updates, controller-runtime calls it with the old and the
// new pod, so a pod that stops matching still updates the port it left.
func (r *Reconciler) portsForPod(ctx context.Context, obj client.Object) []reconcile.Request {
	var ports kalpcv1alpha1.ConnectionPortList
	if err := r.Client.List(ctx, &ports, client.InNamespace(obj.GetNamespace())); err != nil {
		logf.FromContext(ctx).Error(err, "Failed to list ConnectionPorts for a pod", "pod", klogRef(obj))
		return nil
	}
	var reqs []reconcile.Request
	for _, p := range ports.Items {
		sel, err := p.Spec.Servers.AsSelector()
		if err != nil || !sel.Matches(labels.Set(obj.GetLabels())) {
			continue
		}
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)})
	}
	return reqs
}

// Reconcile brings the status of one ConnectionPort up to date.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := logf.FromContext(ctx)

	port := &kalpcv1alpha1.ConnectionPort{}
	if err := r.Client.Get(ctx, req.NamespacedName, port); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !port.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil
	}
	before := port.DeepCopy()
	wasReady := meta.IsStatusConditionTrue(port.Status.Conditions, kalpcv1alpha1.ConditionReady)

	selector, selErr := port.Spec.Servers.AsSelector()
	if selErr != nil {
		port.Status = kalpcv1alpha1.ConnectionPortStatus{Conditions: port.Status.Conditions}
		meta.SetStatusCondition(&port.Status.Conditions, metav1.Condition{
			Type:               kalpcv1alpha1.ConditionReady,
			Status:             metav1.ConditionFalse,
			Reason:             kalpcv1alpha1.ReasonInvalidServerSelector,
			Message:            fmt.Sprintf("spec.servers is not a valid label selector: %v", selErr),
			ObservedGeneration: port.Generation,
		})
	} else {
		pods, err := r.serverPods(ctx, port.Namespace, selector)
		if err != nil {
			return reconcile.Result{}, err
		}
		port.Status.Endpoints, port.Status.ReadyServers, port.Status.Nodes = endpoints(pods)
		meta.SetStatusCondition(&port.Status.Conditions, readyCondition(port))
	}
	port.Status.ObservedGeneration = port.Generation

	if !equality.Semantic.DeepEqual(before.Status, port.Status) {
		if err := r.Client.Status().Patch(ctx, port, client.MergeFrom(before)); err != nil {
			return reconcile.Result{}, fmt.Errorf("failed to patch ConnectionPort status: %w", err)
		}
		log.V(1).Info("Updated ConnectionPort status", "readyServers", port.Status.ReadyServers, "nodes", port.Status.Nodes)
	}
	r.recordEvents(port, wasReady)

	if selErr != nil {
		// Retrying cannot fix the spec; a spec change triggers a new reconcile.
		return reconcile.Result{}, reconcile.TerminalError(fmt.Errorf("invalid spec.servers: %w", selErr))
	}
	return reconcile.Result{}, nil
}

// serverPods lists the pods in namespace that match selector and carry the
// sidecar.
func (r *Reconciler) serverPods(ctx context.Context, namespace string, selector labels.Selector) ([]corev1.Pod, error) {
	sidecar, err := labels.NewRequirement(kalpcv1alpha1.LabelSidecar, "=", []string{kalpcv1alpha1.LabelSidecarInjected})
	if err != nil {
		return nil, fmt.Errorf("failed to build the sidecar label requirement: %w", err)
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabelsSelector{Selector: selector.Add(*sidecar)}); err != nil {
		return nil, fmt.Errorf("failed to list server pods: %w", err)
	}
	return pods.Items, nil
}

// endpoints groups the endpoint pods among pods by node and counts the ready
// ones and the nodes that have one.
func endpoints(pods []corev1.Pod) (byNode []kalpcv1alpha1.NodeEndpoints, ready, nodes int32) {
	index := map[string]int{}
	for i := range pods {
		pod := &pods[i]
		if pod.Spec.NodeName == "" || pod.Status.Phase != corev1.PodRunning || !hasSidecar(pod) {
			continue
		}
		ep := kalpcv1alpha1.EndpointPod{Name: pod.Name, UID: pod.UID, Ready: isReady(pod)}
		n, ok := index[pod.Spec.NodeName]
		if !ok {
			n = len(byNode)
			index[pod.Spec.NodeName] = n
			byNode = append(byNode, kalpcv1alpha1.NodeEndpoints{NodeName: pod.Spec.NodeName})
		}
		byNode[n].Pods = append(byNode[n].Pods, ep)
	}
	slices.SortFunc(byNode, func(a, b kalpcv1alpha1.NodeEndpoints) int { return strings.Compare(a.NodeName, b.NodeName) })
	for i := range byNode {
		slices.SortFunc(byNode[i].Pods, func(a, b kalpcv1alpha1.EndpointPod) int { return strings.Compare(a.Name, b.Name) })
		nodeReady := false
		for _, p := range byNode[i].Pods {
			if p.Ready {
				ready++
				nodeReady = true
			}
		}
		if nodeReady {
			nodes++
		}
	}
	return byNode, ready, nodes
}

// readyCondition returns the Ready condition for port's computed status.
func readyCondition(port *kalpcv1alpha1.ConnectionPort) metav1.Condition {
	c := metav1.Condition{Type: kalpcv1alpha1.ConditionReady, ObservedGeneration: port.Generation}
	total := 0
	for _, n := range port.Status.Endpoints {
		total += len(n.Pods)
	}
	if port.Status.ReadyServers > 0 {
		c.Status = metav1.ConditionTrue
		c.Reason = kalpcv1alpha1.ReasonServersReady
		c.Message = fmt.Sprintf("%d of %d server endpoints ready on %d nodes", port.Status.ReadyServers, total, port.Status.Nodes)
		return c
	}
	c.Status = metav1.ConditionFalse
	c.Reason = kalpcv1alpha1.ReasonNoReadyServers
	if total == 0 {
		c.Message = "no pod matching spec.servers is running with the kalpc sidecar"
	} else {
		c.Message = fmt.Sprintf("none of %d server endpoints is ready", total)
	}
	return c
}

// recordEvents records the notable changes of port's status: its Ready
// condition turning True or False, and an invalid server selector.
func (r *Reconciler) recordEvents(port *kalpcv1alpha1.ConnectionPort, wasReady bool) {
	if r.Recorder == nil {
		return
	}
	c := meta.FindStatusCondition(port.Status.Conditions, kalpcv1alpha1.ConditionReady)
	if c == nil {
		return
	}
	isReady := c.Status == metav1.ConditionTrue
	switch {
	case c.Reason == kalpcv1alpha1.ReasonInvalidServerSelector:
		r.Recorder.Eventf(port, nil, corev1.EventTypeWarning, c.Reason, "ValidateSpec", "%s", c.Message)
	case isReady && !wasReady:
		r.Recorder.Eventf(port, nil, corev1.EventTypeNormal, c.Reason, "UpdateEndpoints", "%s", c.Message)
	case !isReady && wasReady:
		r.Recorder.Eventf(port, nil, corev1.EventTypeWarning, c.Reason, "UpdateEndpoints", "%s", c.Message)
	}
}

// hasSidecar reports whether pod runs the kalpc sidecar.
func hasSidecar(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == inject.SidecarName })
}

// isReady reports whether pod is ready and not being deleted.
func isReady(pod *corev1.Pod) bool {
	if !pod.DeletionTimestamp.IsZero() {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// klogRef returns obj's namespace/name for logs.
func klogRef(obj client.Object) types.NamespacedName {
	return client.ObjectKeyFromObject(obj)
}
