//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// TestUninstall runs helm uninstall and then looks at every object of every
// API resource the cluster serves (discovery; Events aside, which expire on
// their own) for anything kalpc made: objects written by the operator
// (managedFields manager kalpc-operator), objects with the chart's or the
// operator's labels, objects in the release namespace beyond what every
// namespace has, and cluster-scoped objects named kalpc. Only the CRD (kept
// by choice, crds.keep) and the ConnectionPorts it serves may stay, and the
// application's own pods (created by its Deployment; they keep their
// sidecars until recreated). Kubernetes' garbage collector removes what the
// operator made (owner references): this waits for it.
//
// It runs last (the files of this package run in name order) and leaves
// kalpc uninstalled; the next run of the suite installs it again.
func TestUninstall(t *testing.T) {
	ensureEcho(t)
	defer dump(t, ns)
	// Everything the operator makes exists: the sidecar binding of the
	// application namespace, the webhook certificate Secret, the Lease.
	for _, o := range [][]string{
		{"clusterrolebinding", "kalpc-sidecar:" + ns},
		{"-n", releaseNS, "secret", "kalpc-webhook-tls"},
		{"-n", releaseNS, "lease", "kalpc-operator.kalpc.io"},
	} {
		waitFor(t, strings.Join(o, " ")+" to exist with its owner", time.Minute, func() (bool, string) {
			out, err := kcErr(append([]string{"get"}, append(o, "-o", "jsonpath={.metadata.ownerReferences[*].kind}/{.metadata.ownerReferences[*].name}")...)...)
			return err == nil && strings.Contains(out, "/kalpc-"), out
		})
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	// One scan lists every resource: no client-side throttling, and no
	// deprecation warnings for the old ones.
	cfg.QPS, cfg.Burst = 200, 400
	cfg.WarningHandler = rest.NoWarnings{}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	helm := filepath.Join(filepath.Dir(kubectl), "helm")
	start := time.Now()
	out, err := exec.Command(helm, "uninstall", "kalpc", "-n", releaseNS, "--wait", "--timeout", "2m").CombinedOutput()
	if err != nil {
		t.Fatalf("helm uninstall: %v\n%s", err, out)
	}
	t.Logf("helm uninstall in %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))

	var left []string
	waitFor(t, "nothing of kalpc left but the CRD", 2*time.Minute, func() (bool, string) {
		left = leftovers(t, disco, dyn)
		return len(left) == 0, strings.Join(left, "\n")
	})
	t.Logf("nothing of kalpc left %v after helm uninstall began (garbage collection included)", time.Since(start).Round(time.Millisecond))
	// The aggregation controller takes the chart's ConnectionPort rules
	// out of the built-in roles again.
	for _, role := range []string{"view", "edit", "admin"} {
		waitFor(t, "ClusterRole "+role+" without ConnectionPort rules", time.Minute, func() (bool, string) {
			out, err := kcErr("get", "clusterrole", role, "-o", "jsonpath={.rules[*].resources}")
			return err == nil && !strings.Contains(out, "connectionports"), out
		})
	}

	// The CSI driver stopped and removed its kubelet registration socket, so
	// the kubelet dropped the driver from the node's CSINode.
	waitFor(t, "the kubelet to deregister csi.kalpc.io", time.Minute, func() (bool, string) {
		out, err := kcErr("get", "csinode", "-o", "jsonpath={.items[*].spec.drivers[*].name}")
		return err == nil && !strings.Contains(out, "csi.kalpc.io"), out
	})
	if ourCluster() {
		sock := "/var/lib/kalpc-local-cluster/kubelet/plugins_registry/csi.kalpc.io-reg.sock"
		if _, err := os.Lstat(sock); !os.IsNotExist(err) {
			t.Errorf("kubelet registration socket %s left after uninstall (err %v)", sock, err)
		}
	}

	// Kept by choice: the CRD and the ports.
	kc(t, "get", "crd", "connectionports.kalpc.io")
	kc(t, "-n", ns, "get", "cport", "echo")
}

// leftovers lists every object of kalpc's still in the cluster, but the CRD
// and the ConnectionPorts.
func leftovers(t *testing.T, disco discovery.DiscoveryInterface, dyn dynamic.Interface) []string {
	t.Helper()
	lists, err := disco.ServerPreferredResources()
	if err != nil && len(lists) == 0 {
		t.Fatalf("discovery: %v", err)
	}
	var left []string
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || r.Name == "events" {
				continue
			}
			gvr := gv.WithResource(r.Name)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			objs, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{})
			cancel()
			if err != nil {
				t.Logf("cannot list %s: %v", gvr, err)
				continue
			}
			for i := range objs.Items {
				if why := kalpcMade(&objs.Items[i], r.Namespaced); why != "" {
					o := &objs.Items[i]
					left = append(left, fmt.Sprintf("%s %s/%s: %s", gvr.GroupResource(), o.GetNamespace(), o.GetName(), why))
				}
			}
		}
	}
	return left
}

// kalpcMade says why o looks made by kalpc (its chart, operator or sidecar),
// or "" if it does not, or is kept by choice.
func kalpcMade(o *unstructured.Unstructured, namespaced bool) string {
	kind := o.GetKind()
	switch {
	case kind == "CustomResourceDefinition" && o.GetName() == "connectionports.kalpc.io":
		return "" // crds.keep
	case kind == "ConnectionPort":
		return "" // the user's, kept with the CRD
	case kind == "Namespace" && (o.GetName() == releaseNS || o.GetName() == ns):
		return "" // made by install-kalpc and the example, not the chart
	case kind == "Node" || kind == "CSINode":
		return "" // the local cluster's node is named kalpc-local
	case kind == "APIService" && o.GetLabels()["kube-aggregator.kubernetes.io/automanaged"] == "true":
		return "" // the aggregator's entry for the kept CRD's group version
	}
	for _, f := range o.GetManagedFields() {
		if strings.HasPrefix(f.Manager, "kalpc") || f.Manager == "helm" || f.Manager == "Helm" {
			return "written by " + f.Manager
		}
	}
	labels := o.GetLabels()
	for _, k := range []string{"app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "app.kubernetes.io/instance", "helm.sh/chart"} {
		if v := labels[k]; strings.HasPrefix(v, "kalpc") || (k == "app.kubernetes.io/managed-by" && v == "Helm") {
			return fmt.Sprintf("label %s=%s", k, v)
		}
	}
	if namespaced && o.GetNamespace() == releaseNS {
		switch {
		case kind == "ServiceAccount" && o.GetName() == "default",
			kind == "ConfigMap" && o.GetName() == "kube-root-ca.crt":
			return "" // every namespace has them
		}
		return "in the release namespace " + releaseNS
	}
	if !namespaced && strings.Contains(o.GetName(), "kalpc") {
		return "cluster-scoped and named kalpc"
	}
	return ""
}
