package inject

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// Path is where the webhook server serves the injection webhook.
const Path = "/inject-kalpc-sidecar"

// WebhookConfigurationName is the name of the MutatingWebhookConfiguration
// that calls the injection webhook. The operator keeps its caBundle current.
const WebhookConfigurationName = "kalpc-sidecar-injector"

// Two webhooks share one handler because a webhook's namespaceSelector and
// objectSelector are ANDed, and a pod opts in through its own label OR its
// namespace's label. The two are disjoint, so a pod is mutated once.
//
// +kubebuilder:webhookconfiguration:mutating=true,name=kalpc-sidecar-injector
// +kubebuilder:webhook:path=/inject-kalpc-sidecar,mutating=true,failurePolicy=fail,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=namespace.inject.kalpc.io,admissionReviewVersions=v1,reinvocationPolicy=IfNeeded,timeoutSeconds=10,serviceName=kalpc-webhook,serviceNamespace=kalpc-system,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"kalpc.io/injection","operator":"In","values":["enabled"]},{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","kube-public","kube-node-lease","kalpc-system"]}]},"objectSelector":{"matchExpressions":[{"key":"kalpc.io/inject","operator":"NotIn","values":["false"]}]}}`
// +kubebuilder:webhook:path=/inject-kalpc-sidecar,mutating=true,failurePolicy=fail,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=pod.inject.kalpc.io,admissionReviewVersions=v1,reinvocationPolicy=IfNeeded,timeoutSeconds=10,serviceName=kalpc-webhook,serviceNamespace=kalpc-system,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"kalpc.io/injection","operator":"NotIn","values":["enabled"]},{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","kube-public","kube-node-lease","kalpc-system"]}]},"objectSelector":{"matchExpressions":[{"key":"kalpc.io/inject","operator":"In","values":["true"]}]}}`

// The handler reads the pod's namespace to see its opt-in label.
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// Injector is the pod injection webhook's handler. It implements
// admission.Defaulter for Pods.
type Injector struct {
	cfg         Config
	reader      client.Reader
	podSecurity *podSecurity
}

var _ admission.Defaulter[*corev1.Pod] = &Injector{}

// New returns an Injector that injects the sidecar cfg describes and reads
// namespaces with reader (normally the manager's cached client).
func New(cfg Config, reader client.Reader) (*Injector, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("invalid sidecar injection config: %w", err)
	}
	ps, err := newPodSecurity()
	if err != nil {
		return nil, err
	}
	return &Injector{cfg: cfg, reader: reader, podSecurity: ps}, nil
}

// SetupWithManager registers the webhook on the manager's webhook server at
// Path.
func (i *Injector) SetupWithManager(mgr manager.Manager) error {
	mgr.GetWebhookServer().Register(Path, i.Webhook(mgr.GetScheme()))
	return nil
}

// Webhook returns the admission webhook that runs the Injector. Its
// responses carry admission warnings (kubectl prints them) when the
// injected pod breaks its namespace's enforced Pod Security level.
func (i *Injector) Webhook(scheme *runtime.Scheme) *admission.Webhook {
	wh := admission.WithDefaulter[*corev1.Pod](scheme, i)
	wh.Handler = withWarnings(wh.Handler)
	return wh
}

// Default injects the sidecar into pod when it opted in; it leaves every other
// pod as it is.
func (i *Injector) Default(ctx context.Context, pod *corev1.Pod) error {
	log := logf.FromContext(ctx)
	namespace := pod.Namespace
	if req, err := admission.RequestFromContext(ctx); err == nil && req.Namespace != "" {
		namespace = req.Namespace
	}
	ok, reason, err := i.wants(ctx, pod, namespace)
	if err != nil {
		injections.WithLabelValues(resultError).Inc()
		return err
	}
	if !ok {
		injections.WithLabelValues(resultSkipped).Inc()
		log.V(1).Info("Not injecting the kalpc sidecar", "reason", reason)
		return nil
	}
	before := pod.DeepCopy()
	inject(pod, i.cfg)
	i.warnPodSecurity(ctx, namespace, before, pod)
	injections.WithLabelValues(resultInjected).Inc()
	log.V(1).Info("Injected the kalpc sidecar", "reason", reason)
	return nil
}

// Inject applies the mutation to pod unconditionally. It exists for tests
// and tools that want to see an injected pod; the webhook uses Default.
func (i *Injector) Inject(pod *corev1.Pod) {
	inject(pod, i.cfg)
}

// excluded reports whether pods of namespace are never injected.
func (i *Injector) excluded(namespace string) bool {
	switch namespace {
	case "kube-system", "kube-public", "kube-node-lease", i.cfg.OperatorNamespace:
		return true
	}
	return false
}

// wants decides whether pod, created in namespace, gets the sidecar, and says
// why in a few words.
func (i *Injector) wants(ctx context.Context, pod *corev1.Pod, namespace string) (bool, string, error) {
	if i.excluded(namespace) {
		return false, "namespace is excluded from injection", nil
	}
	switch pod.Labels[kalpcv1alpha1.LabelInject] {
	case kalpcv1alpha1.ValueFalse:
		return false, "pod opted out", nil
	case kalpcv1alpha1.ValueTrue:
		return true, "pod opted in", nil
	}
	var ns corev1.Namespace
	if err := i.reader.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		return false, "", fmt.Errorf("kalpc: failed to read namespace %q to decide sidecar injection: %w", namespace, err)
	}
	if ns.Labels[kalpcv1alpha1.LabelInjection] == kalpcv1alpha1.ValueEnabled {
		return true, "namespace opted in", nil
	}
	return false, "neither pod nor namespace opted in", nil
}
