//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestReadyMeansServing starts a server pod whose application publishes its
// port only after a delay (k8s-echo server -publish-delay), with no
// readiness probe of its own: the injected sidecar's readiness probe
// (/readyz/published) keeps the pod unready, and the port at SERVERS READY 0
// and READY False, until the port is published; then they turn 1 and True.
// A port that selects no pod shows 0, not blank.
func TestReadyMeansServing(t *testing.T) {
	const space, delay = "kalpc-e2e-ready", 20 * time.Second
	defer dump(t, space)
	kcStdin(t, fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
  labels: {pod-security.kubernetes.io/enforce: restricted}
---
apiVersion: kalpc.io/v1alpha1
kind: ConnectionPort
metadata: {name: delayed, namespace: %[1]s}
spec:
  servers:
    matchLabels: {app: delayed-server}
---
apiVersion: kalpc.io/v1alpha1
kind: ConnectionPort
metadata: {name: unserved, namespace: %[1]s}
spec:
  servers:
    matchLabels: {app: nobody}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: delayed-server, namespace: %[1]s}
`, space), "apply", "-f", "-")
	defer func() { _, _ = kcErr("delete", "namespace", space, "--wait=false") }()
	watch := watchPort(t, space, "delayed")
	kcStdin(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: delayed-server
  namespace: %[1]s
  labels: {app: delayed-server, kalpc.io/inject: "true"}
spec:
  serviceAccountName: delayed-server
  terminationGracePeriodSeconds: 2
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: server
    image: ghcr.io/kalpc/kalpc-k8s-echo:dev
    imagePullPolicy: Never
    args: [server, -port, delayed, -grpc-listen, "", -publish-delay, %[2]s]
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
`, space, delay), "apply", "-f", "-")
	created := time.Now()

	// columns returns the printer columns of port: SERVERS READY, NODES,
	// READY.
	columns := func(port string) []string {
		f := strings.Fields(kc(t, "-n", space, "get", "cport", port, "--no-headers"))
		if len(f) < 4 {
			t.Fatalf("kubectl get cport %s: %q", port, f)
		}
		return f[1:4]
	}
	if got := columns("unserved"); got[0] != "0" || got[1] != "0" || got[2] != "False" {
		t.Errorf("a port no pod serves shows %v, want [0 0 False]", got)
	}

	// The application runs (its sidecar started) but has not published:
	// an endpoint that is not ready, and 0 ready servers.
	var running time.Time
	waitFor(t, "the server's app container to run", 90*time.Second, func() (bool, string) {
		out, _ := kcErr("-n", space, "get", "pod", "delayed-server", "-o", `jsonpath={.status.containerStatuses[?(@.name=="server")].state.running.startedAt}`)
		var err error
		running, err = time.Parse(time.RFC3339, strings.TrimSpace(out))
		return err == nil, out
	})
	st := getPort(t, space, "delayed")
	if st.ReadyServers != 0 || st.ready() {
		t.Fatalf("before Publish: %s, want 0 ready servers and Ready False", st)
	}
	if got := columns("delayed"); got[0] != "0" || got[2] != "False" {
		t.Errorf("before Publish kubectl shows %v, want SERVERS READY 0 and READY False", got)
	}
	if ready := strings.TrimSpace(kc(t, "-n", space, "get", "pod", "delayed-server", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)); ready != "False" {
		t.Errorf("pod Ready = %q before Publish, want False", ready)
	}

	// Published: the sidecar's probe passes within its period, the pod is
	// Ready and the port counts it.
	waitFor(t, "the port to count the server", delay+60*time.Second, func() (bool, string) {
		st := getPort(t, space, "delayed")
		return st.ReadyServers == 1 && st.ready(), st.String()
	})
	readyAt := time.Now()
	logs := kc(t, "-n", space, "logs", "delayed-server", "-c", "server")
	if !strings.Contains(logs, "published port delayed") {
		t.Fatalf("the server did not log its publication:\n%s", logs)
	}
	if got := columns("delayed"); got[0] != "1" || got[1] != "1" || got[2] != "True" {
		t.Errorf("after Publish kubectl shows %v, want [1 1 True]", got)
	}
	// Not counted before the application published: the delay ran from
	// the app container's start.
	if early := readyAt.Sub(running); early < delay-2*time.Second {
		t.Errorf("the port counted the server %v after its app started, before its %v publish delay", early, delay)
	}
	// Every status the watch saw before the publication had 0 ready.
	for _, s := range watch() {
		if s.at.Before(running.Add(delay-2*time.Second)) && s.ReadyServers != 0 {
			t.Errorf("status at %v (%v after the pod was created) had %d ready servers before the publication", s.at.Format(time.RFC3339Nano), s.at.Sub(created), s.ReadyServers)
		}
	}
	t.Logf("app running %v after creation; counted ready %v after the app started (publish delay %v)",
		running.Sub(created).Round(time.Millisecond), readyAt.Sub(running).Round(time.Millisecond), delay)
}
