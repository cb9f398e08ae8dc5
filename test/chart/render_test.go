package chart_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/utils/ptr"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

func TestDefaultObjects(t *testing.T) {
	r := render(t, nil)
	want := []string{
		"CSIDriver/csi.kalpc.io",
		"ClusterRole/kalpc-connectionport-editor",
		"ClusterRole/kalpc-connectionport-viewer",
		"ClusterRole/kalpc-metrics-reader",
		"ClusterRole/kalpc-nodeprep",
		"ClusterRole/kalpc-operator",
		"ClusterRole/kalpc-sidecar",
		"ClusterRoleBinding/kalpc-nodeprep",
		"ClusterRoleBinding/kalpc-operator",
		"CustomResourceDefinition/connectionports.kalpc.io",
		"DaemonSet/kalpc-nodeprep",
		"Deployment/kalpc-operator",
		"MutatingWebhookConfiguration/kalpc-sidecar-injector",
		"PodDisruptionBudget/kalpc-operator",
		"Role/kalpc-operator",
		"RoleBinding/kalpc-operator",
		"Service/kalpc-operator-metrics",
		"Service/kalpc-webhook",
		"ServiceAccount/kalpc-nodeprep",
		"ServiceAccount/kalpc-operator",
	}
	if diff := cmp.Diff(want, r.kinds()); diff != "" {
		t.Errorf("rendered objects (-want +got):\n%s", diff)
	}
	for _, o := range r.objects {
		l := o.GetLabels()
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if l[k] == "" {
				t.Errorf("%s/%s has no label %s", o.GetKind(), o.GetName(), k)
			}
		}
		if ns := o.GetNamespace(); ns != "" && ns != releaseNamespace {
			t.Errorf("%s/%s is in namespace %q, want the release namespace", o.GetKind(), o.GetName(), ns)
		}
	}
}

// operatorArgs returns the operator container's flags as a map.
func operatorArgs(t testing.TB, d *appsv1.Deployment) map[string]string {
	t.Helper()
	args := map[string]string{}
	for _, a := range d.Spec.Template.Spec.Containers[0].Args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			t.Fatalf("operator argument %q is not --flag=value", a)
		}
		if _, dup := args[k]; dup {
			t.Fatalf("operator flag %s is set twice", k)
		}
		args[k] = v
	}
	return args
}

func TestOperatorDeployment(t *testing.T) {
	r := render(t, nil)
	d := get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator")
	if got := ptr.Deref(d.Spec.Replicas, 0); got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("got %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image != "ghcr.io/kalpc/kalpc-operator:0.1.0" {
		t.Errorf("image = %q, want the appVersion tag", c.Image)
	}
	wantArgs := map[string]string{
		"--namespace":                   "$(POD_NAMESPACE)",
		"--leader-elect":                "true",
		"--leader-election-id":          "kalpc-operator.kalpc.io",
		"--health-probe-bind-address":   ":8081",
		"--metrics-bind-address":        ":8443",
		"--metrics-secure":              "true",
		"--enable-http2":                "false",
		"--webhook-port":                "9443",
		"--webhook-service":             "kalpc-webhook",
		"--webhook-configuration":       "kalpc-sidecar-injector",
		"--webhook-cert-provider":       "operator",
		"--webhook-cert-secret":         "kalpc-webhook-tls",
		"--webhook-cert-validity":       "2160h",
		"--webhook-ca-validity":         "43800h",
		"--webhook-cert-check-interval": "5m",
		"--sidecar-image":               "ghcr.io/kalpc/kalpc-sidecar:0.1.0",
		"--sidecar-image-pull-policy":   "IfNotPresent",
		"--sidecar-cpu-request":         "10m",
		"--sidecar-memory-request":      "32Mi",
		"--sidecar-cpu-limit":           "",
		"--sidecar-memory-limit":        "128Mi",
		"--sidecar-log-level":           "info",
		"--sidecar-run-as-user":         "65532",
		"--sidecar-health-port":         "15980",
		"--sidecar-metrics-port":        "15981",
		"--sidecar-metrics-auth":        "false",
		"--sidecar-cluster-role":        "kalpc-sidecar",
		"--sidecar-node-volume":         "csi",
		"--zap-log-level":               "info",
		"--zap-encoder":                 "json",
	}
	if diff := cmp.Diff(wantArgs, operatorArgs(t, d)); diff != "" {
		t.Errorf("operator flags (-want +got):\n%s", diff)
	}
	if len(c.Env) != 1 || c.Env[0].Name != "POD_NAMESPACE" || c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("env = %+v, want POD_NAMESPACE from metadata.namespace", c.Env)
	}

	// Probes on the health port.
	for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port.String() != "health" {
			t.Errorf("probe %s = %+v, want GET %s on port health", name, p, name)
		}
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if diff := cmp.Diff(map[string]int32{"webhook": 9443, "health": 8081, "metrics": 8443}, ports); diff != "" {
		t.Errorf("container ports (-want +got):\n%s", diff)
	}

	// Locked down: non-root, read-only, no capabilities, no escalation.
	sc := c.SecurityContext
	if sc == nil || !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.RunAsUser, 0) != 65532 ||
		!ptr.Deref(sc.ReadOnlyRootFilesystem, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
		ptr.Deref(sc.Privileged, true) || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("operator security context is not locked down: %+v", sc)
	}
	if psc := pod.SecurityContext; psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("operator pod has no RuntimeDefault seccomp profile: %+v", psc)
	}
	if c.Resources.Requests.Cpu().String() != "50m" || c.Resources.Limits.Memory().String() != "256Mi" {
		t.Errorf("operator resources = %+v", c.Resources)
	}
	if pod.ServiceAccountName != "kalpc-operator" {
		t.Errorf("serviceAccountName = %q", pod.ServiceAccountName)
	}
	if len(pod.Volumes) != 0 {
		t.Errorf("operator mounts volumes with operator-managed certificates: %+v", pod.Volumes)
	}
	if pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil {
		t.Errorf("operator replicas are not spread over nodes: %+v", pod.Affinity)
	}

	pdb := get[policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", "kalpc-operator")
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PDB = %+v, want minAvailable 1", pdb.Spec)
	}
	if diff := cmp.Diff(d.Spec.Selector, pdb.Spec.Selector); diff != "" {
		t.Errorf("PDB selector differs from the Deployment's (-deployment +pdb):\n%s", diff)
	}
}

// TestNamesAgree renders under another release name and namespace and
// checks that every name the operator is told by a flag is the name of an
// object the chart creates, and every grant limited by resourceNames names
// that object.
func TestNamesAgree(t *testing.T) {
	r, err := renderErr("prod", "ipc", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := get[appsv1.Deployment](t, r, "Deployment", "prod-kalpc-operator")
	args := operatorArgs(t, d)
	svc := get[corev1.Service](t, r, "Service", args["--webhook-service"])
	mwc := get[admissionregistrationv1.MutatingWebhookConfiguration](t, r, "MutatingWebhookConfiguration", args["--webhook-configuration"])
	get[rbacv1.ClusterRole](t, r, "ClusterRole", args["--sidecar-cluster-role"])
	role := get[rbacv1.Role](t, r, "Role", "prod-kalpc-operator")
	cr := get[rbacv1.ClusterRole](t, r, "ClusterRole", "prod-kalpc-operator")

	for _, w := range mwc.Webhooks {
		ref := w.ClientConfig.Service
		if ref == nil || ref.Name != svc.Name || ref.Namespace != "ipc" || ptr.Deref(ref.Port, 0) != svc.Spec.Ports[0].Port {
			t.Errorf("webhook %s calls %+v, want Service %s/%s port %d", w.Name, ref, "ipc", svc.Name, svc.Spec.Ports[0].Port)
		}
	}
	if diff := cmp.Diff(d.Spec.Selector.MatchLabels, svc.Spec.Selector); diff != "" {
		t.Errorf("webhook Service selects other pods than the Deployment's (-deployment +service):\n%s", diff)
	}
	resourceNames := func(rules []rbacv1.PolicyRule, resource, verb string) []string {
		var out []string
		for _, rule := range rules {
			if slices.Contains(rule.Resources, resource) && slices.Contains(rule.Verbs, verb) {
				out = append(out, rule.ResourceNames...)
			}
		}
		return out
	}
	for _, c := range []struct {
		rules            []rbacv1.PolicyRule
		resource, verb   string
		flag             string
		wantResourceName string
	}{
		{cr.Rules, "clusterroles", "bind", "--sidecar-cluster-role", args["--sidecar-cluster-role"]},
		{cr.Rules, "mutatingwebhookconfigurations", "update", "--webhook-configuration", args["--webhook-configuration"]},
		{role.Rules, "secrets", "update", "--webhook-cert-secret", args["--webhook-cert-secret"]},
		{role.Rules, "leases", "update", "--leader-election-id", args["--leader-election-id"]},
	} {
		if got := resourceNames(c.rules, c.resource, c.verb); !slices.Equal(got, []string{c.wantResourceName}) {
			t.Errorf("%s %s is granted on %q, want only %q (%s)", c.verb, c.resource, got, c.wantResourceName, c.flag)
		}
	}
	for _, want := range []string{"prod-kalpc-webhook", "prod-kalpc-sidecar-injector", "prod-kalpc-sidecar", "prod-kalpc-webhook-tls", "prod-kalpc-operator.kalpc.io"} {
		if !slices.ContainsFunc(mapValues(args), func(v string) bool { return v == want }) {
			t.Errorf("no operator flag names %q; flags: %v", want, args)
		}
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestWebhookMatchesGenerated checks the chart's webhooks against
// config/webhook/manifests.yaml, which controller-gen generates from the
// markers of internal/operator/inject: with the default values and the
// release namespace kalpc-system they must be the same, except for what the
// chart adds on purpose (service port, matchPolicy, scope).
func TestWebhookMatchesGenerated(t *testing.T) {
	generated := readYAMLDocs[admissionregistrationv1.MutatingWebhookConfiguration](t, "config/webhook/manifests.yaml")
	if len(generated) != 1 {
		t.Fatalf("config/webhook has %d configurations, want 1", len(generated))
	}
	r := render(t, nil)
	got := get[admissionregistrationv1.MutatingWebhookConfiguration](t, r, "MutatingWebhookConfiguration", generated[0].Name)
	for i := range got.Webhooks {
		w := &got.Webhooks[i]
		if ptr.Deref(w.ClientConfig.Service.Port, 0) != 443 || ptr.Deref(w.MatchPolicy, "") != admissionregistrationv1.Equivalent {
			t.Errorf("webhook %s: port %v, matchPolicy %v", w.Name, w.ClientConfig.Service.Port, w.MatchPolicy)
		}
		w.ClientConfig.Service.Port, w.MatchPolicy = nil, nil
		for j := range w.Rules {
			if ptr.Deref(w.Rules[j].Scope, "") != admissionregistrationv1.NamespacedScope {
				t.Errorf("webhook %s rule scope %v, want Namespaced", w.Name, w.Rules[j].Scope)
			}
			w.Rules[j].Scope = nil
		}
	}
	if diff := cmp.Diff(generated[0].Webhooks, got.Webhooks); diff != "" {
		t.Errorf("chart webhooks differ from config/webhook (-generated +chart):\n%s", diff)
	}
	if len(got.Annotations) != 0 {
		t.Errorf("annotations %v with operator-managed certificates", got.Annotations)
	}
	for _, w := range got.Webhooks {
		if len(w.ClientConfig.CABundle) != 0 {
			t.Errorf("webhook %s has a caBundle in the chart; the operator owns it", w.Name)
		}
	}
}

// rbacGrants flattens rules into "group/resource[/name]:verb" strings.
func rbacGrants(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		names := r.ResourceNames
		if len(names) == 0 {
			names = []string{""}
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, n := range names {
					for _, v := range r.Verbs {
						s := g + "/" + res
						if n != "" {
							s += "/" + n
						}
						out = append(out, s+":"+v)
					}
				}
			}
		}
		for _, u := range r.NonResourceURLs {
			for _, v := range r.Verbs {
				out = append(out, u+":"+v)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestRBACMatchesGenerated checks the chart's ClusterRoles against
// config/rbac, which controller-gen generates from the +kubebuilder:rbac
// markers, and that the chart's namespaced Role grants nothing the
// generated Role does not, only narrower (by resourceNames).
func TestRBACMatchesGenerated(t *testing.T) {
	r := render(t, nil)
	for _, c := range []struct{ file, name string }{
		{"config/rbac/role.yaml", "kalpc-operator"},
		{"config/rbac/sidecar_role.yaml", "kalpc-sidecar"},
	} {
		generated := readYAMLDocs[rbacv1.ClusterRole](t, c.file)[0]
		got := get[rbacv1.ClusterRole](t, r, "ClusterRole", c.name)
		if diff := cmp.Diff(rbacGrants(generated.Rules), rbacGrants(got.Rules)); diff != "" {
			t.Errorf("ClusterRole %s differs from %s (-generated +chart):\n%s", c.name, c.file, diff)
		}
	}

	var generatedRole *rbacv1.Role
	for _, doc := range readYAMLDocs[rbacv1.Role](t, "config/rbac/role.yaml") {
		if doc.Kind == "Role" {
			generatedRole = doc
		}
	}
	if generatedRole == nil {
		t.Fatal("config/rbac/role.yaml has no Role")
	}
	role := get[rbacv1.Role](t, r, "Role", "kalpc-operator")
	allowed := map[string]bool{
		// Leader election's core/v1 Events on its Lease (controller-runtime
		// records them with the deprecated recorder).
		"/events:create": true, "/events:patch": true,
	}
	for _, g := range rbacGrants(generatedRole.Rules) {
		allowed[g] = true
	}
	var chartRole []string
	for _, g := range rbacGrants(role.Rules) {
		chartRole = append(chartRole, g)
		if allowed[g] {
			continue
		}
		// group/resource/name:verb is allowed if group/resource:verb is.
		parts := strings.SplitN(g, "/", 3)
		if len(parts) == 3 {
			name, verb, _ := strings.Cut(parts[2], ":")
			_ = name
			if allowed[parts[0]+"/"+parts[1]+":"+verb] {
				continue
			}
		}
		t.Errorf("chart Role grants %s, which the generated Role does not", g)
	}
	for _, must := range []string{
		"coordination.k8s.io/leases:create", "coordination.k8s.io/leases/kalpc-operator.kalpc.io:get", "coordination.k8s.io/leases/kalpc-operator.kalpc.io:update",
		"/secrets:create", "/secrets/kalpc-webhook-tls:get", "/secrets/kalpc-webhook-tls:update",
	} {
		if !slices.Contains(chartRole, must) {
			t.Errorf("chart Role lacks %s; has %v", must, chartRole)
		}
	}
	for _, wide := range []string{"/secrets:get", "/secrets:list", "/secrets:watch", "/secrets:update", "coordination.k8s.io/leases:update"} {
		if slices.Contains(chartRole, wide) {
			t.Errorf("chart Role grants %s on every object of the namespace", wide)
		}
	}
}

// TestCRDMatchesGenerated checks that the chart's CRD is config/crd's, with
// the keep annotation and the chart's labels.
func TestCRDMatchesGenerated(t *testing.T) {
	generated := readYAMLDocs[apiextensionsv1.CustomResourceDefinition](t, "config/crd/bases/kalpc.io_connectionports.yaml")[0]
	for _, c := range []struct {
		vals     string
		wantKeep bool
	}{
		{"", true},
		{"crds: {keep: false}", false},
	} {
		r := render(t, values(t, c.vals))
		got := get[apiextensionsv1.CustomResourceDefinition](t, r, "CustomResourceDefinition", "connectionports.kalpc.io")
		if diff := cmp.Diff(generated.Spec, got.Spec); diff != "" {
			t.Errorf("%q: chart CRD spec differs from config/crd (-generated +chart):\n%s", c.vals, diff)
		}
		if keep := got.Annotations["helm.sh/resource-policy"] == "keep"; keep != c.wantKeep {
			t.Errorf("%q: keep annotation = %v, want %v", c.vals, keep, c.wantKeep)
		}
		if got.Labels["app.kubernetes.io/part-of"] != "kalpc" {
			t.Errorf("%q: CRD labels %v", c.vals, got.Labels)
		}
	}
	r := render(t, values(t, "crds: {enabled: false}"))
	if r.find("CustomResourceDefinition", "connectionports.kalpc.io") != nil {
		t.Error("crds.enabled=false still renders the CRD")
	}
	if others := len(render(t, nil).objects) - 1; len(r.objects) != others {
		t.Errorf("crds.enabled=false renders %d objects, want the %d others: %v", len(r.objects), others, r.kinds())
	}
}

func TestCertManager(t *testing.T) {
	r := render(t, values(t, `
webhook:
  certificate:
    provider: cert-manager
    validity: 720h
    certManager:
      renewBefore: 240h
`))
	mwc := get[admissionregistrationv1.MutatingWebhookConfiguration](t, r, "MutatingWebhookConfiguration", "kalpc-sidecar-injector")
	if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != "kalpc-system/kalpc-webhook" {
		t.Errorf("inject-ca-from = %q, want kalpc-system/kalpc-webhook", got)
	}
	cert := r.find("Certificate", "kalpc-webhook")
	if cert == nil {
		t.Fatalf("no Certificate; have %v", r.kinds())
	}
	spec := cert.Object["spec"].(map[string]any)
	wantSpec := map[string]any{
		"secretName":  "kalpc-webhook-tls",
		"commonName":  "kalpc-webhook.kalpc-system.svc",
		"dnsNames":    []any{"kalpc-webhook.kalpc-system.svc", "kalpc-webhook.kalpc-system.svc.cluster.local"},
		"duration":    "720h",
		"renewBefore": "240h",
		"privateKey":  map[string]any{"algorithm": "ECDSA", "size": float64(256), "rotationPolicy": "Always"},
		"usages":      []any{"server auth", "digital signature"},
		"issuerRef":   map[string]any{"name": "kalpc-selfsigned", "kind": "Issuer", "group": "cert-manager.io"},
	}
	if diff := cmp.Diff(wantSpec, spec); diff != "" {
		t.Errorf("Certificate spec (-want +got):\n%s", diff)
	}
	if r.find("Issuer", "kalpc-selfsigned") == nil {
		t.Errorf("no self-signed Issuer; have %v", r.kinds())
	}

	d := get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator")
	args := operatorArgs(t, d)
	if args["--webhook-cert-provider"] != "cert-manager" || args["--webhook-cert-dir"] != "/etc/kalpc/webhook-certs" {
		t.Errorf("operator flags %v", args)
	}
	for _, f := range []string{"--webhook-cert-secret", "--webhook-cert-validity", "--webhook-ca-validity", "--webhook-cert-check-interval"} {
		if _, ok := args[f]; ok {
			t.Errorf("operator gets %s with cert-manager", f)
		}
	}
	pod := d.Spec.Template.Spec
	if len(pod.Volumes) != 1 || pod.Volumes[0].Secret == nil || pod.Volumes[0].Secret.SecretName != "kalpc-webhook-tls" {
		t.Errorf("volumes = %+v, want the Certificate's Secret", pod.Volumes)
	}
	if m := pod.Containers[0].VolumeMounts; len(m) != 1 || m[0].MountPath != "/etc/kalpc/webhook-certs" || !m[0].ReadOnly {
		t.Errorf("volume mounts = %+v", m)
	}

	// With cert-manager the operator needs no Secrets, and reads the webhook
	// configuration only to make it the owner of its Lease: it may not
	// change it.
	cr := get[rbacv1.ClusterRole](t, r, "ClusterRole", "kalpc-operator")
	role := get[rbacv1.Role](t, r, "Role", "kalpc-operator")
	grants := append(rbacGrants(cr.Rules), rbacGrants(role.Rules)...)
	for _, g := range grants {
		if strings.Contains(g, "secrets") || (strings.Contains(g, "mutatingwebhookconfigurations") && g != "admissionregistration.k8s.io/mutatingwebhookconfigurations/kalpc-sidecar-injector:get") {
			t.Errorf("operator is granted %s with cert-manager", g)
		}
	}
	if !slices.Contains(grants, "admissionregistration.k8s.io/mutatingwebhookconfigurations/kalpc-sidecar-injector:get") {
		t.Errorf("operator may not read its webhook configuration (the Lease's owner) with cert-manager; grants %v", grants)
	}

	// A given issuer replaces the self-signed one.
	r = render(t, values(t, `
webhook:
  certificate:
    provider: cert-manager
    certManager:
      issuerRef: {name: corp-ca, kind: ClusterIssuer, group: cert-manager.io}
`))
	if r.find("Issuer", "kalpc-selfsigned") != nil {
		t.Error("self-signed Issuer rendered although issuerRef is set")
	}
	ref := r.find("Certificate", "kalpc-webhook").Object["spec"].(map[string]any)["issuerRef"]
	if diff := cmp.Diff(map[string]any{"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}, ref); diff != "" {
		t.Errorf("issuerRef (-want +got):\n%s", diff)
	}
}

func TestCustomSelectors(t *testing.T) {
	r, err := renderErr("kalpc", "ipc-system", values(t, `
webhook:
  failurePolicy: Ignore
  timeoutSeconds: 5
  excludedNamespaces: [kube-system, legacy]
  namespaceSelector:
    matchLabels: {team: payments}
  objectSelector:
    matchExpressions:
      - {key: tier, operator: NotIn, values: [batch]}
`))
	if err != nil {
		t.Fatal(err)
	}
	mwc := get[admissionregistrationv1.MutatingWebhookConfiguration](t, r, "MutatingWebhookConfiguration", "kalpc-sidecar-injector")
	if len(mwc.Webhooks) != 2 {
		t.Fatalf("got %d webhooks, want 2", len(mwc.Webhooks))
	}
	excluded := []string{"kube-system", "legacy", "ipc-system"}
	for _, w := range mwc.Webhooks {
		if ptr.Deref(w.FailurePolicy, "") != admissionregistrationv1.Ignore || ptr.Deref(w.TimeoutSeconds, 0) != 5 || ptr.Deref(w.SideEffects, "") != admissionregistrationv1.SideEffectClassNone {
			t.Errorf("webhook %s: failurePolicy %v, timeout %v, sideEffects %v", w.Name, w.FailurePolicy, w.TimeoutSeconds, w.SideEffects)
		}
		if diff := cmp.Diff(map[string]string{"team": "payments"}, w.NamespaceSelector.MatchLabels); diff != "" {
			t.Errorf("webhook %s namespace matchLabels (-want +got):\n%s", w.Name, diff)
		}
		exprs := w.NamespaceSelector.MatchExpressions
		if len(exprs) != 2 || exprs[1].Key != "kubernetes.io/metadata.name" || !slices.Equal(exprs[1].Values, excluded) {
			t.Errorf("webhook %s namespace expressions %+v, want %v excluded", w.Name, exprs, excluded)
		}
		oexprs := w.ObjectSelector.MatchExpressions
		if len(oexprs) != 2 || oexprs[0].Key != "kalpc.io/inject" || oexprs[1].Key != "tier" || oexprs[1].Values[0] != "batch" {
			t.Errorf("webhook %s object expressions %+v", w.Name, oexprs)
		}
	}
	// The opt-in halves stay disjoint.
	if ns, pod := mwc.Webhooks[0].NamespaceSelector.MatchExpressions[0], mwc.Webhooks[1].NamespaceSelector.MatchExpressions[0]; ns.Operator != "In" || pod.Operator != "NotIn" || ns.Key != "kalpc.io/injection" || pod.Key != ns.Key {
		t.Errorf("opt-in selectors are not disjoint: %+v / %+v", ns, pod)
	}
}

func TestSidecarSettings(t *testing.T) {
	r := render(t, values(t, `
sidecar:
  image: {repository: registry.example/kalpc/sidecar, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", pullPolicy: Always}
  resources:
    requests: {cpu: 0.25, memory: 64Mi}
    limits: {cpu: "1", memory: null} # null removes a default
  logLevel: debug
  runAsUser: 4242
  healthPort: 16000
  metricsPort: 16001
  metricsAuth: true
operator:
  resources:
    requests: {cpu: 200m, memory: 128Mi}
    limits: {cpu: "1", memory: 512Mi}
`))
	d := get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator")
	args := operatorArgs(t, d)
	want := map[string]string{
		"--sidecar-image":             "registry.example/kalpc/sidecar@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"--sidecar-image-pull-policy": "Always",
		"--sidecar-cpu-request":       "0.25",
		"--sidecar-memory-request":    "64Mi",
		"--sidecar-cpu-limit":         "1",
		"--sidecar-memory-limit":      "", // none, although the operator's default is 128Mi
		"--sidecar-log-level":         "debug",
		"--sidecar-run-as-user":       "4242",
		"--sidecar-health-port":       "16000",
		"--sidecar-metrics-port":      "16001",
		"--sidecar-metrics-auth":      "true",
	}
	for k, v := range want {
		if args[k] != v {
			t.Errorf("%s = %q, want %q", k, args[k], v)
		}
	}
	res := d.Spec.Template.Spec.Containers[0].Resources
	if res.Requests.Cpu().String() != "200m" || res.Limits.Cpu().String() != "1" || res.Limits.Memory().String() != "512Mi" {
		t.Errorf("operator resources = %+v", res)
	}
	// The node directory follows the sidecar's UID.
	ds := get[appsv1.DaemonSet](t, r, "DaemonSet", "kalpc-nodeprep")
	if !slices.Contains(ds.Spec.Template.Spec.Containers[0].Args, "--uid=4242") {
		t.Errorf("nodeprep args %v, want --uid=4242", ds.Spec.Template.Spec.Containers[0].Args)
	}
}

// TestNodePrepHostPath checks the node DaemonSet in hostPath mode: it only
// prepares the directory, as root with CAP_CHOWN alone and no API access.
func TestNodePrepHostPath(t *testing.T) {
	r := render(t, values(t, "sidecar: {nodeVolume: hostPath}"))
	ds := get[appsv1.DaemonSet](t, r, "DaemonSet", "kalpc-nodeprep")
	pod := ds.Spec.Template.Spec
	if ptr.Deref(pod.AutomountServiceAccountToken, true) || pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("nodeprep has API access or host namespaces: %+v", pod)
	}
	if len(pod.Volumes) != 1 || pod.Volumes[0].HostPath == nil || pod.Volumes[0].HostPath.Path != "/var/run/kalpc" ||
		ptr.Deref(pod.Volumes[0].HostPath.Type, "") != corev1.HostPathDirectoryOrCreate {
		t.Errorf("volumes = %+v, want only hostPath /var/run/kalpc", pod.Volumes)
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if ptr.Deref(sc.RunAsUser, -1) != 0 || ptr.Deref(sc.RunAsGroup, 0) != 65534 || ptr.Deref(sc.Privileged, true) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
		!ptr.Deref(sc.ReadOnlyRootFilesystem, false) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN"}) {
		t.Errorf("nodeprep security context %+v, want UID 0, GID 65534, with CHOWN only", sc)
	}
	if diff := cmp.Diff([]string{"--dir=/var/run/kalpc/node", "--uid=65532", "--mode=0700", "--interval=1m"}, c.Args); diff != "" {
		t.Errorf("nodeprep args (-want +got):\n%s", diff)
	}
	if c.Image != "ghcr.io/kalpc/kalpc-nodeprep:0.1.0" {
		t.Errorf("nodeprep image %q", c.Image)
	}
	if len(pod.Tolerations) != 1 || pod.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("nodeprep tolerations %+v, want to tolerate every taint", pod.Tolerations)
	}
	for _, o := range r.objects {
		if o.GetKind() == "CSIDriver" || strings.HasPrefix(o.GetKind(), "ClusterRole") && o.GetName() == "kalpc-nodeprep" {
			t.Errorf("hostPath mode renders %s/%s", o.GetKind(), o.GetName())
		}
	}
	if got := operatorArgs(t, get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator"))["--sidecar-node-volume"]; got != "hostPath" {
		t.Errorf("--sidecar-node-volume = %q, want hostPath", got)
	}

	r = render(t, values(t, "nodePrep: {enabled: false}\nsidecar: {nodeVolume: hostPath}"))
	if r.find("DaemonSet", "kalpc-nodeprep") != nil || !strings.Contains(r.notes, "nodePrep.enabled=false") {
		t.Errorf("nodePrep.enabled=false: objects %v, notes:\n%s", r.kinds(), r.notes)
	}
}

// TestNodePrepCSI checks the default, csi mode: the DaemonSet also serves
// the CSI driver (privileged, with the kubelet's directories at their host
// paths), may only get pods, and the CSIDriver object asks for pod info on
// ephemeral volumes only.
func TestNodePrepCSI(t *testing.T) {
	r := render(t, values(t, "nodePrep: {kubeletDir: /var/lib/k}"))
	ds := get[appsv1.DaemonSet](t, r, "DaemonSet", "kalpc-nodeprep")
	pod := ds.Spec.Template.Spec
	if !ptr.Deref(pod.AutomountServiceAccountToken, false) || pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("nodeprep: want API access and no host namespaces: %+v", pod)
	}
	c := pod.Containers[0]
	if !ptr.Deref(c.SecurityContext.Privileged, false) || !ptr.Deref(c.SecurityContext.ReadOnlyRootFilesystem, false) {
		t.Errorf("nodeprep security context %+v, want privileged with a read-only root", c.SecurityContext)
	}
	if diff := cmp.Diff([]string{
		"--dir=/var/run/kalpc/node", "--uid=65532", "--mode=0700", "--interval=1m",
		"--kubelet-dir=/var/lib/k", "--driver-name=csi.kalpc.io", "--sidecar-image=ghcr.io/kalpc/kalpc-sidecar:0.1.0",
	}, c.Args); diff != "" {
		t.Errorf("nodeprep args (-want +got):\n%s", diff)
	}
	if len(c.Env) != 1 || c.Env[0].Name != "KALPC_NODE_NAME" || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("nodeprep env %+v, want KALPC_NODE_NAME from spec.nodeName", c.Env)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		hostPaths[v.Name] = v.HostPath.Path
	}
	for path, propagation := range map[string]corev1.MountPropagationMode{
		"/var/run/kalpc/node":             "",
		"/var/lib/k/pods":                 corev1.MountPropagationBidirectional,
		"/var/lib/k/plugins/csi.kalpc.io": "",
		"/var/lib/k/plugins_registry":     "",
	} {
		m, ok := mounts[path]
		if !ok || ptr.Deref(m.MountPropagation, "") != propagation {
			t.Errorf("mount %s = %+v, want propagation %q", path, m, propagation)
		}
		if want := strings.Replace(path, "/var/run/kalpc/node", "/var/run/kalpc", 1); ok && hostPaths[m.Name] != want {
			t.Errorf("mount %s is host path %q, want %q (the kubelet passes host paths)", path, hostPaths[m.Name], want)
		}
	}

	drv := get[storagev1.CSIDriver](t, r, "CSIDriver", "csi.kalpc.io")
	if ptr.Deref(drv.Spec.AttachRequired, true) || !ptr.Deref(drv.Spec.PodInfoOnMount, false) ||
		!slices.Equal(drv.Spec.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral}) ||
		ptr.Deref(drv.Spec.FSGroupPolicy, "") != storagev1.NoneFSGroupPolicy {
		t.Errorf("CSIDriver spec %+v", drv.Spec)
	}
	role := get[rbacv1.ClusterRole](t, r, "ClusterRole", "kalpc-nodeprep")
	if diff := cmp.Diff([]string{"/pods:get"}, rbacGrants(role.Rules)); diff != "" {
		t.Errorf("nodeprep grants (-want +got):\n%s", diff)
	}
	if got := operatorArgs(t, get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator"))["--sidecar-node-volume"]; got != "csi" {
		t.Errorf("--sidecar-node-volume = %q, want csi", got)
	}

	if _, err := renderErr("kalpc", releaseNamespace, values(t, "nodePrep: {enabled: false}")); err == nil ||
		!strings.Contains(err.Error(), "sidecar.nodeVolume=csi needs nodePrep.enabled=true") {
		t.Errorf("csi mode without the DaemonSet: %v, want a clear error", err)
	}
}

func TestMetrics(t *testing.T) {
	r := render(t, values(t, `
metrics:
  readerSubjects: [{kind: ServiceAccount, name: prometheus, namespace: monitoring}]
  serviceMonitor: {enabled: true, labels: {release: prom}, interval: 15s}
`))
	svc := get[corev1.Service](t, r, "Service", "kalpc-operator-metrics")
	if p := svc.Spec.Ports[0]; p.Port != 8443 || p.TargetPort.String() != "metrics" {
		t.Errorf("metrics Service port %+v", p)
	}
	binding := get[rbacv1.ClusterRoleBinding](t, r, "ClusterRoleBinding", "kalpc-metrics-reader")
	if binding.RoleRef.Name != "kalpc-metrics-reader" || binding.Subjects[0].Name != "prometheus" {
		t.Errorf("metrics reader binding %+v", binding)
	}
	reader := get[rbacv1.ClusterRole](t, r, "ClusterRole", "kalpc-metrics-reader")
	if diff := cmp.Diff([]string{"/metrics:get"}, rbacGrants(reader.Rules)); diff != "" {
		t.Errorf("metrics reader grants (-want +got):\n%s", diff)
	}
	sm := r.find("ServiceMonitor", "kalpc-operator")
	if sm == nil {
		t.Fatalf("no ServiceMonitor; have %v", r.kinds())
	}
	if sm.GetLabels()["release"] != "prom" {
		t.Errorf("ServiceMonitor labels %v", sm.GetLabels())
	}
	ep := sm.Object["spec"].(map[string]any)["endpoints"].([]any)[0].(map[string]any)
	if ep["scheme"] != "https" || ep["port"] != "metrics" || ep["interval"] != "15s" {
		t.Errorf("ServiceMonitor endpoint %v", ep)
	}

	r = render(t, values(t, "metrics: {enabled: false}"))
	for _, name := range []string{"kalpc-operator-metrics", "kalpc-metrics-reader"} {
		for _, kind := range []string{"Service", "ClusterRole"} {
			if r.find(kind, name) != nil {
				t.Errorf("metrics.enabled=false renders %s %s", kind, name)
			}
		}
	}
	if args := operatorArgs(t, get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator")); args["--metrics-bind-address"] != "0" {
		t.Errorf("metrics.enabled=false: --metrics-bind-address=%q, want 0", args["--metrics-bind-address"])
	}
}

// TestUserRoles checks the ClusterRoles aggregated into Kubernetes' view,
// edit and admin roles: readers read ports and their status, editors also
// write ports, and nobody but the operator writes the status.
func TestUserRoles(t *testing.T) {
	r := render(t, nil)
	read := []string{"kalpc.io/connectionports/status:get", "kalpc.io/connectionports/status:list", "kalpc.io/connectionports/status:watch", "kalpc.io/connectionports:get", "kalpc.io/connectionports:list", "kalpc.io/connectionports:watch"}
	write := []string{"kalpc.io/connectionports:create", "kalpc.io/connectionports:delete", "kalpc.io/connectionports:deletecollection", "kalpc.io/connectionports:patch", "kalpc.io/connectionports:update"}
	for _, c := range []struct {
		name      string
		aggregate []string
		grants    []string
	}{
		{"kalpc-connectionport-viewer", []string{"view"}, read},
		{"kalpc-connectionport-editor", []string{"admin", "edit"}, append(slices.Clone(read), write...)},
	} {
		role := get[rbacv1.ClusterRole](t, r, "ClusterRole", c.name)
		var aggregate []string
		for k, v := range role.Labels {
			if to, ok := strings.CutPrefix(k, "rbac.authorization.k8s.io/aggregate-to-"); ok && v == "true" {
				aggregate = append(aggregate, to)
			}
		}
		slices.Sort(aggregate)
		if diff := cmp.Diff(c.aggregate, aggregate); diff != "" {
			t.Errorf("ClusterRole %s aggregates into (-want +got):\n%s", c.name, diff)
		}
		got := rbacGrants(role.Rules)
		slices.Sort(got)
		want := slices.Clone(c.grants)
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ClusterRole %s grants (-want +got):\n%s", c.name, diff)
		}
	}

	r = render(t, values(t, "rbac: {aggregateToDefaultRoles: false}"))
	for _, name := range []string{"kalpc-connectionport-viewer", "kalpc-connectionport-editor"} {
		if r.find("ClusterRole", name) != nil {
			t.Errorf("rbac.aggregateToDefaultRoles=false renders ClusterRole %s", name)
		}
	}
}

func TestNotes(t *testing.T) {
	r := render(t, nil)
	for _, want := range []string{
		"kind: ConnectionPort",
		"kubectl label namespace my-app kalpc.io/injection=enabled",
		`kalpc.io/inject: "true"`,
		"rollout status deployment/kalpc-operator",
		"kube-system, kube-public, kube-node-lease, kalpc-system are never injected",
	} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, r.notes)
		}
	}
}

// TestOptions renders a table of other options and checks the one thing
// each changes.
func TestOptions(t *testing.T) {
	for _, c := range []struct {
		vals  string
		check func(t *testing.T, r *rendered)
	}{
		{"operator: {replicaCount: 1, podDisruptionBudget: {enabled: false}}", func(t *testing.T, r *rendered) {
			if r.find("PodDisruptionBudget", "kalpc-operator") != nil {
				t.Error("PDB rendered although disabled")
			}
		}},
		{"operator: {podDisruptionBudget: {maxUnavailable: 1}}", func(t *testing.T, r *rendered) {
			pdb := get[policyv1.PodDisruptionBudget](t, r, "PodDisruptionBudget", "kalpc-operator")
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
				t.Errorf("PDB %+v, want maxUnavailable 1 only", pdb.Spec)
			}
		}},
		{"operator: {serviceAccount: {create: false, name: existing}}", func(t *testing.T, r *rendered) {
			if r.find("ServiceAccount", "kalpc-operator") != nil {
				t.Error("ServiceAccount rendered although create=false")
			}
			if b := get[rbacv1.ClusterRoleBinding](t, r, "ClusterRoleBinding", "kalpc-operator"); b.Subjects[0].Name != "existing" {
				t.Errorf("binding subjects %+v", b.Subjects)
			}
			if d := get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator"); d.Spec.Template.Spec.ServiceAccountName != "existing" {
				t.Errorf("serviceAccountName %q", d.Spec.Template.Spec.ServiceAccountName)
			}
		}},
		{"operator: {extraArgs: [--zap-stacktrace-level=panic], image: {tag: v9}, leaderElection: {leaseName: my-lease}}", func(t *testing.T, r *rendered) {
			d := get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator")
			args := operatorArgs(t, d)
			if args["--zap-stacktrace-level"] != "panic" || args["--leader-election-id"] != "my-lease" {
				t.Errorf("args %v", args)
			}
			if img := d.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/kalpc/kalpc-operator:v9" {
				t.Errorf("image %q", img)
			}
		}},
		{"fullnameOverride: ipc\ncommonLabels: {team: infra}", func(t *testing.T, r *rendered) {
			for _, o := range r.objects {
				// The CRD's and the CSI driver's names are fixed: the API
				// group's and the driver's.
				if o.GetKind() != "CustomResourceDefinition" && o.GetKind() != "CSIDriver" && !strings.HasPrefix(o.GetName(), "ipc-") {
					t.Errorf("%s/%s does not start with the fullnameOverride", o.GetKind(), o.GetName())
				}
				if o.GetLabels()["team"] != "infra" {
					t.Errorf("%s/%s lacks the common label", o.GetKind(), o.GetName())
				}
			}
		}},
		{"imagePullSecrets: [{name: regcred}]", func(t *testing.T, r *rendered) {
			for _, p := range []corev1.PodSpec{
				get[appsv1.Deployment](t, r, "Deployment", "kalpc-operator").Spec.Template.Spec,
				get[appsv1.DaemonSet](t, r, "DaemonSet", "kalpc-nodeprep").Spec.Template.Spec,
			} {
				if len(p.ImagePullSecrets) != 1 || p.ImagePullSecrets[0].Name != "regcred" {
					t.Errorf("imagePullSecrets %+v", p.ImagePullSecrets)
				}
			}
		}},
	} {
		t.Run(c.vals, func(t *testing.T) {
			c.check(t, render(t, values(t, c.vals)))
		})
	}
}

// TestSidecarPodMonitor checks the PodMonitor of the sidecars: off by
// default, and when on it selects every injected pod in any namespace and
// scrapes the port the sidecar serves its metrics on.
func TestSidecarPodMonitor(t *testing.T) {
	if r := render(t, nil); r.find("PodMonitor", "kalpc-sidecars") != nil {
		t.Error("a PodMonitor is rendered by default")
	}
	r := render(t, values(t, `
sidecar:
  podMonitor: {enabled: true, labels: {release: prom}, interval: 15s, annotations: {a: b}}
`))
	pm := r.find("PodMonitor", "kalpc-sidecars")
	if pm == nil {
		t.Fatalf("no PodMonitor; have %v", r.kinds())
	}
	if pm.GetAPIVersion() != "monitoring.coreos.com/v1" || pm.GetNamespace() != releaseNamespace ||
		pm.GetLabels()["release"] != "prom" || pm.GetAnnotations()["a"] != "b" {
		t.Errorf("PodMonitor metadata: %s %s %v %v", pm.GetAPIVersion(), pm.GetNamespace(), pm.GetLabels(), pm.GetAnnotations())
	}
	spec := pm.Object["spec"].(map[string]any)
	want := map[string]any{
		"jobLabel":          "kalpc-sidecar",
		"namespaceSelector": map[string]any{"any": true},
		"selector":          map[string]any{"matchLabels": map[string]any{kalpcv1alpha1.LabelSidecar: kalpcv1alpha1.LabelSidecarInjected}},
		"podMetricsEndpoints": []any{map[string]any{
			"port": kalpcv1alpha1.SidecarMetricsPortName, "path": "/metrics", "scheme": "http",
			"interval": "15s", "scrapeTimeout": "10s", "honorLabels": false,
		}},
	}
	if diff := cmp.Diff(want, spec); diff != "" {
		t.Errorf("PodMonitor spec (-want +got):\n%s", diff)
	}
	if r := render(t, values(t, "sidecar: {podMonitor: {enabled: true, namespace: monitoring}}")); r.find("PodMonitor", "kalpc-sidecars").GetNamespace() != "monitoring" {
		t.Error("sidecar.podMonitor.namespace is not used")
	}

	// With sidecar.metricsAuth, Prometheus presents the token of
	// sidecar.podMonitor.tokenSecret.
	r = render(t, values(t, "sidecar: {metricsAuth: true, podMonitor: {enabled: true, tokenSecret: {name: prom-token}}}"))
	ep := r.find("PodMonitor", "kalpc-sidecars").Object["spec"].(map[string]any)["podMetricsEndpoints"].([]any)[0].(map[string]any)
	wantAuth := map[string]any{"type": "Bearer", "credentials": map[string]any{"name": "prom-token", "key": "token"}}
	if diff := cmp.Diff(wantAuth, ep["authorization"]); diff != "" {
		t.Errorf("PodMonitor authorization with sidecar.metricsAuth (-want +got):\n%s", diff)
	}
}

// TestGrafanaDashboard checks the dashboard ConfigMap: off by default, and
// when on labelled for the Grafana sidecar's discovery and holding the
// chart's dashboards/kalpc.json unchanged.
func TestGrafanaDashboard(t *testing.T) {
	if r := render(t, nil); r.find("ConfigMap", "kalpc-dashboard") != nil {
		t.Error("a dashboard ConfigMap is rendered by default")
	}
	r := render(t, values(t, "grafanaDashboard: {enabled: true, namespace: monitoring, annotations: {grafana_folder: kalpc}}"))
	cm := get[corev1.ConfigMap](t, r, "ConfigMap", "kalpc-dashboard")
	if cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "monitoring" || cm.Annotations["grafana_folder"] != "kalpc" {
		t.Errorf("dashboard ConfigMap metadata: %+v", cm.ObjectMeta)
	}
	want, err := os.ReadFile("../../charts/kalpc/dashboards/kalpc.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.Data["kalpc.json"]; got != strings.TrimSuffix(string(want), "\n") {
		t.Errorf("the ConfigMap's kalpc.json differs from dashboards/kalpc.json:\n%s", got)
	}
	var d map[string]any
	if err := json.Unmarshal([]byte(cm.Data["kalpc.json"]), &d); err != nil || d["uid"] != "kalpc-sidecars" {
		t.Errorf("kalpc.json: uid %v, %v", d["uid"], err)
	}
	// Other label sets for other discovery settings.
	r = render(t, values(t, `grafanaDashboard: {enabled: true, labels: {grafana_dashboard: null, dashboards: kalpc}}`))
	if l := get[corev1.ConfigMap](t, r, "ConfigMap", "kalpc-dashboard").Labels; l["dashboards"] != "kalpc" || l["grafana_dashboard"] != "" {
		t.Errorf("custom dashboard labels: %v", l)
	}
}
