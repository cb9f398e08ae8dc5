package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/skew"
)

// TestVersionSkewSidecars brokers connections between a sidecar of the
// previous release (skew.PreviousRelease, built from git in the test) and
// one of this tree, in both directions: an old client sidecar against a
// new server sidecar, and a new client sidecar against an old server
// sidecar. That is a node between `helm upgrade` and the last restart of an
// injected pod. The applications are this tree's library, so each old
// sidecar also serves a newer application (an application image rebuilt
// against a newer kalpc runs with the sidecar its pod was injected with).
//
// Each direction: connect with the server's identity and the client's
// reaching the other side, calls inline, through a section and with a
// callback over the brokered channel, a rejection by the server
// application relayed through both sidecars, and a no-server refusal that
// names the nodes from the ConnectionPort status as this tree's operator
// writes it (the old sidecar reads this tree's CRD). Every command is
// bounded (20 s in the pod, 20 s for the sidecar to start).
//
// It skips when git or the commit is missing, unless KALPC_REQUIRE_SKEW=1
// (CI) makes that a failure.
//
// The last subtest turns it around: applications linked with the previous
// release's library (internal/skew/peer's program built from its tree)
// publish and connect through this tree's sidecars, as after a pod
// restart that brought a new sidecar to an application image not rebuilt,
// and run peer.Script against each other over the brokered channel.
func TestVersionSkewSidecars(t *testing.T) {
	start := time.Now()
	tree := skew.Tree(t)
	old := skew.Build(t, tree, "./cmd/sidecar")
	skew.CopyCurrent(t, tree, "internal/skew/peer")
	oldApp := skew.Build(t, tree, "./internal/skew/peer/kalpc-skew-peer")
	t.Cleanup(func() { t.Logf("sidecar version-skew test took %v in all", time.Since(start).Round(time.Millisecond)) })

	for _, tc := range []struct {
		name           string
		client, server string
	}{
		{"old client sidecar, new server sidecar", old, sidecarBin},
		{"new client sidecar, old server sidecar", sidecarBin, old},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			c.port("echo", echoPortSpec("client"))
			c.sidecarBin = tc.server
			server := c.newPod("server", "server", map[string]string{"app": "echo"})
			c.sidecarBin = tc.client
			client := c.newPod("client", "client", nil)
			server.must("publish echo")

			r := client.must("connect %s/echo skewed", c.ns)
			if r["reply"] != "welcome skewed" {
				t.Errorf("accept reply %q, want %q", r["reply"], "welcome skewed")
			}
			var incoming []map[string]string
			if err := json.Unmarshal([]byte(server.must("incoming")["incoming"].(string)), &incoming); err != nil {
				t.Fatal(err)
			}
			if len(incoming) != 1 || incoming[0]["pod"] != "client" || incoming[0]["serviceAccount"] != "client" ||
				incoming[0]["namespace"] != c.ns || incoming[0]["message"] != "skewed" {
				t.Errorf("the server saw %v, want the client pod's identity and message", incoming)
			}
			conn := r["conn"]
			for _, call := range []struct{ payload, want string }{
				{"hello", "echo:hello"},
				{"callback", "callback:pong"},
				{"200000", "200004"}, // 200 KB through a section
			} {
				if got := client.must("call %v %s", conn, call.payload)["reply"]; got != call.want {
					t.Errorf("call %s = %q, want %q", call.payload, got, call.want)
				}
			}

			// The server application's rejection, relayed by both sidecars.
			msg, _ := client.fails("rejected", "connect %s/echo reject-me", c.ns)["error"].(string)
			if !strings.Contains(msg, "rejected by the server application") {
				t.Errorf("rejection arrived as %q", msg)
			}

			// A port whose servers run elsewhere, per the status the
			// operator writes.
			p := c.port("elsewhere", kalpcv1alpha1.ConnectionPortSpec{
				Servers: kalpcv1alpha1.LabelSelector{MatchLabels: map[string]string{"app": "elsewhere"}},
				Clients: []kalpcv1alpha1.ClientRule{{ServiceAccounts: []string{"client"}}},
			})
			p.Status.Endpoints = []kalpcv1alpha1.NodeEndpoints{{NodeName: "node-b", Pods: []kalpcv1alpha1.EndpointPod{{Name: "far", UID: "b0b", Ready: true}}}}
			if err := k8s.Status().Update(t.Context(), p); err != nil {
				t.Fatal(err)
			}
			eventually(t, func() bool {
				msg, _ := client.fails("no_server", "connect %s/elsewhere x", c.ns)["error"].(string)
				return strings.Contains(msg, "node-b")
			})

			// The first connection still works, and closes cleanly.
			if got := client.must("call %v after", conn)["reply"]; got != "echo:after" {
				t.Errorf("call after = %q", got)
			}
			client.must("close %v", conn)
		})
	}

	t.Run("old applications, new sidecars", func(t *testing.T) {
		c := newCluster(t)
		spec := echoPortSpec("client")
		spec.MessagePolicy.DirectAccess = new(true) // the script grants a region
		c.port("echo", spec)
		server := c.newPod("server", "server", map[string]string{"app": "echo"})
		client := c.newPod("client", "client", nil)
		if r := server.must("start-app %s server -port echo", oldApp); r["line"] != "listening" {
			t.Fatalf("the old server application did not publish: %v", r)
		}
		r := client.do("run-app %s client -port %s/echo -timeout 50s", oldApp, c.ns)
		t.Logf("old client application's log:\n%s", r["stderr"])
		if r["ok"] != true || r["stdout"] != "ok\n" {
			t.Fatalf("old client application through new sidecars: %v", r)
		}
	})
}
