package chart_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// installEnv is one API server and a client for it.
type installEnv struct {
	cfg *rest.Config
	k8s client.Client
}

func startAPIServer(t *testing.T) *installEnv {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set; run with KUBEBUILDER_ASSETS=$(hack/envtest-bins.sh)")
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("failed to start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("failed to stop envtest: %v", err)
		}
	})
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, kalpcv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return &installEnv{cfg: cfg, k8s: k8s}
}

// helmConfig returns a Helm action configuration for the API server, which
// keeps releases in Secrets of the release namespace, as the helm CLI does.
func (e *installEnv) helmConfig(t *testing.T) *action.Configuration {
	t.Helper()
	cfg := &action.Configuration{}
	getter := &restConfigGetter{config: e.cfg, namespace: releaseNamespace}
	if err := cfg.Init(getter, releaseNamespace, "secret", func(format string, v ...any) { t.Logf("helm: "+format, v...) }); err != nil {
		t.Fatalf("failed to initialize Helm: %v", err)
	}
	return cfg
}

func (e *installEnv) install(t *testing.T, vals map[string]any) *release.Release {
	t.Helper()
	install := action.NewInstall(e.helmConfig(t))
	install.ReleaseName = releaseName
	install.Namespace = releaseNamespace
	install.CreateNamespace = true
	install.Timeout = time.Minute
	rel, err := install.RunWithContext(t.Context(), loadChart(t), vals)
	if err != nil {
		t.Fatalf("helm install failed: %v", err)
	}
	if rel.Info.Status != release.StatusDeployed {
		t.Fatalf("release status %s, want deployed", rel.Info.Status)
	}
	return rel
}

func (e *installEnv) upgrade(t *testing.T, vals map[string]any) *release.Release {
	t.Helper()
	upgrade := action.NewUpgrade(e.helmConfig(t))
	upgrade.Namespace = releaseNamespace
	upgrade.Timeout = time.Minute
	rel, err := upgrade.RunWithContext(t.Context(), releaseName, loadChart(t), vals)
	if err != nil {
		t.Fatalf("helm upgrade failed: %v", err)
	}
	return rel
}

func (e *installEnv) uninstall(t *testing.T) {
	t.Helper()
	uninstall := action.NewUninstall(e.helmConfig(t))
	uninstall.Timeout = time.Minute
	res, err := uninstall.Run(releaseName)
	if err != nil {
		t.Fatalf("helm uninstall failed: %v", err)
	}
	t.Logf("helm uninstall: %s", res.Info)
}

// TestInstallUpgradeUninstall installs the chart into a real API server,
// runs the real operator binary with the chart's ServiceAccount and flags,
// upgrades the release with changed values and uninstalls it, checking what
// the API server holds at every step.
func TestInstallUpgradeUninstall(t *testing.T) {
	operatorBin := buildOperator(t)
	e := startAPIServer(t)
	ctx := t.Context()

	// helm install, default values.
	rel := e.install(t, nil)
	objs, err := parseManifest(rel.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 20 {
		t.Errorf("release has %d objects, want 20", len(objs))
	}
	for _, o := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := e.k8s.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Errorf("%s %s was not created: %v", o.GetKind(), o.GetName(), err)
		}
	}
	e.waitCRDEstablished(t)

	// The CRD serves and validates ConnectionPorts.
	port := &kalpcv1alpha1.ConnectionPort{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: "default"},
		Spec:       kalpcv1alpha1.ConnectionPortSpec{Servers: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}}},
	}
	if err := e.k8s.Create(ctx, port); err != nil {
		t.Fatalf("failed to create a ConnectionPort: %v", err)
	}
	bad := port.DeepCopy()
	bad.ResourceVersion, bad.Name = "", "bad"
	bad.Spec.Clients = []kalpcv1alpha1.ClientRule{{}} // a rule must name some clients
	if err := e.k8s.Create(ctx, bad); !apierrors.IsInvalid(err) {
		t.Errorf("invalid ConnectionPort: got %v, want Invalid", err)
	}

	// The webhook configuration is live: opted-in pods reach it (and, with
	// no operator answering, fail closed), other pods and the release
	// namespace's do not.
	e.createNamespace(t, "apps", nil)
	e.createNamespace(t, "legacy", map[string]string{"kalpc.io/injection": "enabled"})
	e.expectWebhookCall(t, "apps", map[string]string{"kalpc.io/inject": "true"}, "pod.inject.kalpc.io")
	e.expectWebhookCall(t, "legacy", nil, "namespace.inject.kalpc.io")
	e.createPod(t, "legacy", map[string]string{"kalpc.io/inject": "false"})
	e.createPod(t, "apps", nil)
	e.createPod(t, releaseNamespace, map[string]string{"kalpc.io/inject": "true"})

	// The operator's RBAC is as narrow as the chart says.
	e.checkOperatorAccess(t)

	// The real operator, as the chart's ServiceAccount with the chart's
	// flags: it must get ready, create its certificate, patch the
	// caBundle, win the Lease, and bind the sidecar ClusterRole.
	stop := e.runOperator(t, operatorBin, rel)
	secret := &corev1.Secret{}
	if err := e.k8s.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "kalpc-webhook-tls"}, secret); err != nil {
		t.Fatalf("the operator did not create its certificate Secret: %v", err)
	}
	caBundle := e.waitCABundle(t)
	if !strings.Contains(string(caBundle), strings.TrimSpace(string(secret.Data["ca.crt"]))) {
		t.Errorf("caBundle does not hold the operator's CA")
	}
	lease := &coordinationv1.Lease{}
	if err := e.k8s.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "kalpc-operator.kalpc.io"}, lease); err != nil || ptr.Deref(lease.Spec.HolderIdentity, "") == "" {
		t.Errorf("the operator holds no Lease: %v %+v", err, lease.Spec)
	}
	e.createServiceAccount(t, "apps", "app")
	e.createPod(t, "apps", map[string]string{kalpcv1alpha1.LabelSidecar: kalpcv1alpha1.LabelSidecarInjected}, func(p *corev1.Pod) { p.Spec.ServiceAccountName = "app" })
	e.waitSidecarBinding(t, "apps", "app")
	// Everything the operator created is owned by an object of the release,
	// so that Kubernetes' garbage collector deletes it on helm uninstall
	// (envtest has no garbage collector; test/e2e checks the collection).
	e.expectOwner(t, &rbacv1.ClusterRoleBinding{}, client.ObjectKey{Name: "kalpc-sidecar:apps"}, "ClusterRole", "kalpc-sidecar")
	e.expectOwner(t, &corev1.Secret{}, client.ObjectKeyFromObject(secret), "MutatingWebhookConfiguration", "kalpc-sidecar-injector")
	e.expectOwner(t, &coordinationv1.Lease{}, client.ObjectKeyFromObject(lease), "MutatingWebhookConfiguration", "kalpc-sidecar-injector")
	stop()

	// helm upgrade with changed values.
	upgraded := e.upgrade(t, values(t, `
operator:
  replicaCount: 3
sidecar:
  logLevel: debug
  nodeVolume: hostPath
webhook:
  timeoutSeconds: 5
  excludedNamespaces: [kube-system, kube-public, kube-node-lease, legacy]
`))
	if upgraded.Version != 2 || upgraded.Info.Status != release.StatusDeployed {
		t.Errorf("upgraded release: version %d, status %s", upgraded.Version, upgraded.Info.Status)
	}
	d := &appsv1.Deployment{}
	if err := e.k8s.Get(ctx, client.ObjectKey{Namespace: releaseNamespace, Name: "kalpc-operator"}, d); err != nil {
		t.Fatal(err)
	}
	if ptr.Deref(d.Spec.Replicas, 0) != 3 || !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--sidecar-log-level=debug") {
		t.Errorf("upgrade did not change the Deployment: replicas %v, args %v", d.Spec.Replicas, d.Spec.Template.Spec.Containers[0].Args)
	}
	// Switching to hostPath mode removes the CSI driver and the node
	// DaemonSet's API access.
	if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, "--sidecar-node-volume=hostPath") {
		t.Errorf("operator args after the switch to hostPath: %v", d.Spec.Template.Spec.Containers[0].Args)
	}
	for _, o := range []client.Object{&storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: "csi.kalpc.io"}}, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kalpc-nodeprep"}}} {
		if err := e.k8s.Get(ctx, client.ObjectKeyFromObject(o), o); !apierrors.IsNotFound(err) {
			t.Errorf("%T %s exists in hostPath mode (err %v)", o, o.GetName(), err)
		}
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := e.k8s.Get(ctx, client.ObjectKey{Name: "kalpc-sidecar-injector"}, mwc); err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if ptr.Deref(w.TimeoutSeconds, 0) != 5 {
			t.Errorf("webhook %s timeout %v after upgrade, want 5", w.Name, w.TimeoutSeconds)
		}
		// Helm's three-way merge must keep what the operator set.
		if string(w.ClientConfig.CABundle) != string(caBundle) {
			t.Errorf("webhook %s lost the operator's caBundle in the upgrade", w.Name)
		}
	}
	// The newly excluded namespace no longer reaches the webhook.
	e.createPod(t, "legacy", nil)

	// helm uninstall: everything of the release goes, except the CRD
	// (crds.keep) and with it the ports.
	e.uninstall(t)
	for _, o := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		err := e.k8s.Get(ctx, client.ObjectKeyFromObject(o), got)
		if o.GetKind() == "CustomResourceDefinition" {
			if err != nil {
				t.Errorf("CRD was deleted although crds.keep: %v", err)
			}
			continue
		}
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s %s still exists after uninstall (err %v)", o.GetKind(), o.GetName(), err)
		}
	}
	if err := e.k8s.Get(ctx, client.ObjectKeyFromObject(port), port); err != nil {
		t.Errorf("ConnectionPort gone after uninstall with crds.keep: %v", err)
	}
	// What the operator created is not the release's, but owned by its
	// objects: still here only because envtest collects no garbage.
	for _, o := range []client.Object{&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kalpc-sidecar:apps"}}, secret, lease} {
		if err := e.k8s.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			t.Errorf("%T %s: %v", o, o.GetName(), err)
			continue
		}
		for _, ref := range o.GetOwnerReferences() {
			got := &unstructured.Unstructured{}
			got.SetAPIVersion(ref.APIVersion)
			got.SetKind(ref.Kind)
			if err := e.k8s.Get(ctx, client.ObjectKey{Name: ref.Name}, got); !apierrors.IsNotFound(err) {
				t.Errorf("the owner %s %s of %T %s still exists after uninstall (err %v)", ref.Kind, ref.Name, o, o.GetName(), err)
			}
		}
	}

	// A new install adopts the kept CRD. To remove the CRD with a release,
	// upgrade with crds.keep=false first (Helm keeps an adopted object's
	// annotations on install), then uninstall.
	e.install(t, nil)
	e.upgrade(t, values(t, "crds: {keep: false}"))
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := e.k8s.Get(ctx, client.ObjectKey{Name: "connectionports.kalpc.io"}, crd); err != nil || crd.Annotations["helm.sh/resource-policy"] != "" {
		t.Errorf("CRD after an upgrade with crds.keep=false: %v, annotations %v", err, crd.Annotations)
	}
	e.uninstall(t)
	eventually(t, 30*time.Second, func() error {
		err := e.k8s.Get(ctx, client.ObjectKey{Name: "connectionports.kalpc.io"}, &apiextensionsv1.CustomResourceDefinition{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("CRD still there (err %v) after uninstall with crds.keep=false", err)
	})
}

// eventually retries f until it succeeds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *installEnv) waitCRDEstablished(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := e.k8s.Get(t.Context(), client.ObjectKey{Name: "connectionports.kalpc.io"}, crd); err != nil {
			return err
		}
		for _, c := range crd.Status.Conditions {
			if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("CRD not established: %+v", crd.Status.Conditions)
	})
}

func (e *installEnv) createNamespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := e.k8s.Create(t.Context(), ns); err != nil {
		t.Fatal(err)
	}
}

func (e *installEnv) createServiceAccount(t *testing.T, namespace, name string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := e.k8s.Create(t.Context(), sa); err != nil {
		t.Fatal(err)
	}
}

// newPod returns a minimal pod.
func newPod(namespace string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: "app-", Labels: labels},
		Spec: corev1.PodSpec{
			Containers:                   []corev1.Container{{Name: "app", Image: "app:1"}},
			AutomountServiceAccountToken: ptr.To(false),
		},
	}
}

func (e *installEnv) createPod(t *testing.T, namespace string, labels map[string]string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	p := newPod(namespace, labels)
	for _, m := range mutate {
		m(p)
	}
	if err := e.k8s.Create(t.Context(), p); err != nil {
		t.Fatalf("failed to create a pod in %s with labels %v: %v", namespace, labels, err)
	}
	return p
}

// expectWebhookCall creates a pod that must go to the webhook named hook,
// which no operator answers.
func (e *installEnv) expectWebhookCall(t *testing.T, namespace string, labels map[string]string, hook string) {
	t.Helper()
	err := e.k8s.Create(t.Context(), newPod(namespace, labels))
	if err == nil || !strings.Contains(err.Error(), `failed calling webhook "`+hook+`"`) {
		t.Errorf("pod in %s with labels %v: got %v, want a failed call of webhook %s", namespace, labels, err, hook)
	}
}

// expectOwner waits until the object at key is owned by the release's
// object of kind and name (with its current UID).
func (e *installEnv) expectOwner(t *testing.T, obj client.Object, key client.ObjectKey, kind, name string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		if err := e.k8s.Get(t.Context(), key, obj); err != nil {
			return err
		}
		owner := &unstructured.Unstructured{}
		for _, ref := range obj.GetOwnerReferences() {
			if ref.Kind != kind || ref.Name != name {
				continue
			}
			owner.SetAPIVersion(ref.APIVersion)
			owner.SetKind(ref.Kind)
			if err := e.k8s.Get(t.Context(), client.ObjectKey{Name: name}, owner); err != nil {
				return err
			}
			if owner.GetUID() != ref.UID {
				return fmt.Errorf("%T %s is owned by %s %s with UID %s, not the current %s", obj, key, kind, name, ref.UID, owner.GetUID())
			}
			return nil
		}
		return fmt.Errorf("%T %s has owners %v, want %s %s", obj, key, obj.GetOwnerReferences(), kind, name)
	})
}

// checkOperatorAccess asks the API server what the operator's
// ServiceAccount may do.
func (e *installEnv) checkOperatorAccess(t *testing.T) {
	t.Helper()
	for _, c := range []struct {
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		{authorizationv1.ResourceAttributes{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "kalpc-sidecar"}, true},
		{authorizationv1.ResourceAttributes{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "cluster-admin"}, false},
		{authorizationv1.ResourceAttributes{Verb: "get", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "kalpc-sidecar"}, true},
		{authorizationv1.ResourceAttributes{Verb: "get", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "cluster-admin"}, false},
		{authorizationv1.ResourceAttributes{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, false},
		{authorizationv1.ResourceAttributes{Verb: "update", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "kalpc-sidecar-injector"}, true},
		{authorizationv1.ResourceAttributes{Verb: "update", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "other"}, false},
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: releaseNamespace, Name: "kalpc-webhook-tls"}, true},
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: releaseNamespace, Name: "sh.helm.release.v1.kalpc.v1"}, false},
		{authorizationv1.ResourceAttributes{Verb: "list", Resource: "secrets", Namespace: releaseNamespace}, false},
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "apps", Name: "kalpc-webhook-tls"}, false},
		{authorizationv1.ResourceAttributes{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: releaseNamespace, Name: "kalpc-operator.kalpc.io"}, true},
		{authorizationv1.ResourceAttributes{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: releaseNamespace, Name: "other"}, false},
		{authorizationv1.ResourceAttributes{Verb: "create", Resource: "pods", Namespace: "apps"}, false},
		{authorizationv1.ResourceAttributes{Verb: "update", Group: "kalpc.io", Resource: "connectionports", Namespace: "apps", Name: "x"}, false},
		{authorizationv1.ResourceAttributes{Verb: "patch", Group: "kalpc.io", Resource: "connectionports", Subresource: "status", Namespace: "apps", Name: "x"}, true},
	} {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:" + releaseNamespace + ":kalpc-operator",
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNamespace, "system:authenticated"},
			ResourceAttributes: &c.attrs,
		}}
		if err := e.k8s.Create(t.Context(), sar); err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != c.want {
			t.Errorf("operator may %s %s/%s %q in %q: %v, want %v", c.attrs.Verb, c.attrs.Resource, c.attrs.Subresource, c.attrs.Name, c.attrs.Namespace, sar.Status.Allowed, c.want)
		}
	}
}

// buildOperator builds cmd/operator for the test, with the race detector
// when the test has it (so that it reuses the packages `go test -race`
// compiled), or returns $KALPC_OPERATOR_BIN when set.
func buildOperator(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("KALPC_OPERATOR_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "kalpc-operator")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(t.Context(), "go", append(args, "./cmd/operator")...)
	cmd.Dir = repoRoot
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("failed to build the operator: %v\n%s", err, out)
	}
	t.Logf("built the operator in %s", time.Since(start).Round(time.Second))
	return bin
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runOperator starts the operator binary with the flags of the release's
// Deployment (only the listen addresses moved to free local ports),
// authenticated as the release's ServiceAccount, and waits until it is
// ready. The returned func stops it and checks it exited cleanly.
func (e *installEnv) runOperator(t *testing.T, bin string, rel *release.Release) (stop func()) {
	t.Helper()
	objs, err := parseManifest(rel.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	var d *appsv1.Deployment
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			d = &appsv1.Deployment{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	if d == nil {
		t.Fatal("release has no Deployment")
	}
	c := d.Spec.Template.Spec.Containers[0]
	healthPort := freePort(t)
	var args []string
	for _, a := range c.Args {
		flag, _, _ := strings.Cut(a, "=")
		switch flag {
		case "--health-probe-bind-address":
			a = flag + "=127.0.0.1:" + strconv.Itoa(healthPort)
		case "--metrics-bind-address":
			a = flag + "=127.0.0.1:" + strconv.Itoa(freePort(t))
		case "--webhook-port":
			a = flag + "=" + strconv.Itoa(freePort(t))
		}
		args = append(args, a)
	}
	kubeconfigPath := filepath.Join(t.TempDir(), "kubeconfig")
	sa := d.Spec.Template.Spec.ServiceAccountName
	kc := kubeconfig(e.cfg, releaseNamespace, &impersonation{
		user:   "system:serviceaccount:" + releaseNamespace + ":" + sa,
		groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNamespace, "system:authenticated"},
	})
	if err := clientcmd.WriteToFile(*kc, kubeconfigPath); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	// Kubernetes expands $(POD_NAMESPACE) from the env the Deployment sets.
	for i, a := range cmd.Args {
		cmd.Args[i] = strings.ReplaceAll(a, "$(POD_NAMESPACE)", releaseNamespace)
	}
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigPath, "POD_NAMESPACE="+releaseNamespace)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "operator.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	showLog := func() {
		out, _ := os.ReadFile(logFile.Name())
		t.Logf("operator log:\n%s", out)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				showLog()
				t.Errorf("operator exited with %v after SIGTERM", err)
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			showLog()
			t.Error("operator did not stop within 30s of SIGTERM")
		}
	}
	t.Cleanup(stop)

	readyz := "http://127.0.0.1:" + strconv.Itoa(healthPort) + "/readyz"
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-done:
			stopped = true
			showLog()
			t.Fatalf("operator exited before it was ready: %v", err)
		default:
		}
		resp, err := http.Get(readyz)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			showLog()
			t.Fatalf("operator not ready within 60s (last: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Cleanup(func() {
		if t.Failed() {
			showLog()
		}
	})
	return stop
}

// waitCABundle waits until every webhook of the release's configuration
// has the same non-empty caBundle, and returns it.
func (e *installEnv) waitCABundle(t *testing.T) []byte {
	t.Helper()
	var bundle []byte
	eventually(t, 30*time.Second, func() error {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := e.k8s.Get(t.Context(), client.ObjectKey{Name: "kalpc-sidecar-injector"}, mwc); err != nil {
			return err
		}
		bundle = mwc.Webhooks[0].ClientConfig.CABundle
		for _, w := range mwc.Webhooks {
			if len(w.ClientConfig.CABundle) == 0 || string(w.ClientConfig.CABundle) != string(bundle) {
				return fmt.Errorf("webhook %s has no caBundle yet", w.Name)
			}
		}
		return nil
	})
	return bundle
}

// waitSidecarBinding waits until the operator bound the sidecar ClusterRole
// to the ServiceAccount of the injected pod in namespace.
func (e *installEnv) waitSidecarBinding(t *testing.T, namespace, sa string) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		b := &rbacv1.ClusterRoleBinding{}
		if err := e.k8s.Get(t.Context(), client.ObjectKey{Name: "kalpc-sidecar:" + namespace}, b); err != nil {
			return fmt.Errorf("no sidecar ClusterRoleBinding for %s: %w", namespace, err)
		}
		if b.RoleRef.Name != "kalpc-sidecar" || len(b.Subjects) != 1 || b.Subjects[0].Name != sa || b.Subjects[0].Namespace != namespace {
			return fmt.Errorf("sidecar binding %+v %+v", b.RoleRef, b.Subjects)
		}
		return nil
	})
}
