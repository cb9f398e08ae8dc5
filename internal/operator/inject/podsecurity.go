package inject

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// maxWarnings bounds the warnings one admission response carries.
const maxWarnings = 4

// podSecurity evaluates pods against a namespace's enforced Pod Security
// level with the upstream evaluator (the one the PodSecurity admission
// plugin runs), so that the webhook can say, as an admission warning, that
// the pod it injected will be rejected and why, instead of leaving users to
// find a ReplicaSet event.
type podSecurity struct {
	evaluator policy.Evaluator
}

func newPodSecurity() (*podSecurity, error) {
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		return nil, fmt.Errorf("failed to create the Pod Security evaluator: %w", err)
	}
	return &podSecurity{evaluator: e}, nil
}

// newViolations returns the reasons, with their details, for which the
// Pod Security level enforced on ns (by its labels) rejects after but not
// before: what injection added. Nothing when ns enforces nothing.
func (p *podSecurity) newViolations(ns *corev1.Namespace, before, after *corev1.Pod) (psaapi.LevelVersion, []string) {
	pol, errs := psaapi.PolicyToEvaluate(ns.Labels, psaapi.Policy{
		Enforce: psaapi.LevelVersion{Level: psaapi.LevelPrivileged, Version: psaapi.LatestVersion()},
	})
	lv := pol.Enforce
	if len(errs) > 0 || lv.Level == psaapi.LevelPrivileged {
		return lv, nil
	}
	had := map[string]bool{}
	for _, r := range p.evaluator.EvaluatePod(lv, &before.ObjectMeta, &before.Spec) {
		if !r.Allowed {
			had[r.ForbiddenReason+": "+r.ForbiddenDetail] = true
		}
	}
	var added []string
	for _, r := range p.evaluator.EvaluatePod(lv, &after.ObjectMeta, &after.Spec) {
		if s := r.ForbiddenReason + ": " + r.ForbiddenDetail; !r.Allowed && !had[s] {
			added = append(added, s)
		}
	}
	return lv, added
}

// warnings collects the admission warnings of one request: the wrapper in
// Webhook puts one in the context, Default adds to it.
type warnings struct {
	mu   sync.Mutex
	list []string
}

type warningsKey struct{}

func (w *warnings) add(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.list) < maxWarnings && !slices.Contains(w.list, s) {
		w.list = append(w.list, s)
	}
}

// warnFromContext adds s to the request's warnings, if it collects any.
func warnFromContext(ctx context.Context, s string) {
	if w, ok := ctx.Value(warningsKey{}).(*warnings); ok {
		w.add(s)
	}
}

// withWarnings wraps h so that what Default warns reaches the response.
func withWarnings(h admission.Handler) admission.Handler {
	return admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
		w := &warnings{}
		resp := h.Handle(context.WithValue(ctx, warningsKey{}, w), req)
		resp.Warnings = append(resp.Warnings, w.list...)
		return resp
	})
}

// warnPodSecurity warns when the injected pod breaks the Pod Security level
// its namespace enforces (hostPath mode in a baseline or restricted
// namespace): the API server will reject it, and for a Deployment's pod
// that shows only in ReplicaSet events.
func (i *Injector) warnPodSecurity(ctx context.Context, namespace string, before, after *corev1.Pod) {
	var ns corev1.Namespace
	if err := i.reader.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		return // injection does not depend on it; the API server still decides
	}
	lv, added := i.podSecurity.newViolations(&ns, before, after)
	if len(added) == 0 {
		return
	}
	hint := ""
	if i.cfg.NodeVolume == NodeVolumeHostPath {
		hint = fmt.Sprintf(" (the kalpc operator injects the node directory as a hostPath volume, --sidecar-node-volume=%s; use %s, the chart's sidecar.nodeVolume=csi)", NodeVolumeHostPath, NodeVolumeCSI)
	}
	warnFromContext(ctx, fmt.Sprintf("kalpc: the injected pod violates PodSecurity %q enforced on namespace %s, so it will be rejected: %s%s",
		lv.String(), namespace, strings.Join(added, "; "), hint))
}
