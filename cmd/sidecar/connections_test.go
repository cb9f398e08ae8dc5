package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/kalpc/kalpc/internal/sidecar/connections"
)

// httpClient reaches the pod's sidecar metrics server through the pod's
// metrics.sock (see exposeMetrics), presenting readerToken, which may read
// /debug/connections.
func (p *pod) httpClient() *http.Client {
	return p.httpClientWith(readerToken)
}

// httpClientWith is httpClient presenting token ("" for none) in the
// Authorization header.
func (p *pod) httpClientWith(token string) *http.Client {
	sock := filepath.Join(p.dir, "metrics.sock")
	var rt http.RoundTripper = &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}
	if token != "" {
		rt = bearer{token: token, rt: rt}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: rt}
}

type bearer struct {
	token string
	rt    http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}

// connections reads the pod sidecar's connection list over HTTP.
func (p *pod) connections() *connections.List {
	p.t.Helper()
	resp, err := p.httpClient().Get("http://sidecar" + connections.Path)
	if err != nil {
		p.t.Fatalf("GET %s of pod %s: %v", connections.Path, p.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		p.t.Fatalf("GET %s of pod %s: %s, Content-Type %q", connections.Path, p.name, resp.Status, resp.Header.Get("Content-Type"))
	}
	var l connections.List
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		p.t.Fatalf("GET %s of pod %s: %v", connections.Path, p.name, err)
	}
	return &l
}

// TestConnectionsEndpoint checks the sidecar's /debug/connections against
// real brokered connections between pods in their own network namespaces.
func TestConnectionsEndpoint(t *testing.T) {
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	other := c.newPod("other", "client", nil)
	start := time.Now()
	server.must("publish echo")

	if l := server.connections(); len(l.Connections) != 0 || l.Pod.UID != server.uid || l.Node != nodeName {
		t.Fatalf("server's list before any connection = %+v", l)
	}
	first := int(client.must("connect %s/echo one", c.ns)["conn"].(float64))
	client.must("connect %s/echo two", c.ns)

	serverPod := connections.Pod{Namespace: c.ns, Name: "server", UID: server.uid, ServiceAccount: "server"}
	clientPod := connections.Pod{Namespace: c.ns, Name: "client", UID: client.uid, ServiceAccount: "client"}
	want := []connections.Connection{
		{ID: 1, Port: c.ns + "/echo", Client: clientPod, Server: serverPod, Node: nodeName},
		{ID: 2, Port: c.ns + "/echo", Client: clientPod, Server: serverPod, Node: nodeName},
	}
	l := server.connections()
	if diff := cmp.Diff(want, l.Connections, cmpopts.IgnoreFields(connections.Connection{}, "Since")); diff != "" {
		t.Fatalf("server's connections (-want +got):\n%s", diff)
	}
	for _, cn := range l.Connections {
		if cn.Since.Before(start.Add(-time.Second)) || cn.Since.After(time.Now()) {
			t.Errorf("connection %d: since %v, not during the test", cn.ID, cn.Since)
		}
	}
	// Client sidecars cannot see a channel end, so they list nothing.
	if l := client.connections(); len(l.Connections) != 0 {
		t.Errorf("client sidecar lists %+v, want nothing", l.Connections)
	}
	raw := mustGet(t, server, connections.Path)
	for _, leak := range []string{"one", "two", "welcome"} {
		if strings.Contains(raw, leak) {
			t.Errorf("the list contains the connection message or reply %q: %s", leak, raw)
		}
	}
	resp, err := server.httpClient().Post("http://sidecar"+connections.Path, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST %s = %s, want 405", connections.Path, resp.Status)
	}

	t.Run("a channel closed by the client leaves the list", func(t *testing.T) {
		client.must("close %d", first)
		eventually(t, func() bool {
			l := server.connections()
			return len(l.Connections) == 1 && l.Connections[0].ID == 2
		})
	})

	t.Run("a client pod that dies leaves the list", func(t *testing.T) {
		client.kill()
		eventually(t, func() bool { return len(server.connections().Connections) == 0 })
	})

	t.Run("unpublishing empties the list although the channel lives on", func(t *testing.T) {
		conn := int(other.must("connect %s/echo three", c.ns)["conn"].(float64))
		if l := server.connections(); len(l.Connections) != 1 || l.Connections[0].Client.Name != "other" {
			t.Fatalf("server's connections = %+v", l.Connections)
		}
		server.must("unpublish")
		eventually(t, func() bool { return len(server.connections().Connections) == 0 })
		// Documented: the sidecar no longer lists a channel nothing reports
		// on, but the channel itself is the applications' and still works.
		if r := other.must("call %d still-here", conn); r["reply"] != "echo:still-here" {
			t.Fatalf("call after unpublishing = %v", r)
		}
	})
}

func mustGet(t *testing.T, p *pod, path string) string {
	t.Helper()
	resp, err := p.httpClient().Get("http://sidecar" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return b.String()
}
