//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPlugin runs `kubectl kalpc` against the cluster: ports and describe
// read the echo port's status, and connections reads the server sidecar's
// list through the API server's pods/proxy while a client holds a
// connection, then sees it go when the client pod is deleted.
func TestPlugin(t *testing.T) {
	applyEcho(t)
	defer dump(t, ns)
	plugin := filepath.Join(t.TempDir(), "kubectl-kalpc")
	build := exec.Command("go", "build", "-o", plugin, "./cmd/kubectl-kalpc")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/kubectl-kalpc: %v\n%s", err, out)
	}
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, plugin, args...).Output()
		return string(out), err
	}

	// ports: the echo port is ready with an endpoint on the node.
	var ports struct {
		Items []struct {
			Name           string   `json:"name"`
			ReadyEndpoints int      `json:"readyEndpoints"`
			Nodes          []string `json:"nodes"`
		} `json:"items"`
	}
	waitFor(t, "kubectl kalpc ports to show a ready echo port", time.Minute, func() (bool, string) {
		out, err := run("ports", "-n", ns, "-o", "json")
		ok := err == nil && json.Unmarshal([]byte(out), &ports) == nil && len(ports.Items) == 1 && ports.Items[0].ReadyEndpoints > 0
		return ok, fmt.Sprintf("%v\n%s", err, out)
	})
	if p := ports.Items[0]; p.Name != "echo" || len(p.Nodes) != 1 {
		t.Errorf("ports: %+v; want echo on one node", p)
	}
	table, err := run("ports", "-n", ns)
	if err != nil || !strings.Contains(table, "echo") || !strings.Contains(table, "True") {
		t.Errorf("kubectl kalpc ports -n %s: %v\n%s", ns, err, table)
	}
	if out, err := run("describe", "echo", "-n", ns); err != nil || !strings.Contains(out, "ServersReady") || !strings.Contains(out, "echo-client") {
		t.Errorf("kubectl kalpc describe echo: %v\n%s", err, out)
	}

	// connections: a client holding a connection is listed by the server's
	// sidecar, reached through pods/proxy. The sidecar answers only a
	// bearer token allowed get on pods/proxy of its pod; this cluster's
	// kubeconfig authenticates with a client certificate, which cannot be
	// forwarded, so the test passes a ServiceAccount's short-lived token as
	// docs/security.md recommends.
	kc(t, "-n", ns, "create", "serviceaccount", "kalpc-e2e-inspector")
	kc(t, "-n", ns, "create", "role", "kalpc-e2e-inspector", "--verb=get", "--resource=pods,pods/proxy")
	kc(t, "-n", ns, "create", "rolebinding", "kalpc-e2e-inspector", "--role=kalpc-e2e-inspector", "--serviceaccount="+ns+":kalpc-e2e-inspector")
	defer func() {
		_, _ = kcErr("-n", ns, "delete", "rolebinding,role,serviceaccount", "kalpc-e2e-inspector", "--ignore-not-found")
	}()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(kc(t, "-n", ns, "create", "token", "kalpc-e2e-inspector", "--duration=10m")), 0o600); err != nil {
		t.Fatal(err)
	}
	plainRun := run
	run = func(args ...string) (string, error) {
		if len(args) > 0 && args[0] == "connections" {
			args = append(args, "--sidecar-token-file", tokenFile)
		}
		return plainRun(args...)
	}
	clientJob(t, ns, "inspected", "client", "-port", "echo", "-hold")
	defer func() { _, _ = kcErr("-n", ns, "delete", "job", "inspected", "--ignore-not-found", "--wait=false") }()
	waitLog(t, ns, "inspected", "holding the connection", 2*time.Minute)
	client := strings.TrimPrefix(strings.TrimSpace(kc(t, "-n", ns, "get", "pods", "-l", "app=inspected", "-o", "name")), "pod/")
	type conns struct {
		Items []struct {
			Port   string `json:"port"`
			Client struct {
				Namespace      string `json:"namespace"`
				Name           string `json:"name"`
				ServiceAccount string `json:"serviceAccount"`
			} `json:"client"`
		} `json:"items"`
		Errors []any `json:"errors"`
	}
	listed := func() (bool, string) {
		out, err := run("connections", "echo", "-n", ns, "-o", "json")
		var c conns
		if err != nil || json.Unmarshal([]byte(out), &c) != nil || len(c.Errors) > 0 {
			return false, fmt.Sprintf("%v\n%s", err, out)
		}
		for _, it := range c.Items {
			if it.Client.Name == client && it.Client.Namespace == ns && it.Client.ServiceAccount == "echo-client" {
				return true, out
			}
		}
		return false, out
	}
	if ok, out := listed(); !ok {
		t.Fatalf("kubectl kalpc connections echo does not list the client %s/%s:\n%s", ns, client, out)
	}
	if out, err := run("connections", "echo", "-n", ns); err != nil || !strings.Contains(out, client) {
		t.Errorf("kubectl kalpc connections (table): %v\n%s", err, out)
	}
	kc(t, "-n", ns, "delete", "job", "inspected", "--wait=false")
	kc(t, "-n", ns, "delete", "pod", client, "--grace-period=1", "--wait=false")
	waitFor(t, "the deleted client to leave kubectl kalpc connections", time.Minute, func() (bool, string) {
		ok, out := listed()
		return !ok && !strings.Contains(out, client), out
	})
}
