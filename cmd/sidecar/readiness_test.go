package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// published GETs the pod sidecar's /readyz/published, the readiness probe
// the webhook injects, and returns its status code and body.
func (p *pod) published() (int, string) {
	p.t.Helper()
	r := p.must("health /readyz/published")
	return int(r["status"].(float64)), r["body"].(string)
}

// waitPublished waits until the pod's /readyz/published answers want and
// returns the body.
func (p *pod) waitPublished(want int) string {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := p.published()
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("pod %s: /readyz/published = %d %q for 10s, want %d", p.name, code, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPublishedReadiness checks the sidecar's /readyz/published, the
// readiness probe that makes a server pod Ready only while it serves: it
// fails before Publish, passes after, fails again once the application
// closes its port, and follows a sidecar restart (the application
// publishes again), ports created and deleted, and ports that do not select
// the pod (which never block it). A probe needs no API request: with the
// API server cut off it still answers, and still follows publications.
func TestPublishedReadiness(t *testing.T) {
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	c.port("elsewhere", kalpcv1alpha1.ConnectionPortSpec{
		Servers: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "other"}},
	})
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	plain := c.newPod("plain", "client", map[string]string{"app": "client"})
	client := c.newPod("client", "client", nil)

	// Selected by no port: ready as soon as the sidecar is.
	plain.waitPublished(200)
	if code, _ := client.published(); code != 200 {
		t.Fatalf("a pod no port selects: /readyz/published = %d, want 200", code)
	}

	// Before Publish: not ready, naming the missing port and only it.
	body := server.waitPublished(503)
	if !strings.Contains(body, "echo") || strings.Contains(body, "elsewhere") {
		t.Fatalf("/readyz/published before Publish = %q, want it to name echo and not elsewhere", body)
	}
	// The sidecar itself serves: the startup probe's /readyz passes.
	if r := server.must("health /readyz"); r["status"] != float64(200) {
		t.Fatalf("/readyz = %v, want 200", r)
	}

	// Published: ready, and serving.
	server.must("publish echo")
	server.waitPublished(200)
	client.must("connect %s/echo hello", c.ns)

	// The application closes its port: not ready.
	server.must("unpublish")
	server.waitPublished(503)

	// A sidecar restart loses the publication until the application
	// publishes again (publishLoop does, as pkg/alpc servers should).
	server.must("publish echo")
	server.waitPublished(200)
	server.must("kill-sidecar")
	server.must("start-sidecar")
	server.waitPublished(200)
	client.must("connect %s/echo after-restart", c.ns)

	// A new port selecting the pod blocks it until published; deleting
	// the port unblocks it.
	second := c.port("second", echoPortSpec("client"))
	body = server.waitPublished(503)
	if !strings.Contains(body, "second") || strings.Contains(body, "echo,") {
		t.Fatalf("/readyz/published with an unpublished second port = %q", body)
	}
	if err := k8s.Delete(t.Context(), second); err != nil {
		t.Fatal(err)
	}
	server.waitPublished(200)

	// No API request per probe: with the API server unreachable the probe
	// answers from what the sidecar holds, and follows the application.
	setAPIDown(true)
	t.Cleanup(func() { setAPIDown(false) })
	for range 20 {
		if code, body := server.published(); code != 200 {
			t.Fatalf("/readyz/published with the API server down = %d %q, want 200", code, body)
		}
	}
	server.must("unpublish")
	server.waitPublished(503)
	setAPIDown(false)

	// The kubelet's events do not carry the probe's answer: the sidecar
	// logs each change of it.
	b, err := os.ReadFile(filepath.Join(server.dir, "sidecar.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"published readiness: not ready"`, `has not published 1 ConnectionPort(s) that select this pod as a server: echo"`,
		`"published readiness: ready (every ConnectionPort selecting this pod is published)"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the server's sidecar log lacks %s", want)
		}
	}
}
