package inject_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/operator/inject"
)

// wantSidecarArgs are the injected sidecar's arguments with the test
// webhook's Config (debug logging, default ports).
var wantSidecarArgs = []string{
	"--pod-socket=/var/run/kalpc/pod/kalpc.sock",
	"--node-dir=/var/run/kalpc/node",
	"--token-file=/var/run/secrets/kalpc.io/serviceaccount/token",
	"--health-addr=:15980",
	"--metrics-addr=:15981",
	"--log-level=debug",
}

var (
	enabledNS = map[string]string{kalpcv1alpha1.LabelInjection: kalpcv1alpha1.ValueEnabled}
	podIn     = map[string]string{kalpcv1alpha1.LabelInject: kalpcv1alpha1.ValueTrue}
	podOut    = map[string]string{kalpcv1alpha1.LabelInject: kalpcv1alpha1.ValueFalse}
)

// TestWebhook runs the webhook, registered with the real API server through
// config/webhook, and checks what pods come back as.
func TestWebhook(t *testing.T) {
	startWebhook(t, sidecarConfig())

	t.Run("namespace opted in", func(t *testing.T) {
		ns := newNamespace(t, enabledNS)
		got, err := createPod(t, appPod(ns, nil))
		if err != nil {
			t.Fatalf("Create() = %v", err)
		}
		assertInjected(t, got)
	})

	t.Run("pod opted in", func(t *testing.T) {
		ns := newNamespace(t, nil)
		got, err := createPod(t, appPod(ns, podIn))
		if err != nil {
			t.Fatalf("Create() = %v", err)
		}
		assertInjected(t, got)
	})

	t.Run("opted out of ready when published", func(t *testing.T) {
		ns := newNamespace(t, enabledNS)
		pod := appPod(ns, nil)
		pod.Annotations = map[string]string{kalpcv1alpha1.AnnotationReadyWhenPublished: kalpcv1alpha1.ValueFalse}
		got, err := createPod(t, pod)
		if err != nil {
			t.Fatalf("Create() = %v", err)
		}
		sc := got.Spec.InitContainers[0]
		if sc.Name != inject.SidecarName || sc.ReadinessProbe == nil || sc.ReadinessProbe.HTTPGet == nil ||
			sc.ReadinessProbe.HTTPGet.Path != "/readyz" || sc.StartupProbe == nil || sc.StartupProbe.HTTPGet.Path != "/readyz" {
			t.Fatalf("sidecar %s: readinessProbe %+v, startupProbe %+v; want both on /readyz", sc.Name, sc.ReadinessProbe, sc.StartupProbe)
		}
		// Idempotent in this mode too.
		injector, err := inject.New(sidecarConfig(), k8s)
		if err != nil {
			t.Fatal(err)
		}
		again := got.DeepCopy()
		injector.Inject(again)
		if diff := cmp.Diff(got.Spec, again.Spec); diff != "" {
			t.Errorf("second injection changed the spec (-first +second):\n%s", diff)
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		ns := newNamespace(t, enabledNS)
		first, err := createPod(t, appPod(ns, nil))
		if err != nil {
			t.Fatalf("Create() = %v", err)
		}
		// Mutating the mutated spec again changes nothing.
		injector, err := inject.New(sidecarConfig(), k8s)
		if err != nil {
			t.Fatal(err)
		}
		again := first.DeepCopy()
		injector.Inject(again)
		if diff := cmp.Diff(first.Spec, again.Spec); diff != "" {
			t.Errorf("second injection changed the spec (-first +second):\n%s", diff)
		}
		// A pod submitted with an injected spec (e.g. copied from a running
		// pod) comes back with one sidecar and one of each piece.
		resubmit := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "copy-", Namespace: ns, Labels: first.Labels},
			Spec:       *first.Spec.DeepCopy(),
		}
		second, err := createPod(t, resubmit)
		if err != nil {
			t.Fatalf("Create(copy) = %v", err)
		}
		if diff := cmp.Diff(first.Spec, second.Spec); diff != "" {
			t.Errorf("re-injected copy differs (-first +second):\n%s", diff)
		}
	})

	t.Run("untouched", func(t *testing.T) {
		tests := []struct {
			name     string
			nsLabels map[string]string
			podLabel map[string]string
			ns       string
		}{
			{name: "pod opted out of an opted-in namespace", nsLabels: enabledNS, podLabel: podOut},
			{name: "nothing opted in", nsLabels: nil, podLabel: nil},
			{name: "namespace disabled", nsLabels: map[string]string{kalpcv1alpha1.LabelInjection: "disabled"}},
			{name: "operator namespace", ns: operatorNamespace, podLabel: podIn},
			{name: "kube-system", ns: "kube-system", podLabel: podIn},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				ns := tt.ns
				if ns == "" {
					ns = newNamespace(t, tt.nsLabels)
				}
				want := appPod(ns, tt.podLabel)
				got, err := createPod(t, want.DeepCopy())
				if err != nil {
					t.Fatalf("Create() = %v", err)
				}
				assertNotInjected(t, got)
			})
		}
	})
}

// TestHandlerChecksOptIn calls the handler directly with pods the webhook
// configuration's selectors would not send, as a misconfigured selector
// might: it must not inject them.
func TestHandlerChecksOptIn(t *testing.T) {
	injector, err := inject.New(sidecarConfig(), k8s)
	if err != nil {
		t.Fatal(err)
	}
	plain := newNamespace(t, nil)
	for _, pod := range []*corev1.Pod{
		appPod("kube-system", podIn),
		appPod(operatorNamespace, podIn),
		appPod(plain, nil),
		appPod(newNamespace(t, enabledNS), podOut),
	} {
		got := pod.DeepCopy()
		if err := injector.Default(t.Context(), got); err != nil {
			t.Fatalf("Default(%s) = %v", pod.Namespace, err)
		}
		if diff := cmp.Diff(pod, got); diff != "" {
			t.Errorf("Default changed a pod in %s that did not opt in (-want +got):\n%s", pod.Namespace, diff)
		}
	}
}

// TestWebhookDown checks failurePolicy Fail: with no webhook server, pods
// that must get the sidecar are refused with a clear error, and other pods
// are created as usual because the API server never calls the webhook for
// them.
func TestWebhookDown(t *testing.T) {
	ns := newNamespace(t, enabledNS)
	_, err := createPod(t, appPod(ns, nil))
	if err == nil {
		t.Fatal("Create() succeeded with the webhook down, want refusal")
	}
	for _, want := range []string{`failed calling webhook "namespace.inject.kalpc.io"`, "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Create() = %v\nwant it to contain %q", err, want)
		}
	}
	_, err = createPod(t, appPod(newNamespace(t, nil), podIn))
	if err == nil || !strings.Contains(err.Error(), `failed calling webhook "pod.inject.kalpc.io"`) {
		t.Errorf("Create(opted-in pod) = %v, want refusal by pod.inject.kalpc.io", err)
	}

	got, err := createPod(t, appPod(newNamespace(t, nil), nil))
	if err != nil {
		t.Fatalf("Create(pod that did not opt in) = %v, want success", err)
	}
	assertNotInjected(t, got)
	got, err = createPod(t, appPod(ns, podOut))
	if err != nil {
		t.Fatalf("Create(pod that opted out) = %v, want success", err)
	}
	assertNotInjected(t, got)
}

// assertInjected checks every piece the webhook injects into appPod.
func assertInjected(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if got := pod.Labels[kalpcv1alpha1.LabelSidecar]; got != kalpcv1alpha1.LabelSidecarInjected {
		t.Errorf("label %s = %q, want %q", kalpcv1alpha1.LabelSidecar, got, kalpcv1alpha1.LabelSidecarInjected)
	}

	// The sidecar is the first init container, a native sidecar.
	names := func(cs []corev1.Container) []string {
		var n []string
		for _, c := range cs {
			n = append(n, c.Name)
		}
		return n
	}
	if diff := cmp.Diff([]string{inject.SidecarName, "setup"}, names(pod.Spec.InitContainers)); diff != "" {
		t.Fatalf("init containers (-want +got):\n%s", diff)
	}
	sc := pod.Spec.InitContainers[0]
	if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("sidecar restartPolicy = %v, want Always", sc.RestartPolicy)
	}
	if sc.Image != "registry.example/kalpc/sidecar:test" || sc.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("sidecar image = %s (%s)", sc.Image, sc.ImagePullPolicy)
	}
	if sc.StartupProbe == nil || sc.StartupProbe.HTTPGet == nil || sc.StartupProbe.HTTPGet.Path != "/readyz" ||
		sc.StartupProbe.HTTPGet.Port.StrVal != "kalpc-health" {
		t.Errorf("sidecar startupProbe = %+v, want GET /readyz on kalpc-health", sc.StartupProbe)
	}
	// Ready means serving: the readiness probe passes only while the app
	// publishes every ConnectionPort selecting the pod; the kubelet
	// counts a native sidecar's readiness in the pod's Ready condition.
	if sc.ReadinessProbe == nil || sc.ReadinessProbe.HTTPGet == nil || sc.ReadinessProbe.HTTPGet.Path != "/readyz/published" ||
		sc.ReadinessProbe.HTTPGet.Port.StrVal != "kalpc-health" || sc.ReadinessProbe.PeriodSeconds != 2 || sc.ReadinessProbe.FailureThreshold != 2 {
		t.Errorf("sidecar readinessProbe = %+v, want GET /readyz/published on kalpc-health every 2s, 2 failures", sc.ReadinessProbe)
	}
	if sc.LivenessProbe == nil {
		t.Errorf("sidecar liveness probe missing")
	}
	if diff := cmp.Diff(wantSidecarArgs, sc.Args); diff != "" {
		t.Errorf("sidecar args (-want +got):\n%s", diff)
	}
	wantEnv := map[string]string{
		"KALPC_POD_NAME": "metadata.name", "KALPC_POD_NAMESPACE": "metadata.namespace", "KALPC_POD_UID": "metadata.uid",
		"KALPC_NODE_NAME": "spec.nodeName", "KALPC_SERVICE_ACCOUNT": "spec.serviceAccountName",
	}
	gotEnv := map[string]string{}
	for _, e := range sc.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			gotEnv[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if diff := cmp.Diff(wantEnv, gotEnv); diff != "" {
		t.Errorf("sidecar downward API env (-want +got):\n%s", diff)
	}
	wantRes := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	if !cmp.Equal(wantRes.Requests.Cpu().String(), sc.Resources.Requests.Cpu().String()) ||
		!cmp.Equal(wantRes.Limits.Memory().String(), sc.Resources.Limits.Memory().String()) ||
		!cmp.Equal(wantRes.Requests.Memory().String(), sc.Resources.Requests.Memory().String()) {
		t.Errorf("sidecar resources = %+v, want %+v", sc.Resources, wantRes)
	}
	wantSC := &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		RunAsUser:                ptr.To[int64](65532),
		RunAsGroup:               ptr.To[int64](65532),
		ReadOnlyRootFilesystem:   ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Privileged:               ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if diff := cmp.Diff(wantSC, sc.SecurityContext); diff != "" {
		t.Errorf("sidecar securityContext (-want +got):\n%s", diff)
	}
	wantMounts := []corev1.VolumeMount{
		{Name: "kalpc-node", MountPath: "/var/run/kalpc/node"},
		{Name: "kalpc-pod", MountPath: "/var/run/kalpc/pod"},
		{Name: "kalpc-token", MountPath: "/var/run/secrets/kalpc.io/serviceaccount", ReadOnly: true},
		// The sidecar's own API credentials: the ServiceAccount admission
		// plugin runs before webhooks and never mounts into the sidecar.
		{Name: "kalpc-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
	}
	if diff := cmp.Diff(wantMounts, sc.VolumeMounts); diff != "" {
		t.Errorf("sidecar mounts (-want +got):\n%s", diff)
	}

	// Volumes: the user's, then the node directory, the pod directory and
	// the projected tokens.
	vol := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vol[v.Name] = v
	}
	if len(pod.Spec.Volumes) != 5 {
		t.Errorf("pod has %d volumes, want 5 (data + 4 injected)", len(pod.Spec.Volumes))
	}
	// The default mode: kalpc's CSI driver, with nothing in the volume a
	// pod could forge (the driver reads the pod from the API server).
	if diff := cmp.Diff(corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "csi.kalpc.io"}}, vol["kalpc-node"].VolumeSource); diff != "" {
		t.Errorf("kalpc-node volume (-want +got):\n%s", diff)
	}
	if vol["kalpc-pod"].EmptyDir == nil {
		t.Errorf("kalpc-pod volume = %+v, want emptyDir", vol["kalpc-pod"])
	}
	wantToken := &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: "kalpc.io", ExpirationSeconds: ptr.To[int64](600), Path: "token",
		}}},
		DefaultMode: ptr.To[int32](0o644), // the API server's default
	}
	if diff := cmp.Diff(wantToken, vol["kalpc-token"].Projected); diff != "" {
		t.Errorf("kalpc-token volume (-want +got):\n%s", diff)
	}
	wantAPI := &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr.To[int64](3607), Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
				Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
			}}}},
		},
		DefaultMode: ptr.To[int32](0o644),
	}
	if diff := cmp.Diff(wantAPI, vol["kalpc-api-access"].Projected); diff != "" {
		t.Errorf("kalpc-api-access volume (-want +got):\n%s", diff)
	}

	// Every app container gets the pod directory and KALPC_SOCKET, and
	// nothing else of kalpc; the other init container gets nothing.
	for _, c := range pod.Spec.Containers {
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == "kalpc-pod" && m.MountPath == "/var/run/kalpc/pod" && !m.ReadOnly
		}) {
			t.Errorf("container %s lacks the pod directory mount: %+v", c.Name, c.VolumeMounts)
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "KALPC_SOCKET" && e.Value == "/var/run/kalpc/pod/kalpc.sock"
		}) {
			t.Errorf("container %s lacks KALPC_SOCKET: %+v", c.Name, c.Env)
		}
		for _, m := range c.VolumeMounts {
			if m.Name == "kalpc-node" || m.Name == "kalpc-token" {
				t.Errorf("app container %s mounts %s, which only the sidecar may", c.Name, m.Name)
			}
		}
	}
	if c := pod.Spec.Containers[0]; c.Env[0].Name != "A" || c.Env[0].Value != "1" {
		t.Errorf("container %s lost its own env: %+v", c.Name, c.Env)
	}
	if c := pod.Spec.Containers[1]; c.VolumeMounts[0].Name != "data" {
		t.Errorf("container %s lost its own mount: %+v", c.Name, c.VolumeMounts)
	}
	if setup := pod.Spec.InitContainers[1]; len(setup.VolumeMounts) != 0 || len(setup.Env) != 0 {
		t.Errorf("init container setup was changed: %+v", setup)
	}
}

// TestWebhookHostPathMode runs the webhook in hostPath mode, kept for
// clusters without the CSI driver: the node directory is a hostPath volume
// and everything else is as in the default mode.
func TestWebhookHostPathMode(t *testing.T) {
	cfg := sidecarConfig()
	cfg.NodeVolume = inject.NodeVolumeHostPath
	startWebhook(t, cfg)
	got, err := createPod(t, appPod(newNamespace(t, enabledNS), nil))
	if err != nil {
		t.Fatalf("Create() = %v", err)
	}
	var node *corev1.Volume
	for i, v := range got.Spec.Volumes {
		if v.Name == "kalpc-node" {
			node = &got.Spec.Volumes[i]
		}
	}
	want := corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/run/kalpc", Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}
	if node == nil {
		t.Fatalf("no kalpc-node volume in %+v", got.Spec.Volumes)
	}
	if diff := cmp.Diff(want, node.VolumeSource); diff != "" {
		t.Errorf("kalpc-node volume (-want +got):\n%s", diff)
	}
	if got.Spec.InitContainers[0].Name != inject.SidecarName {
		t.Errorf("first init container is %q, want the sidecar", got.Spec.InitContainers[0].Name)
	}
}

// TestWebhookMetricsAuth runs the webhook with Config.MetricsAuth (the
// operator's --sidecar-metrics-auth, the chart's sidecar.metricsAuth): the
// injected sidecar gets --metrics-auth after its other arguments.
func TestWebhookMetricsAuth(t *testing.T) {
	cfg := sidecarConfig()
	cfg.MetricsAuth = true
	startWebhook(t, cfg)
	got, err := createPod(t, appPod(newNamespace(t, enabledNS), nil))
	if err != nil {
		t.Fatalf("Create() = %v", err)
	}
	sc := got.Spec.InitContainers[0]
	if sc.Name != inject.SidecarName {
		t.Fatalf("first init container is %q, want the sidecar", sc.Name)
	}
	if diff := cmp.Diff(append(slices.Clone(wantSidecarArgs), "--metrics-auth"), sc.Args); diff != "" {
		t.Errorf("sidecar args (-want +got):\n%s", diff)
	}
}

// TestConfigNodeVolume checks the mode's default and that an unknown mode
// is refused.
func TestConfigNodeVolume(t *testing.T) {
	cfg := sidecarConfig()
	cfg.NodeVolume = "nfs"
	if _, err := inject.New(cfg, k8s); err == nil || !strings.Contains(err.Error(), "node volume mode") {
		t.Errorf("New(NodeVolume: nfs) = %v, want an error naming the node volume mode", err)
	}
}

// assertNotInjected checks that no piece of kalpc is in pod.
func assertNotInjected(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if _, ok := pod.Labels[kalpcv1alpha1.LabelSidecar]; ok {
		t.Errorf("pod has label %s", kalpcv1alpha1.LabelSidecar)
	}
	for _, c := range append(slices.Clone(pod.Spec.InitContainers), pod.Spec.Containers...) {
		if c.Name == inject.SidecarName {
			t.Errorf("pod has the sidecar container")
		}
		for _, e := range c.Env {
			if e.Name == inject.SocketEnv {
				t.Errorf("container %s has %s", c.Name, e.Name)
			}
		}
	}
	for _, v := range pod.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kalpc-") {
			t.Errorf("pod has volume %s", v.Name)
		}
	}
}
