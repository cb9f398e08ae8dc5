//go:build e2e

package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExamples deploys each example's manifest as a user following its
// README would (the images are loaded by install-kalpc) and checks that the
// client Job succeeds through the sidecar and prints the example's final
// verdict. Every example client checks what it received (hashes, region
// contents, gRPC statuses) and exits non-zero on any mismatch.
func TestExamples(t *testing.T) {
	for _, ex := range []struct {
		name    string
		verdict []string // lines every client container prints on success
	}{
		{"echo", []string{"content verified", "loan sent without a copy"}},
		{"blob", []string{"blob: all transfers verified"}},
		{"region", []string{"region: all checks passed"}},
		{"grpc", []string{"grpc: all checks passed"}},
	} {
		t.Run(ex.name, func(t *testing.T) {
			namespace := "kalpc-" + ex.name
			job := ex.name + "-client"
			manifest := filepath.Join(root, "examples", ex.name, ex.name+".yaml")
			t.Cleanup(func() {
				dump(t, namespace)
				_, _ = kcErr("delete", "-f", manifest, "--ignore-not-found", "--wait=false")
			})
			kc(t, "apply", "-f", manifest)
			kc(t, "-n", namespace, "rollout", "status", "deployment/"+ex.name+"-server", "--timeout", "180s")

			status := waitJobStatus(t, namespace, job, 4*time.Minute)
			logs, _ := kcErr("-n", namespace, "logs", "job/"+job, "--all-containers", "--prefix")
			if status != "succeeded" {
				t.Fatalf("job %s/%s %s; logs:\n%s", namespace, job, status, logs)
			}
			t.Logf("%s client:\n%s", ex.name, logs)
			for _, want := range ex.verdict {
				if !strings.Contains(logs, want) {
					t.Errorf("client logs lack %q", want)
				}
			}
			if !strings.Contains(logs, "through the kalpc sidecar") && ex.name != "echo" {
				t.Error("client logs do not show a connection brokered by the kalpc sidecar")
			}
		})
	}
}

// waitJobStatus waits for a Job to succeed or fail and says which
// ("succeeded" or "failed"); the test fails after timeout. Unlike waitJob, it
// leaves reading the logs (of every container) to the caller.
func waitJobStatus(t *testing.T, namespace, job string, timeout time.Duration) string {
	t.Helper()
	var status string
	waitFor(t, "job "+job+" to finish", timeout, func() (bool, string) {
		out, _ := kcErr("-n", namespace, "get", "job", job, "-o", "jsonpath={.status.succeeded}/{.status.failed}")
		switch s := strings.TrimSpace(out); {
		case strings.HasPrefix(s, "1/"):
			status = "succeeded"
		case strings.HasSuffix(s, "/1"):
			status = "failed"
		}
		return status != "", "succeeded/failed " + out
	})
	return status
}
