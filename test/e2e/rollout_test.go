//go:build e2e

package e2e

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRollingUpdate restarts the server Deployment (kubectl rollout
// restart) while a client calls it in a loop and opens a fresh connection
// every 200 ms. The old server drains its connections on SIGTERM
// (Conn.Shutdown): the call in progress completes, the client's next call
// fails with ErrGoingAway without being sent and is made again on a new
// connection to the new server, so no call fails, and no reconnect or new
// connection fails. It logs the longest time without a successful call.
func TestRollingUpdate(t *testing.T) {
	applyEcho(t)
	defer dump(t, ns)
	before := livePods(t, ns, "app=echo-server")

	clientJob(t, ns, "loader", "load", "-port", "echo", "-servers", "2", "-settle", "3s", "-interval", "5ms", "-timeout", "3m")
	waitLog(t, ns, "loader", "load: server", 2*time.Minute)
	started := time.Now()
	kc(t, "-n", ns, "rollout", "restart", "deployment/echo-server")
	kc(t, "-n", ns, "rollout", "status", "deployment/echo-server", "--timeout", "120s")
	t.Logf("rollout finished in %v", time.Since(started).Round(time.Millisecond))
	logs := waitJob(t, ns, "loader", 3*time.Minute)
	t.Logf("loader:\n%s", tail(logs, 60))

	summary := regexp.MustCompile(`load: summary .*`).FindString(logs)
	if summary == "" {
		t.Fatalf("the loader printed no summary")
	}
	t.Logf("rolling update under load: %s", summary)
	// The server's readiness probe says "published": the Deployment stops
	// the old server only once the new one can take connections, so no
	// reconnect and no new connection fails.
	for _, want := range []string{" failed=0 ", "other-errors=0", "failed-reconnects=0 ", "failed-new-connections=0 ", "load: passed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("loader log lacks %q", want)
		}
	}
	if !strings.Contains(summary, "going-away=") || strings.Contains(summary, "going-away=0 ") {
		t.Errorf("the loader never saw the old server going away: %s", summary)
	}
	if len(before) == 1 && !strings.Contains(summary, before[0].Metadata.Name) {
		t.Errorf("the loader never talked to the old server %s", before[0].Metadata.Name)
	}
}
