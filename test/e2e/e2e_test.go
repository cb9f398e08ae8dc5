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
//	INSTALL=0 KUBECONFIG=... go test -tags e2e -run TestX ./test/e2e  # iterate without rebuilding and reinstalling
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
	releaseNS   = "kalpc-system"
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
	// The operator re-reads its certificate Secret every 5 s, so that
	// TestCertRotation sees a renewal at once (the default is 5 minutes).
	if os.Getenv("HELM_ARGS") == "" {
		os.Setenv("HELM_ARGS", "--set webhook.certificate.checkInterval=5s")
	}
	if os.Getenv("INSTALL") == "0" {
		fmt.Fprintln(os.Stderr, "e2e: INSTALL=0: using the kalpc already installed")
	} else if _, err := script("install-kalpc"); err != nil {
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

// dump logs, when t failed, what happened in namespace (pods, events, the
// logs of every container) and in the operator.
func dump(t *testing.T, namespace string) {
	t.Helper()
	if !t.Failed() {
		return
	}
	for _, n := range []string{namespace, releaseNS} {
		out, _ := kcErr("-n", n, "get", "pods", "-o", "wide")
		t.Logf("pods in %s:\n%s", n, out)
		out, _ = kcErr("-n", n, "get", "events", "--sort-by", ".lastTimestamp")
		t.Logf("events in %s:\n%s", n, tail(out, 40))
	}
	out, _ := kcErr("-n", namespace, "logs", "--all-containers", "--prefix", "--ignore-errors", "-l", "kalpc.io/sidecar=injected", "--tail", "60", "--max-log-requests", "20")
	t.Logf("logs of the injected pods in %s:\n%s", namespace, out)
	out, _ = kcErr("-n", releaseNS, "logs", "--all-containers", "--prefix", "--ignore-errors", "-l", "app.kubernetes.io/component=operator", "--tail", "30")
	t.Logf("operator logs:\n%s", out)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond every half second until it reports done or timeout
// passes; then it fails the test with what cond last said.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, detail := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, detail)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitLog waits until the logs of container "client" of job contain want,
// and returns them.
func waitLog(t *testing.T, namespace, job, want string, timeout time.Duration) string {
	t.Helper()
	var logs string
	waitFor(t, fmt.Sprintf("job %s to log %q", job, want), timeout, func() (bool, string) {
		logs, _ = kcErr("-n", namespace, "logs", "job/"+job, "-c", "client")
		return strings.Contains(logs, want), tail(logs, 5)
	})
	return logs
}

// waitJob waits for job to complete (or fail: the test fails) and returns
// the logs of its "client" container.
func waitJob(t *testing.T, namespace, job string, timeout time.Duration) string {
	t.Helper()
	var status string
	waitFor(t, "job "+job+" to finish", timeout, func() (bool, string) {
		out, _ := kcErr("-n", namespace, "get", "job", job, "-o", "jsonpath={.status.succeeded}/{.status.failed}")
		status = strings.TrimSpace(out)
		return strings.HasPrefix(status, "1/") || strings.HasSuffix(status, "/1"), "succeeded/failed " + status
	})
	logs := kc(t, "-n", namespace, "logs", "job/"+job, "-c", "client")
	if !strings.HasPrefix(status, "1/") {
		t.Fatalf("job %s failed:\n%s", job, logs)
	}
	return logs
}

// clientJob creates a Job running the k8s-echo image with args as the
// echo-client ServiceAccount, injected, in namespace; its pod meets Pod
// Security "restricted".
func clientJob(t *testing.T, namespace, name string, args ...string) {
	t.Helper()
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	_, _ = kcErr("-n", namespace, "delete", "job", name, "--ignore-not-found", "--wait")
	kcStdin(t, fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {app: %[2]s, kalpc.io/inject: "true"}
    spec:
      serviceAccountName: echo-client
      restartPolicy: Never
      # Pod Security "restricted", which kalpc-demo enforces.
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: client
        image: ghcr.io/kalpc/kalpc-k8s-echo:dev
        imagePullPolicy: Never
        args: [%[3]s]
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
`, namespace, name, strings.Join(quoted, ", ")), "apply", "-f", "-")
}

type pod struct {
	Metadata struct {
		Name              string            `json:"name"`
		UID               string            `json:"uid"`
		Labels            map[string]string `json:"labels"`
		DeletionTimestamp *string           `json:"deletionTimestamp"`
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

// livePods returns the pods of selector that are not being deleted (a
// rollout's old pod may still be terminating).
func livePods(t *testing.T, namespace, selector string) []pod {
	t.Helper()
	var live []pod
	for _, p := range pods(t, namespace, selector) {
		if p.Metadata.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
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
