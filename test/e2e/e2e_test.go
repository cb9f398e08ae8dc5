//go:build e2e

// Package e2e runs kalpc on a real node: the local cluster of
// hack/local-cluster (or the cluster in KUBECONFIG), the chart installed with
// Helm, the operator injecting the sidecar into pods the kubelet really
// starts, and the examples/k8s-echo server and client pods talking through
// kalpc from separate network namespaces.
//
//	make e2e                       # starts the local cluster, tears it down at the end
//	KEEP_CLUSTER=1 make e2e        # leaves it running (hack/local-cluster/down stops it)
//	KUBECONFIG=... make e2e        # an existing cluster with the images loaded (LOAD_IMAGES=0)
//
// Root and Debian are needed for the local cluster; see docs/local-cluster.md.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const (
	ns          = "kalpc-demo"
	sidecarName = "kalpc-sidecar"
)

var (
	root    string
	kubectl string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	root = filepath.Join(filepath.Dir(file), "..", "..")
	kubectl = filepath.Join(root, "bin", "cluster", "k8s-1.37.2", "kubectl")
	started := false
	if os.Getenv("KUBECONFIG") == "" {
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "e2e: the local cluster needs root (or set KUBECONFIG)")
			return 1
		}
		out, err := script("up")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: hack/local-cluster/up:", err)
			return 1
		}
		os.Setenv("KUBECONFIG", strings.TrimSpace(out))
		started = true
	}
	if started && os.Getenv("KEEP_CLUSTER") != "1" {
		defer func() {
			if _, err := script("down"); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: hack/local-cluster/down:", err)
			}
		}()
	}
	if _, err := script("install-kalpc"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: hack/local-cluster/install-kalpc:", err)
		return 1
	}
	return m.Run()
}

// script runs hack/local-cluster/<name>, its progress on stderr, and returns
// its stdout.
func script(name string) (string, error) {
	cmd := exec.Command(filepath.Join(root, "hack", "local-cluster", name))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	err := cmd.Run()
	return out.String(), err
}

func kc(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kcErr(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kcErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubectl, args...).CombinedOutput()
	return string(out), err
}

// kcStdin runs kubectl with stdin.
func kcStdin(t *testing.T, stdin string, args ...string) {
	t.Helper()
	cmd := exec.Command(kubectl, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// dump logs what the namespace's pods did, for failures.
func dump(t *testing.T, namespace string) {
	t.Helper()
	if !t.Failed() {
		return
	}
	out, _ := kcErr("-n", namespace, "get", "pods", "-o", "wide")
	t.Logf("pods in %s:\n%s", namespace, out)
	out, _ = kcErr("-n", namespace, "logs", "--all-containers", "--prefix", "-l", "kalpc.io/inject=true", "--tail", "50")
	t.Logf("logs:\n%s", out)
}

type pod struct {
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		InitContainers []struct {
			Name          string  `json:"name"`
			RestartPolicy *string `json:"restartPolicy"`
		} `json:"initContainers"`
	} `json:"spec"`
	Status struct {
		PodIP                 string `json:"podIP"`
		Phase                 string `json:"phase"`
		InitContainerStatuses []struct {
			Name    string `json:"name"`
			Started *bool  `json:"started"`
		} `json:"initContainerStatuses"`
	} `json:"status"`
}

func pods(t *testing.T, namespace, selector string) []pod {
	t.Helper()
	var list struct {
		Items []pod `json:"items"`
	}
	if err := json.Unmarshal([]byte(kc(t, "-n", namespace, "get", "pods", "-l", selector, "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// applyEcho applies examples/k8s-echo with a fresh server pod (images are
// rebuilt under the same tag) and then a fresh client Job.
func applyEcho(t *testing.T) {
	t.Helper()
	manifest := filepath.Join(root, "examples", "k8s-echo", "k8s-echo.yaml")
	_, _ = kcErr("-n", ns, "delete", "job", "--all", "--wait")
	kc(t, "apply", "-f", manifest)
	kc(t, "-n", ns, "delete", "job", "echo-client", "--wait")
	kc(t, "-n", ns, "rollout", "restart", "deployment/echo-server")
	kc(t, "-n", ns, "rollout", "status", "deployment/echo-server", "--timeout", "120s")
	kc(t, "apply", "-f", manifest)
}

// TestEcho runs the example: the server Deployment and the client Job, both
// injected, exchange inline, section-sized and callback messages verified by
// content, from separate network namespaces.
func TestEcho(t *testing.T) {
	applyEcho(t)
	defer dump(t, ns)
	if out, err := kcErr("-n", ns, "wait", "--for=condition=complete", "job/echo-client", "--timeout", "120s"); err != nil {
		t.Fatalf("client Job did not complete: %v\n%s", err, out)
	}
	logs := kc(t, "-n", ns, "logs", "job/echo-client", "-c", "client")
	t.Logf("client:\n%s", logs)
	for _, want := range []string{
		"PASS inline:", "PASS section request:", "PASS section reply:", "PASS loan:",
		"PASS direct access read-only:", "PASS direct access read-only, live:", "PASS direct access revoke:",
		"PASS direct access read-write:", "PASS direct access from the server:", "PASS callback:",
		"PASS separate network namespaces:", "k8s-echo: all checks passed",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("client log lacks %q", want)
		}
	}
	if strings.Contains(logs, "FAIL") {
		t.Errorf("a check failed")
	}
	// The side-by-side with gRPC over the pod network (make demo prints it).
	for _, row := range []string{"p50 gRPC/kalpc", " 64 B ", " 64 KiB ", " 1 MiB "} {
		if !strings.Contains(logs, row) {
			t.Errorf("the kalpc/gRPC comparison lacks %q", row)
		}
	}
	serverLogs := kc(t, "-n", ns, "logs", "deployment/echo-server", "-c", "server")
	if !strings.Contains(serverLogs, "from verified peer "+ns+"/echo-client-") || !strings.Contains(serverLogs, "serviceaccount echo-client") {
		t.Errorf("server did not log the client's verified identity:\n%s", serverLogs)
	}

	// Injection is present in the pods the kubelet runs, as a native sidecar.
	ips := map[string]bool{}
	for _, sel := range []string{"app=echo-server", "app=echo-client"} {
		ps := pods(t, ns, sel)
		if len(ps) == 0 {
			t.Fatalf("no pod for %s", sel)
		}
		p := ps[0]
		found := false
		for _, c := range p.Spec.InitContainers {
			if c.Name == sidecarName && c.RestartPolicy != nil && *c.RestartPolicy == "Always" {
				found = true
			}
		}
		if !found {
			t.Errorf("pod %s has no native %s init container", p.Metadata.Name, sidecarName)
		}
		started := false
		for _, s := range p.Status.InitContainerStatuses {
			if s.Name == sidecarName && s.Started != nil && *s.Started {
				started = true
			}
		}
		if !started && sel == "app=echo-server" {
			t.Errorf("the sidecar of %s has not started", p.Metadata.Name)
		}
		if p.Status.PodIP == "" || ips[p.Status.PodIP] {
			t.Errorf("pod %s: IP %q not its own", p.Metadata.Name, p.Status.PodIP)
		}
		ips[p.Status.PodIP] = true
	}

	// The port's status counts the server.
	out := kc(t, "-n", ns, "get", "cport", "echo", "-o", "jsonpath={.status.readyServers}")
	if strings.TrimSpace(out) != "1" {
		t.Errorf("ConnectionPort echo readyServers = %q, want 1", out)
	}
}

// TestRefusedNamespace runs the client from a namespace the port does not
// allow: the sidecars refuse the connection.
func TestRefusedNamespace(t *testing.T) {
	applyEcho(t)
	const other = "kalpc-e2e-other"
	defer dump(t, other)
	kcStdin(t, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
  labels: {pod-security.kubernetes.io/enforce: privileged}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo-client, namespace: %[1]s}
---
apiVersion: batch/v1
kind: Job
metadata: {name: intruder, namespace: %[1]s}
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {app: intruder, kalpc.io/inject: "true"}
    spec:
      serviceAccountName: echo-client
      restartPolicy: Never
      containers:
      - name: client
        image: ghcr.io/kalpc/kalpc-k8s-echo:dev
        imagePullPolicy: Never
        args: [client, -port, %[2]s/echo, -retry, 5s]
`, other, ns), "apply", "-f", "-")
	defer func() { _, _ = kcErr("delete", "namespace", other, "--wait=false") }()
	if out, err := kcErr("-n", other, "wait", "--for=condition=failed", "job/intruder", "--timeout", "120s"); err != nil {
		t.Fatalf("the intruder Job did not fail: %v\n%s", err, out)
	}
	logs := kc(t, "-n", other, "logs", "job/intruder", "-c", "client")
	t.Logf("intruder:\n%s", logs)
	if !strings.Contains(logs, "access to the connection port denied") {
		t.Errorf("the intruder was not refused with access denied")
	}
}

// TestServerKilled kills the server pod under a connected client: the
// client sees peer-closed at once, the port's status follows, and the
// Deployment's new server pod serves new connections.
func TestServerKilled(t *testing.T) {
	applyEcho(t)
	defer dump(t, ns)
	kcStdin(t, fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: holder, namespace: %s}
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {app: holder, kalpc.io/inject: "true"}
    spec:
      serviceAccountName: echo-client
      restartPolicy: Never
      containers:
      - name: client
        image: ghcr.io/kalpc/kalpc-k8s-echo:dev
        imagePullPolicy: Never
        args: [client, -port, echo, -hold]
`, ns), "apply", "-f", "-")
	// Connected and checked: then kill the server.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		logs, _ := kcErr("-n", ns, "logs", "job/holder", "-c", "client")
		if strings.Contains(logs, "holding the connection") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the holder never connected:\n%s", logs)
		}
		time.Sleep(time.Second)
	}
	killed := time.Now()
	kc(t, "-n", ns, "delete", "pod", "-l", "app=echo-server", "--grace-period=0", "--force", "--wait=false")
	if out, err := kcErr("-n", ns, "wait", "--for=condition=complete", "job/holder", "--timeout", "60s"); err != nil {
		t.Fatalf("the holder did not end: %v\n%s", err, out)
	}
	logs := kc(t, "-n", ns, "logs", "job/holder", "-c", "client")
	t.Logf("holder (server killed at %s):\n%s", killed.Format("15:04:05.000"), logs)
	if !strings.Contains(logs, "PASS peer closed: alpc: peer closed the connection") {
		t.Errorf("the client did not see peer-closed")
	}

	// A new server pod comes up and new clients connect to it.
	kc(t, "-n", ns, "rollout", "status", "deployment/echo-server", "--timeout", "120s")
	_, _ = kcErr("-n", ns, "delete", "job", "echo-client", "--wait")
	kc(t, "apply", "-f", filepath.Join(root, "examples", "k8s-echo", "k8s-echo.yaml"))
	if out, err := kcErr("-n", ns, "wait", "--for=condition=complete", "job/echo-client", "--timeout", "120s"); err != nil {
		t.Fatalf("a new client could not talk to the new server: %v\n%s", err, out)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		out := kc(t, "-n", ns, "get", "cport", "echo", "-o", "jsonpath={.status.readyServers}")
		if strings.TrimSpace(out) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ConnectionPort echo readyServers = %q after the new server started, want 1", out)
		}
		time.Sleep(time.Second)
	}
}
