package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/sidecar/nodedir"
)

func echoPortSpec(clientSAs ...string) kalpcv1alpha1.ConnectionPortSpec {
	return kalpcv1alpha1.ConnectionPortSpec{
		Servers: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "echo"}},
		Clients: []kalpcv1alpha1.ClientRule{{ServiceAccounts: clientSAs}},
	}
}

// TestBrokeredConnection runs the whole control path between pods in
// separate network namespaces: publish, policy, identity, accept and reject,
// talking, sidecars out of the data path, sidecar restart, pod death.
func TestBrokeredConnection(t *testing.T) {
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	intruder := c.newPod("intruder", "intruder", nil)

	server.must("publish echo")
	endpoint := nodedir.Dir{Root: c.nodeDir}.EndpointPath(c.ns, "echo", server.uid)
	if st, err := os.Stat(endpoint); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("endpoint %s: %v %v", endpoint, st, err)
	}
	if r := client.must("netdevs"); r["count"].(float64) != 1 {
		t.Fatalf("client pod sees %v network interfaces, want only its own lo", r["count"])
	}

	t.Run("connect and talk", func(t *testing.T) {
		r := client.must("connect %s/echo hello", c.ns)
		if r["reply"] != "welcome hello" {
			t.Fatalf("accept reply = %v", r["reply"])
		}
		conn := int(r["conn"].(float64))
		if r := client.must("call %d ping", conn); r["reply"] != "echo:ping" {
			t.Fatalf("call = %v", r)
		}
		if r := client.must("call %d callback", conn); r["reply"] != "callback:pong" {
			t.Fatalf("callback = %v", r)
		}
		// Near the inline limit: one datagram of 60 KiB.
		if r := client.must("call %d %d", conn, 60<<10); r["reply"] != "61444" {
			t.Fatalf("large inline call = %v", r)
		}
		// Beyond the inline limit: 16 MiB through a shared-memory section
		// between the two apps, which no sidecar sees.
		if r := client.must("call %d %d", conn, 16<<20); r["reply"] != "16777220" {
			t.Fatalf("section call = %v", r)
		}
		// The port's own namespace may be omitted.
		client.must("connect echo short")
	})

	t.Run("policy refusals are distinct and precede the server app", func(t *testing.T) {
		before := incoming(t, server)
		intruder.fails("denied", "connect %s/echo let-me-in", c.ns)
		// The refusal says once that the port is missing, names it and its
		// namespace and what to do (it used to read "connection port not
		// found: connection port not found: no ConnectionPort ns/missing").
		notFound := fmt.Sprintf(`connection port not found: no ConnectionPort named "missing" in namespace %q; create it there (apiVersion: kalpc.io/v1alpha1, kind: ConnectionPort`, c.ns)
		for _, r := range []map[string]any{
			client.fails("port_not_found", "connect %s/missing x", c.ns),
			server.fails("port_not_found", "publish missing"),
		} {
			msg := r["error"].(string)
			if !strings.Contains(msg, notFound) || strings.Count(msg, "not found") != 1 {
				t.Errorf("port-not-found refusal %q; want it to say once %q", msg, notFound)
			}
		}
		client.fails("rejected", "connect %s/echo reject-me", c.ns)
		squatter := c.newPod("squatter", "server", map[string]string{"app": "other"})
		squatter.fails("not_server", "publish echo")
		after := incoming(t, server)
		// Only the reject-me request reached the server application.
		if len(after) != len(before)+1 || after[len(after)-1]["message"] != "reject-me" {
			t.Fatalf("server application saw %v after %v", after, before)
		}
		last := after[len(after)-1]
		if last["pod"] != "client" || last["uid"] != client.uid || last["serviceAccount"] != "client" || last["namespace"] != c.ns {
			t.Fatalf("server saw client identity %v, want pod client/%s", last, client.uid)
		}
		// A reason over the relay's limit, cut inside a rune, still
		// arrives: cut to whole runes within the limit (cleaning the cut
		// rune after cutting used to push it over, and the refusal was
		// never written).
		msg, _ := client.fails("rejected", "connect %s/echo reject-long", c.ns)["error"].(string)
		if !utf8.ValidString(msg) || !strings.Contains(msg, strings.Repeat("a", 4000)) {
			t.Errorf("long rejection reason arrived as %d bytes: %.80q…", len(msg), msg)
		}
	})

	t.Run("no server on this node: where servers run, and waiting for one", func(t *testing.T) {
		p := c.port("late", kalpcv1alpha1.ConnectionPortSpec{
			Servers: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "late"}},
			Clients: []kalpcv1alpha1.ClientRule{{ServiceAccounts: []string{"client"}}},
		})
		// The operator's status (not running here) lists a server pod on
		// another node.
		p.Status.Endpoints = []kalpcv1alpha1.NodeEndpoints{{NodeName: "node-b", Pods: []kalpcv1alpha1.EndpointPod{{Name: "elsewhere", UID: "b0b", Ready: true}}}}
		if err := k8s.Status().Update(t.Context(), p); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool {
			r := client.fails("no_server", "connect %s/late x", c.ns)
			return strings.Contains(r["error"].(string), "its server pods run on node-b (ConnectionPort status)")
		})
		// A client that waits gives up when its context ends, saying so,
		// still an ErrNoServer.
		r := client.fails("no_server", "connect-wait %s/late 300 x", c.ns)
		if msg := r["error"].(string); !strings.Contains(msg, "gave up waiting for a server after") || !strings.Contains(msg, "context deadline exceeded") || r["seconds"].(float64) < 0.3 {
			t.Errorf("waiting connect without a server = %v", r)
		}
		// One that waits long enough connects once a server publishes.
		waited := make(chan map[string]any, 1)
		go func() { waited <- client.do("connect-wait %s/late 20000 patient", c.ns) }()
		time.Sleep(300 * time.Millisecond)
		late := c.newPod("late-server", "server", map[string]string{"app": "late"})
		late.must("publish late")
		select {
		case r := <-waited:
			if r["ok"] != true || r["reply"] != "welcome patient" {
				t.Fatalf("waiting connect = %v", r)
			}
			t.Logf("the waiting client connected after %.2fs", r["seconds"])
		case <-time.After(30 * time.Second):
			t.Fatal("the waiting client did not connect within 30s of the server publishing")
		}
	})

	t.Run("port changes apply to new connections", func(t *testing.T) {
		var p kalpcv1alpha1.ConnectionPort
		if err := k8s.Get(t.Context(), keyOf(c.ns, "echo"), &p); err != nil {
			t.Fatal(err)
		}
		p.Spec.Clients = []kalpcv1alpha1.ClientRule{{ServiceAccounts: []string{"client", "intruder"}}}
		if err := k8s.Update(t.Context(), &p); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return intruder.do("connect %s/echo now-allowed", c.ns)["ok"] == true })
		p.Spec.Clients = []kalpcv1alpha1.ClientRule{{ServiceAccounts: []string{"client"}}}
		if err := k8s.Update(t.Context(), &p); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { return intruder.do("connect %s/echo again", c.ns)["kind"] == "denied" })
	})

	t.Run("no descriptor leaks", func(t *testing.T) {
		before := client.must("fds")["fds"].(float64)
		for range 10 {
			r := client.must("connect %s/echo leak", c.ns)
			client.must("close %d", int(r["conn"].(float64)))
			intruder.fails("denied", "connect %s/echo leak", c.ns)
		}
		if after := client.must("fds")["fds"].(float64); after != before {
			t.Fatalf("client fds: %v before, %v after 10 connections", before, after)
		}
	})

	t.Run("sidecars are out of the data path", func(t *testing.T) {
		r := client.must("connect %s/echo survive", c.ns)
		conn := int(r["conn"].(float64))
		client.must("stop-sidecar")
		server.must("kill-sidecar")
		if r := client.must("call %d still-here", conn); r["reply"] != "echo:still-here" {
			t.Fatalf("call with both sidecars gone = %v", r)
		}
		if r := client.must("call %d callback", conn); r["reply"] != "callback:pong" {
			t.Fatalf("callback with both sidecars gone = %v", r)
		}
		if r := client.fails("no_broker", "connect %s/echo nobody-home", c.ns); !strings.Contains(r["error"].(string), "is the pod's kalpc sidecar running?") {
			t.Errorf("no-broker error %q does not point at the sidecar", r["error"])
		}
		// The server sidecar restarts; the app publishes again and new
		// connections work.
		server.must("start-sidecar")
		client.must("start-sidecar")
		eventually(t, func() bool { return client.do("connect %s/echo back", c.ns)["ok"] == true })
	})

	t.Run("metrics", func(t *testing.T) {
		// The server's sidecar counts a connection after handing the
		// channel over, so the client may have it a moment before.
		var m string
		wants := []string{
			`kalpc_sidecar_connections_total{port="` + c.ns + `/echo",result="accepted",role="server"}`,
			`kalpc_sidecar_active_channels{port="` + c.ns + `/echo"}`,
			`kalpc_sidecar_published_ports 1`,
		}
		missing := func() bool {
			m = server.must("metrics")["metrics"].(string)
			for _, want := range wants {
				if !strings.Contains(m, want) {
					return true
				}
			}
			return false
		}
		for deadline := time.Now().Add(10 * time.Second); missing() && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
		for _, want := range wants {
			if !strings.Contains(m, want) {
				t.Errorf("server metrics lack %s", want)
			}
		}
		cm := intruder.must("metrics")["metrics"].(string)
		if !strings.Contains(cm, `kalpc_sidecar_connections_total{port="`+c.ns+`/echo",result="denied",role="client"}`) {
			t.Errorf("client metrics lack the denied connections")
		}
	})

	t.Run("server pod killed", func(t *testing.T) {
		r := client.must("connect %s/echo last", c.ns)
		conn := int(r["conn"].(float64))
		server.kill()
		if r := client.do("wait-closed %d", conn); r["kind"] != "peer_closed" {
			t.Fatalf("client conn after the server died: %v", r)
		}
		// The server's sidecar is its child and dies a moment after it
		// (PR_SET_PDEATHSIG), so its endpoint may still be held while the
		// process exits: a later connect, or the sweep, removes it. Every
		// connect meanwhile is refused as 'no server'.
		eventually(t, func() bool {
			client.fails("no_server", "connect %s/echo anyone", c.ns)
			_, err := os.Lstat(endpoint)
			return os.IsNotExist(err)
		})
	})
}

// TestIdentity checks that forged, expired, wrong-audience and replayed
// tokens, and server sockets planted by a wrong identity, are refused.
func TestIdentity(t *testing.T) {
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	c.port("guarded", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	rogue := c.newPod("rogue", "client", nil) // same ServiceAccount as client: allowed, if honest
	server.must("publish echo")
	rogue.must("connect %s/echo honest", c.ns)

	valid := rogue.token()
	clientTok := client.token()
	stranger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		token string
		want  string // in the requester's error
	}{
		{"forged", resign(t, valid, stranger, func(map[string]any) {}), "invalid bearer token"},
		{"expired", resign(t, valid, issuerKey(t), func(cl map[string]any) {
			past := time.Now().Add(-time.Hour).Unix()
			cl["iat"], cl["nbf"], cl["exp"] = past-600, past-600, past
		}), "expired"},
		{"wrong audience", requestToken(t, c.ns, "client", podObject(t, c.ns, "rogue"), "not-kalpc"), "audiences"},
		{"replayed from another pod", clientTok, "not that pod's sidecar"},
	}
	before := len(incoming(t, server))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rogue.setToken(tc.token)
			r := rogue.fails("unauthenticated", "connect %s/echo %s", c.ns, strings.ReplaceAll(tc.name, " ", "-"))
			if !strings.Contains(r["error"].(string), tc.want) {
				t.Fatalf("refusal %q does not say %q", r["error"], tc.want)
			}
		})
	}
	if after := incoming(t, server); len(after) != before {
		t.Fatalf("server application saw requests with bad tokens: %v", after[before:])
	}
	rogue.setToken(valid)
	rogue.must("connect %s/echo honest-again", c.ns)

	t.Run("planted server sockets", func(t *testing.T) {
		dir := nodedir.Dir{Root: c.nodeDir}
		// A pod not selected by spec.servers plants an endpoint with its
		// own valid token, from the process holding its identity socket
		// (a sidecar modified to skip its own publish check).
		impostor := c.createPod("impostor", "server", map[string]string{"app": "other"})
		fake := plantServer(t, dir.EndpointPath(c.ns, "guarded", string(impostor.UID)),
			requestToken(t, c.ns, "server", impostor, identityAudience), string(impostor.UID))
		r := client.fails("server_identity", "connect %s/guarded secret", c.ns)
		if !strings.Contains(r["error"].(string), "does not match spec.servers") {
			t.Fatalf("refusal does not name the squatting: %v", r["error"])
		}
		if fake.sawToken() {
			t.Fatal("the client sidecar revealed its token to a squatter")
		}
		fake.Close()
		// A stolen token of an allowed server, served from an endpoint
		// named after that server: the presenting process is not the
		// server's sidecar.
		fake = plantServer(t, dir.EndpointPath(c.ns, "guarded", server.uid), server.token())
		r = client.fails("server_identity", "connect %s/guarded secret", c.ns)
		if !strings.Contains(r["error"].(string), "not that pod's sidecar") {
			t.Fatalf("refusal does not name the binding failure: %v", r["error"])
		}
		if fake.sawToken() {
			t.Fatal("the client sidecar revealed its token to an unverified server")
		}
		fake.Close()
	})
}

func keyOf(ns, name string) clientKey { return clientKey{Namespace: ns, Name: name} }

func incoming(t *testing.T, p *pod) []map[string]string {
	t.Helper()
	var in []map[string]string
	if err := json.Unmarshal([]byte(p.must("incoming")["incoming"].(string)), &in); err != nil {
		t.Fatal(err)
	}
	return in
}

func eventually(t *testing.T, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServerGoingAway covers a server application that can no longer take
// requests while its sidecar still has its publication (the instant a
// server exits during a rolling update): a client is brokered to another
// server of the port, never refused because it drew the dying one, and
// with no other server it gets ErrNoServer, the error that says "retry".
func TestServerGoingAway(t *testing.T) {
	c := newCluster(t)
	c.port("roll", echoPortSpec("client"))
	dying := c.newPod("dying", "server", map[string]string{"app": "echo"})
	live := c.newPod("live", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)

	dying.must("publish-deaf roll")
	live.must("publish roll")
	before := len(incoming(t, live))
	// Round robin over two endpoints: within four connects the dying one
	// is drawn at least once.
	for i := range 4 {
		if r := client.must("connect %s/roll n%d", c.ns, i); r["reply"] != fmt.Sprintf("welcome n%d", i) {
			t.Fatalf("connect %d: %v", i, r)
		}
	}
	if got := len(incoming(t, live)) - before; got != 4 {
		t.Fatalf("the live server saw %d of 4 connection requests", got)
	}
	// The dying publication is gone once found dead: its endpoint is
	// removed from the node directory.
	waitGone(t, nodedir.Dir{Root: c.nodeDir}.EndpointPath(c.ns, "roll", dying.uid))

	// Only a dying server left: a clear, retryable "no server".
	dying.must("publish-deaf roll")
	live.must("unpublish") // asynchronous: wait for the endpoint to go
	waitGone(t, nodedir.Dir{Root: c.nodeDir}.EndpointPath(c.ns, "roll", live.uid))
	client.fails("no_server", "connect %s/roll alone", c.ns)
}

// waitGone waits until path does not exist.
func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is still there", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAPIServerUnreachable cuts the sidecars off the API server: the
// established channel keeps working, new connections are refused as
// ErrBrokerUnavailable (the retryable error: nothing was found against the
// server, it just cannot be verified) and counted as "unavailable", never
// accepted unverified and never reported as a failed identity; once the
// API server is back they work again.
func TestAPIServerUnreachable(t *testing.T) {
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	server.must("publish echo")
	conn := int(client.must("connect %s/echo before", c.ns)["conn"].(float64))

	setAPIDown(true)
	t.Cleanup(func() { setAPIDown(false) })
	// Verifications cached from before (pods for 2 s, token reviews for
	// 10 s) may still let a connect through for a moment.
	eventually(t, func() bool {
		r := client.do("connect %s/echo during", c.ns)
		switch {
		case r["ok"] == true:
			return false
		case r["kind"] == "unavailable":
			return true
		}
		t.Fatalf("connect with the API server unreachable = %v, want ErrBrokerUnavailable", r)
		return false
	})
	if r := client.must("call %d still-here", conn); r["reply"] != "echo:still-here" {
		t.Fatalf("call on the established channel = %v", r)
	}
	m := client.must("metrics")["metrics"].(string)
	if !strings.Contains(m, `kalpc_sidecar_connections_total{port="`+c.ns+`/echo",result="unavailable",role="client"}`) {
		t.Errorf("client metrics lack the unavailable connections:\n%s", m)
	}

	setAPIDown(false)
	eventually(t, func() bool { return client.do("connect %s/echo after", c.ns)["ok"] == true })
}

// TestPublishDeadlineBoundsOnlyThePublication: a server that publishes with
// a context deadline (as "ctx bounds only the publication" invites) keeps
// its port past that deadline; it used to end at it ("control connection
// ended: i/o timeout"), and clients then got "no live server". Connect's
// deadline likewise bounds only the handshake, not the channel.
func TestPublishDeadlineBoundsOnlyThePublication(t *testing.T) {
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)

	server.must("publish-within echo 1000")
	r := client.must("connect-within %s/echo 1000 early", c.ns)
	conn := int(r["conn"].(float64))
	time.Sleep(2 * time.Second) // past both deadlines
	if end := server.must("port-end")["end"]; end != "" {
		t.Fatalf("the port ended after its publication's deadline: %v", end)
	}
	if r := client.must("connect %s/echo late", c.ns); r["reply"] != "welcome late" {
		t.Fatalf("connect past the publication's deadline = %v", r)
	}
	if r := client.must("call %d past-deadline", conn); r["reply"] != "echo:past-deadline" {
		t.Fatalf("call on a channel past its connect's deadline = %v", r)
	}
}

// TestPlantedSilentEndpointIsSkippedQuickly: an endpoint planted in the
// node directory that accepts and never answers used to hold a connect for
// the client sidecar's whole budget (3 × the 10 s handshake timeout; the
// application's own 20 s context ran out first). Each endpoint's first
// answer now has its own bound (--endpoint-answer-timeout, 2 s): the
// connect skips the silent endpoint and reaches the real server, and with
// the silent one alone it fails quickly with "no server" naming it.
func TestPlantedSilentEndpointIsSkippedQuickly(t *testing.T) {
	c := newCluster(t)
	c.port("echo", echoPortSpec("client"))
	server := c.newPod("server", "server", map[string]string{"app": "echo"})
	client := c.newPod("client", "client", nil)
	dir := nodedir.Dir{Root: c.nodeDir}
	plantSilent(t, dir.EndpointPath(c.ns, "echo", "0badc0de-0000-4000-8000-000000000001"))

	server.must("publish echo")
	// Round robin over two endpoints: of two connects, one tries the
	// silent endpoint first.
	slowest := 0.0
	for i := range 2 {
		r := client.must("connect %s/echo n%d", c.ns, i)
		if r["reply"] != fmt.Sprintf("welcome n%d", i) {
			t.Fatalf("connect %d: %v", i, r)
		}
		slowest = max(slowest, r["seconds"].(float64))
	}
	t.Logf("slowest connect with a silent endpoint beside the server: %.2fs", slowest)
	if slowest > 5 {
		t.Fatalf("a connect took %.1fs with a silent endpoint planted; want under 5s", slowest)
	}
	if m := client.must("metrics")["metrics"].(string); !strings.Contains(m, "kalpc_sidecar_silent_endpoints_total 1") {
		t.Errorf("client metrics do not count the silent endpoint once:\n%s", m)
	}

	server.must("unpublish")
	waitGone(t, dir.EndpointPath(c.ns, "echo", server.uid))
	r := client.fails("no_server", "connect %s/echo alone", c.ns)
	t.Logf("connect with only a silent endpoint: %.2fs: %v", r["seconds"], r["error"])
	if r["seconds"].(float64) > 5 || !strings.Contains(r["error"].(string), "did not answer within 2s") {
		t.Fatalf("connect with only a silent endpoint = %v; want a quick 'no server' naming the silent endpoint", r)
	}
}
