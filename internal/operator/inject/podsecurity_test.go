package inject_test

import (
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kalpc/kalpc/internal/operator/inject"
)

// plainDeployment is what a user writes: one app container that meets Pod
// Security "restricted" on its own, opted in to injection.
func plainDeployment(namespace string) *appsv1.Deployment {
	labels := map[string]string{"app": "web", "kalpc.io/inject": "true"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name: "web", Image: "example/web:1",
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}

// deploymentPod is the pod the ReplicaSet controller would create.
func deploymentPod(namespace string) *corev1.Pod {
	d := plainDeployment(namespace)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Namespace: namespace, Labels: d.Spec.Template.Labels},
		Spec:       *d.Spec.Template.Spec.DeepCopy(),
	}
}

// evaluate runs the upstream Pod Security evaluator on pod at level:latest.
func evaluate(t *testing.T, level api.Level, pod *corev1.Pod) policy.AggregateCheckResult {
	t.Helper()
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return policy.AggregateCheckResults(e.EvaluatePod(api.LevelVersion{Level: level, Version: api.LatestVersion()}, &pod.ObjectMeta, &pod.Spec))
}

// TestPodSecurityOfInjectedPod evaluates the injected pod of a plain
// Deployment against Pod Security "restricted:latest" with the upstream
// evaluator: csi mode adds no violation; hostPath mode adds exactly one,
// the hostPath volume.
func TestPodSecurityOfInjectedPod(t *testing.T) {
	if r := evaluate(t, api.LevelRestricted, deploymentPod("apps")); !r.Allowed {
		t.Fatalf("the plain Deployment's pod already violates restricted: %v", r.ForbiddenReasons)
	}
	for _, mode := range []inject.NodeVolumeMode{inject.NodeVolumeCSI, inject.NodeVolumeHostPath} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := sidecarConfig()
			cfg.NodeVolume = mode
			injector, err := inject.New(cfg, k8s)
			if err != nil {
				t.Fatal(err)
			}
			pod := deploymentPod("apps")
			injector.Inject(pod)
			for _, level := range []api.Level{api.LevelRestricted, api.LevelBaseline} {
				r := evaluate(t, level, pod)
				if mode == inject.NodeVolumeCSI {
					if !r.Allowed {
						t.Errorf("injected pod violates %s:latest: %v: %v", level, r.ForbiddenReasons, r.ForbiddenDetails)
					}
					continue
				}
				want := "restricted volume types"
				if level == api.LevelBaseline {
					want = "hostPath volumes"
				}
				if r.Allowed || len(r.ForbiddenReasons) != 1 || r.ForbiddenReasons[0] != want || !strings.Contains(r.ForbiddenDetails[0], `"kalpc-node"`) {
					t.Errorf("hostPath mode at %s: %v %v, want only %q naming kalpc-node", level, r.ForbiddenReasons, r.ForbiddenDetails, want)
				}
			}
		})
	}
}

// warningRecorder collects the API server's warning headers.
type warningRecorder struct {
	mu   sync.Mutex
	list []string
}

func (w *warningRecorder) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

func (w *warningRecorder) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.list, "\n")
}

// TestPodSecurityAdmission creates the injected pods through the real API
// server, whose PodSecurity admission plugin enforces the namespaces'
// levels: in csi mode a restricted namespace admits the pod without a
// warning; in hostPath mode a baseline namespace rejects it, and the
// webhook's warning says why before the rejection does.
func TestPodSecurityAdmission(t *testing.T) {
	rec := &warningRecorder{}
	wcfg := rest.CopyConfig(cfg)
	wcfg.WarningHandler = rec
	c, err := client.New(wcfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("csi mode, restricted namespace", func(t *testing.T) {
		startWebhook(t, sidecarConfig())
		ns := newNamespace(t, map[string]string{api.EnforceLevelLabel: "restricted"})
		pod := deploymentPod(ns)
		if err := c.Create(t.Context(), pod); err != nil {
			t.Fatalf("Create() in a restricted namespace = %v", err)
		}
		t.Cleanup(func() { _ = k8s.Delete(t.Context(), pod) })
		if pod.Spec.InitContainers[0].Name != inject.SidecarName {
			t.Errorf("pod was not injected: %+v", pod.Spec.InitContainers)
		}
		if w := rec.all(); strings.Contains(w, "kalpc") {
			t.Errorf("unexpected warnings: %s", w)
		}
	})

	t.Run("hostPath mode, baseline namespace", func(t *testing.T) {
		hp := sidecarConfig()
		hp.NodeVolume = inject.NodeVolumeHostPath
		startWebhook(t, hp)
		ns := newNamespace(t, map[string]string{api.EnforceLevelLabel: "baseline"})
		err := c.Create(t.Context(), deploymentPod(ns))
		if err == nil || !strings.Contains(err.Error(), "hostPath") {
			t.Errorf("Create() in a baseline namespace in hostPath mode = %v, want a PodSecurity rejection", err)
		}
		w := rec.all()
		for _, want := range []string{`violates PodSecurity "baseline:latest"`, ns, `"kalpc-node"`, "sidecar.nodeVolume=csi"} {
			if !strings.Contains(w, want) {
				t.Errorf("warnings %q lack %q", w, want)
			}
		}
	})
}
