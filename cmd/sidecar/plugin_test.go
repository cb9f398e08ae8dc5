package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/plugin"
	"github.com/kalpc/kalpc/internal/sidecar/connections"
)

// TestKubectlConnections runs `kubectl kalpc connections` against the real
// sidecars of pods in their own network namespaces, reached over HTTP. In a
// cluster the plugin goes through pods/proxy instead (plugin.ProxyFetcher),
// which needs a kubelet; the e2e suite covers that path.
func TestKubectlConnections(t *testing.T) {
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	c.port("idle", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	server.must("publish echo")
	server.must("publish idle")
	client.must("connect %s/echo one", c.ns)
	client.must("connect %s/echo two", c.ns)
	setEndpoints(t, c.ns, "echo", server)
	setEndpoints(t, c.ns, "idle", server)

	serverPod := connections.Pod{Namespace: c.ns, Name: "server", UID: server.uid, ServiceAccount: "server"}
	clientPod := connections.Pod{Namespace: c.ns, Name: "client", UID: client.uid, ServiceAccount: "client"}
	want := plugin.ConnectionReport{Items: []connections.Connection{
		{ID: 1, Port: c.ns + "/echo", Client: clientPod, Server: serverPod, Node: nodeName},
		{ID: 2, Port: c.ns + "/echo", Client: clientPod, Server: serverPod, Node: nodeName},
	}}
	ignoreSince := cmpopts.IgnoreFields(connections.Connection{}, "Since")
	for _, args := range [][]string{
		{"connections", "echo", "-n", c.ns, "-o", "json"},
		{"connections", "-n", c.ns, "-o", "json"},
		{"connections", "-A", "-o", "json"},
	} {
		out, _ := runPlugin(t, c, args...)
		var got plugin.ConnectionReport
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("kubectl kalpc %v: bad JSON %q: %v", args, out, err)
		}
		if diff := cmp.Diff(want, got, ignoreSince); diff != "" {
			t.Errorf("kubectl kalpc %v (-want +got):\n%s", args, diff)
		}
	}
	if out, _ := runPlugin(t, c, "connections", "idle", "-n", c.ns, "-o", "yaml"); strings.TrimSpace(out) != "items: []" {
		t.Errorf("connections of a port without any = %q", out)
	}

	table, _ := runPlugin(t, c, "connections", "-n", c.ns)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 {
		t.Fatalf("kubectl kalpc connections:\n%s", table)
	}
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "PORT CLIENT SERVICE ACCOUNT SERVER NODE AGE" {
		t.Errorf("header = %q", got)
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) != 6 || f[0] != "echo" || f[1] != c.ns+"/client" || f[2] != "client" || f[3] != "server" || f[4] != nodeName {
			t.Errorf("row = %q", l)
		}
	}

	// A server pod whose sidecar cannot be reached (as a terminating pod's):
	// it is marked unreachable, the others are listed, and the command
	// succeeds.
	var p kalpcv1alpha1.ConnectionPort
	if err := k8s.Get(t.Context(), types.NamespacedName{Namespace: c.ns, Name: "echo"}, &p); err != nil {
		t.Fatal(err)
	}
	p.Status.Endpoints[0].Pods = append(p.Status.Endpoints[0].Pods, kalpcv1alpha1.EndpointPod{Name: "vanished", UID: "0", Ready: false})
	if err := k8s.Status().Update(t.Context(), &p); err != nil {
		t.Fatal(err)
	}
	unreachable := "unreachable: pod " + c.ns + "/vanished: no test pod " + c.ns + "/vanished; its connections are not listed\n"
	out, errOut, err := execPlugin(t, c, "connections", "echo", "-n", c.ns, "-o", "json")
	if err != nil || errOut != unreachable {
		t.Errorf("-o json with an unreachable sidecar: err %v, stderr %q, want nil and %q", err, errOut, unreachable)
	}
	var got plugin.ConnectionReport
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.Items) != 2 || len(got.Errors) != 1 ||
		got.Errors[0] != "pod "+c.ns+"/vanished: no test pod "+c.ns+"/vanished" {
		t.Errorf("-o json with an unreachable sidecar: %q (%v)", out, err)
	}
	table, errOut, err = execPlugin(t, c, "connections", "echo", "-n", c.ns)
	if rows := strings.Split(strings.TrimSpace(table), "\n"); err != nil || len(rows) != 3 || errOut != unreachable {
		t.Errorf("table with an unreachable sidecar: err %v, stdout %q, stderr %q", err, table, errOut)
	}

	// Only unreachable sidecars: nothing could be read, the command fails.
	if err := k8s.Get(t.Context(), types.NamespacedName{Namespace: c.ns, Name: "idle"}, &p); err != nil {
		t.Fatal(err)
	}
	p.Status.Endpoints[0].Pods = []kalpcv1alpha1.EndpointPod{{Name: "vanished", UID: "0", Ready: false}}
	if err := k8s.Status().Update(t.Context(), &p); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = execPlugin(t, c, "connections", "idle", "-n", c.ns)
	if !errors.Is(err, plugin.ErrNoSidecarRead) || out != "" || errOut != unreachable {
		t.Errorf("with only an unreachable sidecar: err %v, stdout %q, stderr %q", err, out, errOut)
	}
}

// setEndpoints writes the port's status as the operator would, with the
// given server pods on the test node.
func setEndpoints(t *testing.T, ns, name string, servers ...*pod) {
	t.Helper()
	var p kalpcv1alpha1.ConnectionPort
	if err := k8s.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	ep := kalpcv1alpha1.NodeEndpoints{NodeName: nodeName}
	for _, s := range servers {
		ep.Pods = append(ep.Pods, kalpcv1alpha1.EndpointPod{Name: s.name, UID: types.UID(s.uid), Ready: true})
	}
	p.Status.ObservedGeneration = p.Generation
	p.Status.Endpoints = []kalpcv1alpha1.NodeEndpoints{ep}
	p.Status.ReadyServers = int32(len(servers))
	p.Status.Nodes = 1
	if err := k8s.Status().Update(t.Context(), &p); err != nil {
		t.Fatalf("failed to update the status of %s/%s: %v", ns, name, err)
	}
}

// runPlugin runs kubectl kalpc with args against the test API server,
// reaching sidecars over HTTP through their pods' metrics.sock instead of
// pods/proxy, which needs a kubelet.
func runPlugin(t *testing.T, c *cluster, args ...string) (stdout, stderr string) {
	t.Helper()
	out, errOut, err := execPlugin(t, c, args...)
	if err != nil {
		t.Fatalf("kubectl kalpc %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out, errOut
}

// execPlugin is runPlugin returning the command's error.
func execPlugin(t *testing.T, c *cluster, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	pods := map[string]*pod{}
	for _, p := range c.pods {
		pods[p.name] = p
	}
	fetch := plugin.FetcherFunc(func(ctx context.Context, ref plugin.PodRef) (*connections.List, error) {
		p := pods[ref.Name]
		if p == nil || ref.Namespace != c.ns {
			return nil, fmt.Errorf("no test pod %s", ref)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://sidecar"+connections.Path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := p.httpClient().Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		return plugin.DecodeList(resp.Body)
	})
	var out, errOut bytes.Buffer
	cmd := plugin.NewCommand(plugin.Options{
		IOStreams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut},
		Fetcher:   fetch,
	})
	cmd.SetArgs(append(args, "--kubeconfig", kc))
	err = cmd.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}
