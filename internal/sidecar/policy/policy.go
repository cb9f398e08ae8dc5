package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/ctl"
	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/ttlcache"
)

// Errors of the decisions; each reaches the requesting application as a
// distinct error.
var (
	// ErrPortNotFound means no ConnectionPort of that name exists.
	ErrPortNotFound = errors.New("connection port not found")
	// ErrNotServer means the pod is not an allowed server of the port.
	ErrNotServer = errors.New("pod may not serve the connection port")
	// ErrDenied means the client matches none of the port's client rules.
	ErrDenied = errors.New("client not allowed by the connection port's rules")
	// ErrUnavailable means a decision needs the API server and it could not
	// be reached (or answered with an error): the request is refused, but
	// may succeed when retried. It never means "allowed".
	ErrUnavailable = errors.New("API read failed")
)

// apiError wraps a failed API read: a missing object is an answer (the
// decision can be made), anything else makes the decision unavailable.
func apiError(err error, format string, args ...any) error {
	what := fmt.Sprintf(format, args...)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
}

// PodGetter reads one pod.
type PodGetter interface {
	Get(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// Engine evaluates ConnectionPorts.
type Engine struct {
	// Reader reads ConnectionPorts and Namespaces, normally from an
	// informer cache.
	Reader client.Reader
	// Pods reads pods.
	Pods PodGetter
}

// Port returns the ConnectionPort namespace/name; the error matches
// ErrPortNotFound if it does not exist.
func (e *Engine) Port(ctx context.Context, namespace, name string) (*kalpcv1alpha1.ConnectionPort, error) {
	var p kalpcv1alpha1.ConnectionPort
	if err := e.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: no ConnectionPort named %q in namespace %q; create it there (apiVersion: kalpc.io/v1alpha1, kind: ConnectionPort, see docs/quickstart.md) or correct the port name", ErrPortNotFound, name, namespace)
		}
		return nil, apiError(err, "failed to get ConnectionPort %s/%s", namespace, name)
	}
	return &p, nil
}

// MayServe reports whether pod may serve port: it must be in the port's
// namespace, match spec.servers and not be terminating.
func MayServe(port *kalpcv1alpha1.ConnectionPort, pod *corev1.Pod) error {
	if pod.Namespace != port.Namespace {
		return fmt.Errorf("%w: pod %s/%s is not in the port's namespace %s", ErrNotServer, pod.Namespace, pod.Name, port.Namespace)
	}
	if pod.DeletionTimestamp != nil {
		return fmt.Errorf("%w: pod %s/%s is terminating", ErrNotServer, pod.Namespace, pod.Name)
	}
	sel, err := port.Spec.Servers.AsSelector()
	if err != nil {
		return fmt.Errorf("%w: ConnectionPort %s/%s has an invalid spec.servers: %w", ErrNotServer, port.Namespace, port.Name, err)
	}
	if !sel.Matches(labels.Set(pod.Labels)) {
		return fmt.Errorf("%w: pod %s/%s does not match spec.servers of ConnectionPort %s/%s", ErrNotServer, pod.Namespace, pod.Name, port.Namespace, port.Name)
	}
	return nil
}

// Pod returns the pod of a verified identity, checking that it still has
// the identity's UID.
func (e *Engine) Pod(ctx context.Context, id podid.Identity) (*corev1.Pod, error) {
	pod, err := e.Pods.Get(ctx, id.Namespace, id.PodName)
	if err != nil {
		return nil, apiError(err, "failed to get pod %s/%s", id.Namespace, id.PodName)
	}
	if string(pod.UID) != id.PodUID {
		return nil, fmt.Errorf("pod %s/%s has uid %s, not %s: it was replaced", id.Namespace, id.PodName, pod.UID, id.PodUID)
	}
	return pod, nil
}

// Authorize reports whether the verified client may connect to port. The
// error matches ErrDenied when no rule allows it.
func (e *Engine) Authorize(ctx context.Context, port *kalpcv1alpha1.ConnectionPort, client podid.Identity) error {
	rules := port.Spec.Clients
	if len(rules) == 0 {
		if client.Namespace == port.Namespace {
			return nil
		}
		return fmt.Errorf("%w: pod %s is not in namespace %s, and ConnectionPort %s/%s has no client rules", ErrDenied, client, port.Namespace, port.Namespace, port.Name)
	}
	var errs []error
	for i := range rules {
		ok, err := e.matches(ctx, port, &rules[i], client)
		if ok {
			return nil
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// A rule could not be evaluated; refuse, and say why: as
		// unavailable if the API server may yet allow it on a retry,
		// else as denied.
		kind := ErrDenied
		for _, err := range errs {
			if errors.Is(err, ErrUnavailable) {
				kind = ErrUnavailable
			}
		}
		return fmt.Errorf("%w: pod %s matches no client rule of ConnectionPort %s/%s that could be evaluated (%w)", kind, client, port.Namespace, port.Name, errors.Join(errs...))
	}
	return fmt.Errorf("%w: pod %s matches no client rule of ConnectionPort %s/%s", ErrDenied, client, port.Namespace, port.Name)
}

func (e *Engine) matches(ctx context.Context, port *kalpcv1alpha1.ConnectionPort, r *kalpcv1alpha1.ClientRule, c podid.Identity) (bool, error) {
	if r.Namespaces == nil && r.NamespaceSelector == nil {
		if c.Namespace != port.Namespace {
			return false, nil
		}
	}
	if r.Namespaces != nil && !slices.Contains(r.Namespaces, c.Namespace) {
		return false, nil
	}
	if len(r.ServiceAccounts) > 0 && !slices.Contains(r.ServiceAccounts, c.ServiceAccount) {
		return false, nil
	}
	if r.NamespaceSelector != nil {
		sel, err := r.NamespaceSelector.AsSelector()
		if err != nil {
			return false, fmt.Errorf("invalid namespaceSelector: %w", err)
		}
		var ns corev1.Namespace
		if err := e.Reader.Get(ctx, types.NamespacedName{Name: c.Namespace}, &ns); err != nil {
			return false, apiError(err, "failed to get namespace %s", c.Namespace)
		}
		if !sel.Matches(labels.Set(ns.Labels)) {
			return false, nil
		}
	}
	if r.PodSelector != nil {
		sel, err := r.PodSelector.AsSelector()
		if err != nil {
			return false, fmt.Errorf("invalid podSelector: %w", err)
		}
		pod, err := e.Pod(ctx, c)
		if err != nil {
			return false, err
		}
		if !sel.Matches(labels.Set(pod.Labels)) {
			return false, nil
		}
	}
	return true, nil
}

// MessagePolicy returns the port's message policy, with the CRD's defaults
// for fields a port that predates them lacks.
func MessagePolicy(port *kalpcv1alpha1.ConnectionPort) ctl.Policy {
	mp := port.Spec.MessagePolicy
	p := ctl.Policy{
		InlineLimit:        kalpcv1alpha1.DefaultInlineLimitBytes,
		MaxMessageBytes:    kalpcv1alpha1.DefaultMaxMessageBytes,
		MaxSectionBytes:    kalpcv1alpha1.DefaultMaxSectionBytesPerConnection,
		MaxPendingMessages: kalpcv1alpha1.DefaultMaxPendingMessages,
		MaxConnections:     kalpcv1alpha1.DefaultMaxConnections,
	}
	if mp.InlineLimitBytes > 0 {
		p.InlineLimit = uint32(mp.InlineLimitBytes)
	}
	if mp.MaxMessageBytes > 0 {
		p.MaxMessageBytes = uint64(mp.MaxMessageBytes)
	}
	if mp.MaxSectionBytesPerConnection != nil && *mp.MaxSectionBytesPerConnection >= 0 {
		p.MaxSectionBytes = uint64(*mp.MaxSectionBytesPerConnection)
	}
	if mp.MaxPendingMessages > 0 {
		p.MaxPendingMessages = uint32(mp.MaxPendingMessages)
	}
	if mp.MaxConnections > 0 {
		p.MaxConnections = uint32(mp.MaxConnections)
	}
	if mp.DirectAccess != nil {
		p.DirectAccess = *mp.DirectAccess
	}
	return p
}

// CachedPods is a PodGetter that keeps pods for TTL, so a burst of
// connections from one pod costs one GET: concurrent reads of one pod share
// one request, and a pod read is reused until TTL after its request was
// sent, so a deleted pod (or changed labels) is believed at most TTL
// longer. Errors (NotFound included) are not kept.
type CachedPods struct {
	// Client reads pods from the API server.
	Client client.Reader
	// TTL defaults to DefaultPodTTL; negative disables the cache.
	TTL time.Duration

	once sync.Once
	pods *ttlcache.Cache[types.NamespacedName, *corev1.Pod]
}

// DefaultPodTTL is CachedPods.TTL's default.
const DefaultPodTTL = 2 * time.Second

// MaxCachedPods bounds the pods a CachedPods keeps.
const MaxCachedPods = 4096

var _ PodGetter = (*CachedPods)(nil)

// Get returns the pod namespace/name. The pod is shared: callers must not
// modify it.
func (c *CachedPods) Get(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	c.once.Do(func() {
		ttl := c.TTL
		if ttl == 0 {
			ttl = DefaultPodTTL
		}
		c.pods = &ttlcache.Cache[types.NamespacedName, *corev1.Pod]{TTL: ttl, MaxEntries: MaxCachedPods}
	})
	key := types.NamespacedName{Namespace: namespace, Name: name}
	return c.pods.Get(ctx, key, func(ctx context.Context) (*corev1.Pod, error) {
		var pod corev1.Pod
		if err := c.Client.Get(ctx, key, &pod); err != nil {
			return nil, err
		}
		return &pod, nil
	})
}
