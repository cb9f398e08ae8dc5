//go:build e2e

package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

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

	// All of it in a namespace that enforces Pod Security "restricted",
	// with the node directory from kalpc's CSI driver.
	if level := kc(t, "get", "namespace", ns, "-o", `jsonpath={.metadata.labels.pod-security\.kubernetes\.io/enforce}`); level != "restricted" {
		t.Errorf("namespace %s enforces %q, want restricted", ns, level)
	}
	for _, sel := range []string{"app=echo-server", "app=echo-client"} {
		if drv := kc(t, "-n", ns, "get", "pods", "-l", sel, "-o", `jsonpath={.items[*].spec.volumes[?(@.name=="kalpc-node")].csi.driver}`); !strings.HasPrefix(drv, "csi.kalpc.io") {
			t.Errorf("pods %s: kalpc-node volume driver %q, want csi.kalpc.io", sel, drv)
		}
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
  # Pod Security "baseline": the injected pod is admitted (no hostPath).
  labels: {pod-security.kubernetes.io/enforce: baseline}
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
// client sees peer-closed at once, the port's status drops the pod (Ready
// turns False with no server left) and recovers with the Deployment's new
// server pod, which serves new connections.
func TestServerKilled(t *testing.T) {
	applyEcho(t)
	defer dump(t, ns)
	servers := livePods(t, ns, "app=echo-server")
	if len(servers) != 1 {
		t.Fatalf("%d server pods, want 1", len(servers))
	}
	old := servers[0].Metadata
	waitFor(t, "the port to list the server as ready", time.Minute, func() (bool, string) {
		s := getPort(t, ns, "echo")
		_, ready := s.endpoint(old.UID)
		return ready && s.ready(), s.String()
	})

	clientJob(t, ns, "holder", "client", "-port", "echo", "-hold")
	waitLog(t, ns, "holder", "holding the connection", 2*time.Minute)
	stopWatch := watchPort(t, ns, "echo")
	killed := time.Now()
	kc(t, "-n", ns, "delete", "pod", old.Name, "--grace-period=0", "--force", "--wait=false")
	logs := waitJob(t, ns, "holder", time.Minute)
	t.Logf("holder (server %s killed at %s):\n%s", old.Name, killed.Format("15:04:05.000"), logs)
	if !strings.Contains(logs, "PASS peer closed: alpc: peer closed the connection") {
		t.Errorf("the client did not see peer-closed")
	}

	// The port's status follows: the killed pod leaves its endpoints and the
	// port is not Ready, then the new server pod is a ready endpoint.
	kc(t, "-n", ns, "rollout", "status", "deployment/echo-server", "--timeout", "120s")
	waitFor(t, "the port to list a new ready server", time.Minute, func() (bool, string) {
		s := getPort(t, ns, "echo")
		present, _ := s.endpoint(old.UID)
		return !present && s.readyOther(old.UID) && s.ready(), s.String()
	})
	seen := stopWatch()
	dropped, recovered := -1, -1
	for i, s := range seen {
		present, _ := s.endpoint(old.UID)
		switch {
		case dropped < 0 && !present && !s.ready() && s.ReadyServers == 0:
			dropped = i
		case dropped >= 0 && recovered < 0 && s.ready() && s.readyOther(old.UID):
			recovered = i
		}
	}
	for _, s := range seen {
		t.Logf("port status at +%v: %s", s.at.Sub(killed).Round(time.Millisecond), s.portStatus)
	}
	if dropped < 0 {
		t.Errorf("the port's status never dropped the killed server (Ready False, no ready server)")
	} else if recovered < 0 {
		t.Errorf("the port's status did not recover after dropping the killed server")
	} else {
		t.Logf("status: server dropped %v after the kill, new server ready after %v",
			seen[dropped].at.Sub(killed).Round(time.Millisecond), seen[recovered].at.Sub(killed).Round(time.Millisecond))
	}

	// New clients connect to the new server.
	_, _ = kcErr("-n", ns, "delete", "job", "echo-client", "--wait")
	kc(t, "apply", "-f", filepath.Join(root, "examples", "k8s-echo", "k8s-echo.yaml"))
	logs = waitJob(t, ns, "echo-client", 2*time.Minute)
	if !strings.Contains(logs, "k8s-echo: all checks passed") {
		t.Errorf("a new client could not talk to the new server:\n%s", logs)
	}
}
