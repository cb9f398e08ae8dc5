package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/plugin"
)

// createPort creates a ConnectionPort and waits until the operator's
// status reconciler has seen it with want ready servers.
func createPort(t *testing.T, ns, name string, spec kalpcv1alpha1.ConnectionPortSpec, wantReady int32) *kalpcv1alpha1.ConnectionPort {
	t.Helper()
	p := &kalpcv1alpha1.ConnectionPort{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
	if err := k8s.Create(t.Context(), p); err != nil {
		t.Fatalf("failed to create ConnectionPort %s: %v", name, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := k8s.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, p); err != nil {
			t.Fatal(err)
		}
		if p.Status.ObservedGeneration == p.Generation && p.Status.ReadyServers == wantReady && len(p.Status.Conditions) > 0 {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("status of %s/%s did not converge: %+v", ns, name, p.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func selector(kv ...string) kalpcv1alpha1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return kalpcv1alpha1.LabelSelector{MatchLabels: m}
}

// fields splits a table into rows of whitespace-separated cells.
func fields(table string) [][]string {
	var rows [][]string
	for l := range strings.Lines(strings.TrimSpace(table)) {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func TestPorts(t *testing.T) {
	ns := newNamespace(t)
	other := newNamespace(t)
	serverPod(t, ns, "echo-a", "node-a", map[string]string{"app": "echo"}, true)
	serverPod(t, ns, "echo-b1", "node-b", map[string]string{"app": "echo"}, true)
	serverPod(t, ns, "echo-b2", "node-b", map[string]string{"app": "echo"}, false)
	serverPod(t, other, "any", "node-c", nil, true)
	createPort(t, ns, "echo", kalpcv1alpha1.ConnectionPortSpec{Servers: selector("app", "echo")}, 2)
	createPort(t, ns, "lonely", kalpcv1alpha1.ConnectionPortSpec{Servers: selector("app", "nobody")}, 0)
	createPort(t, other, "all", kalpcv1alpha1.ConnectionPortSpec{}, 1)

	t.Run("table", func(t *testing.T) {
		want := [][]string{
			{"NAME", "READY", "ENDPOINTS", "NODES", "AGE"},
			{"echo", "True", "2/3", "node-a,node-b", "10m"},
			{"lonely", "False", "0/0", "<none>", "10m"},
		}
		if diff := cmp.Diff(want, fields(mustRun(t, "ports", "-n", ns))); diff != "" {
			t.Errorf("kubectl kalpc ports -n %s (-want +got):\n%s", ns, diff)
		}
	})

	t.Run("all namespaces", func(t *testing.T) {
		rows := fields(mustRun(t, "ports", "-A"))
		if diff := cmp.Diff([]string{"NAMESPACE", "NAME", "READY", "ENDPOINTS", "NODES", "AGE"}, rows[0]); diff != "" {
			t.Errorf("header (-want +got):\n%s", diff)
		}
		var got [][]string
		for _, r := range rows[1:] {
			if r[0] == ns || r[0] == other {
				got = append(got, r)
			}
		}
		want := [][]string{
			{ns, "echo", "True", "2/3", "node-a,node-b", "10m"},
			{ns, "lonely", "False", "0/0", "<none>", "10m"},
			{other, "all", "True", "1/1", "node-c", "10m"},
		}
		if ns > other {
			want = append(want[2:], want[:2]...)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("kubectl kalpc ports -A (-want +got):\n%s", diff)
		}
	})

	t.Run("json and yaml", func(t *testing.T) {
		for _, format := range []string{"json", "yaml"} {
			out := mustRun(t, "ports", "-n", other, "-o", format)
			var got struct{ Items []plugin.PortSummary }
			if err := yaml.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("-o %s: %v\n%s", format, err, out)
			}
			if len(got.Items) != 1 {
				t.Fatalf("-o %s: %s", format, out)
			}
			got.Items[0].CreationTimestamp = metav1.Time{}
			want := plugin.PortSummary{Namespace: other, Name: "all", Ready: "True", Reason: kalpcv1alpha1.ReasonServersReady,
				ReadyEndpoints: 1, Endpoints: 1, Nodes: []string{"node-c"}}
			if diff := cmp.Diff(want, got.Items[0]); diff != "" {
				t.Errorf("-o %s (-want +got):\n%s", format, diff)
			}
		}
	})

	t.Run("empty namespace and bad output", func(t *testing.T) {
		empty := newNamespace(t)
		out, errOut, err := kubectlKalpc(t, plugin.Options{}, "ports", "-n", empty)
		if err != nil || out != "" || strings.TrimSpace(errOut) != "No ConnectionPorts found." {
			t.Errorf("empty namespace: %q %q %v", out, errOut, err)
		}
		if _, _, err := kubectlKalpc(t, plugin.Options{}, "ports", "-n", ns, "-o", "wide"); err == nil || !strings.Contains(err.Error(), "--output") {
			t.Errorf("-o wide: %v", err)
		}
	})
}

func TestDescribe(t *testing.T) {
	ns := newNamespace(t)
	a := serverPod(t, ns, "echo-a", "node-a", map[string]string{"app": "echo"}, true)
	b := serverPod(t, ns, "echo-b", "node-b", map[string]string{"app": "echo"}, false)
	spec := kalpcv1alpha1.ConnectionPortSpec{
		Servers: selector("app", "echo"),
		Clients: []kalpcv1alpha1.ClientRule{
			{Namespaces: []string{"clients"}, ServiceAccounts: []string{"echo-client"}},
			{PodSelector: &kalpcv1alpha1.LabelSelector{}},
		},
		MessagePolicy: kalpcv1alpha1.MessagePolicy{MaxMessageBytes: 64 << 20, MaxSectionBytesPerConnection: ptr.To(int64(128 << 20))},
	}
	createPort(t, ns, "echo", spec, 1)
	// The operator records ServersReady when Ready turns True.
	var port kalpcv1alpha1.ConnectionPort
	waitFor(t, func() bool {
		out := mustRun(t, "describe", "echo", "-n", ns, "-o", "json")
		var d plugin.Description
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("bad JSON: %v\n%s", err, out)
		}
		port = *d.Port
		return len(d.Events) > 0
	})
	if port.Name != "echo" || port.Spec.MessagePolicy.InlineLimitBytes != kalpcv1alpha1.DefaultInlineLimitBytes {
		t.Errorf("describe -o json port = %+v", port)
	}

	out := mustRun(t, "describe", "echo", "-n", ns)
	for _, want := range []string{
		"Name:           echo",
		"Namespace:      " + ns,
		"Servers:        app=echo",
		"  1. namespaces clients; serviceaccounts echo-client",
		"  2. namespace " + ns + "; pods <all pods>",
		"  Inline Limit:           64512 (63 KiB)",
		"  Max Message:            67108864 (64 MiB)",
		"  Max Section Bytes/Conn: 134217728 (128 MiB)",
		"  Max Pending Messages:   1024",
		"  Max Connections:        1024 per server pod",
		"  Direct Access:          false",
		"Ready:          True (ServersReady)",
		"Endpoints:      1 ready of 2, on 1 node(s) with a ready server",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	rows := fields(out)
	has := func(want ...string) bool {
		for _, r := range rows {
			if len(r) >= len(want) && cmp.Equal(r[:len(want)], want) {
				return true
			}
		}
		return false
	}
	for _, want := range [][]string{
		{"NODE", "POD", "READY", "UID"},
		{"node-a", "echo-a", "true", string(a.UID)},
		{"node-b", "echo-b", "false", string(b.UID)},
		{"NODE", "SERVERS", "REACHABLE"},
		{"node-a", "1/1", "yes"},
		{"node-b", "0/1", "no"},
		{"TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"},
		{"Ready", "True", "ServersReady", "10m"},
		{"TYPE", "REASON", "AGE", "FROM", "MESSAGE"},
		{"Normal", "ServersReady", "10m", "kalpc-operator"},
	} {
		if !has(want...) {
			t.Errorf("describe lacks a row starting %q:\n%s", want, out)
		}
	}

	t.Run("a port without clients or events", func(t *testing.T) {
		createPort(t, ns, "quiet", kalpcv1alpha1.ConnectionPortSpec{Servers: selector("app", "nobody")}, 0)
		out := mustRun(t, "describe", "quiet", "-n", ns)
		for _, want := range []string{"  <not set: only pods in namespace " + ns + ">\n", "Ready:          False (NoReadyServers)\n",
			"Endpoints:      0 ready of 0, on 0 node(s) with a ready server\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("describe quiet lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("missing port", func(t *testing.T) {
		_, _, err := kubectlKalpc(t, plugin.Options{}, "describe", "nope", "-n", ns)
		if err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("describe of a missing port: %v", err)
		}
	})
}

// TestProxyFetcher checks what the pods/proxy fetcher can be checked for
// without a kubelet: it finds the sidecar's metrics port and reports pods
// without a sidecar clearly. The proxying itself is exercised by the e2e
// suite on a real node.
func TestProxyFetcher(t *testing.T) {
	ns := newNamespace(t)
	serverPod(t, ns, "injected", "node-a", nil, true)
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/app"}}}}
	if err := k8s.Create(t.Context(), plain); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := k8s.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "injected"}, &pod); err != nil {
		t.Fatal(err)
	}
	if port, err := plugin.SidecarMetricsPort(&pod); err != nil || port != 15981 {
		t.Errorf("SidecarMetricsPort = %d, %v; want 15981", port, err)
	}
	if _, err := plugin.SidecarMetricsPort(plain); err == nil || !strings.Contains(err.Error(), "no kalpc-sidecar container") {
		t.Errorf("SidecarMetricsPort of a pod without the sidecar: %v", err)
	}
}

func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConnectionsTerminatingPod runs the connections command with its real
// pods/proxy fetcher against a port whose only server pod is terminating
// (deleted, held by a finalizer, still in the port's status as the operator
// keeps it): the pod is marked unreachable, with the reason, and the command
// fails only because nothing at all could be read. (envtest has no kubelet,
// so pods/proxy cannot reach any sidecar here; the partial case, readable
// sidecars beside an unreachable one, is TestKubectlConnections in
// cmd/sidecar, against real sidecars.)
func TestConnectionsTerminatingPod(t *testing.T) {
	ns := newNamespace(t)
	pod := serverPod(t, ns, "leaving", "node-a", map[string]string{"app": "echo"}, true)
	pod.Finalizers = []string{"kalpc.io/test-hold"}
	if err := k8s.Update(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var p corev1.Pod
		if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "leaving"}, &p); err == nil {
			p.Finalizers = nil
			_ = k8s.Update(context.Background(), &p)
		}
	})
	createPort(t, ns, "echo", kalpcv1alpha1.ConnectionPortSpec{Servers: selector("app", "echo")}, 1)
	if err := k8s.Delete(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	// The operator keeps a terminating pod as a not-ready endpoint.
	waitFor(t, func() bool {
		var p kalpcv1alpha1.ConnectionPort
		if err := k8s.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "echo"}, &p); err != nil {
			t.Fatal(err)
		}
		return p.Status.ReadyServers == 0 && len(p.Status.Endpoints) == 1 && len(p.Status.Endpoints[0].Pods) == 1
	})

	out, errOut, err := kubectlKalpc(t, plugin.Options{}, "connections", "echo", "-n", ns)
	if !errors.Is(err, plugin.ErrNoSidecarRead) {
		t.Errorf("connections with only a terminating server pod: err %v, want %v", err, plugin.ErrNoSidecarRead)
	}
	wantNote := "unreachable: pod " + ns + "/leaving: pod " + ns + "/leaving is terminating; failed to reach its sidecar through pods/proxy: "
	if !strings.HasPrefix(errOut, wantNote) || !strings.Contains(errOut, "; its connections are not listed\n") {
		t.Errorf("stderr = %q, want a line starting with %q", errOut, wantNote)
	}
	if out != "" || strings.Contains(errOut, "No connections found") {
		t.Errorf("nothing read, yet stdout %q and stderr %q", out, errOut)
	}

	// -o json: the report, with the pod under errors, then the error.
	out, _, err = kubectlKalpc(t, plugin.Options{}, "connections", "echo", "-n", ns, "-o", "json")
	var report plugin.ConnectionReport
	if jerr := json.Unmarshal([]byte(out), &report); jerr != nil || len(report.Items) != 0 || len(report.Errors) != 1 ||
		!strings.HasPrefix(report.Errors[0], "pod "+ns+"/leaving: pod "+ns+"/leaving is terminating") {
		t.Errorf("-o json = %q (%v)", out, jerr)
	}
	if !errors.Is(err, plugin.ErrNoSidecarRead) {
		t.Errorf("-o json: err %v, want %v", err, plugin.ErrNoSidecarRead)
	}

	// A port without endpoints asks no sidecar: nothing unreachable, exit 0.
	createPort(t, ns, "empty", kalpcv1alpha1.ConnectionPortSpec{Servers: selector("app", "none")}, 0)
	if _, errOut, err := kubectlKalpc(t, plugin.Options{}, "connections", "empty", "-n", ns); err != nil || errOut != "No connections found.\n" {
		t.Errorf("connections of a port without endpoints: err %v, stderr %q", err, errOut)
	}
}
