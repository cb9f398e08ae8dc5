//go:build e2e

package e2e

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const nodePrepSelector = "app.kubernetes.io/component=nodeprep"

// csiTarget matches the kubelet's target path of an injected pod's node
// directory volume and captures the pod UID.
var csiTarget = regexp.MustCompile(`/pods/([0-9a-f-]+)/volumes/kubernetes\.io~csi/kalpc-node/mount$`)

// csiMounts returns the UIDs of the pods whose node directory volume is
// mounted on this host (the test runs on the local cluster's node).
func csiMounts(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var uids []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 4 {
			if m := csiTarget.FindStringSubmatch(fields[4]); m != nil {
				uids = append(uids, m[1])
			}
		}
	}
	slices.Sort(uids)
	return slices.Compact(uids)
}

// podUIDs returns the UIDs of every pod in the cluster.
func podUIDs(t *testing.T) map[string]bool {
	t.Helper()
	uids := map[string]bool{}
	for _, u := range strings.Fields(kc(t, "get", "pods", "-A", "-o", "jsonpath={.items[*].metadata.uid}")) {
		uids[u] = true
	}
	return uids
}

// TestCSIDriverRestart kills the CSI driver (the kalpc-nodeprep pod) under a
// connected client and creates a new client pod meanwhile: the channel keeps
// working (the mounts outlive the driver), the new pod starts once the
// driver is back (the kubelet retries the mount), the new driver recovers
// the published volumes from the mount table. A pod deleted while the
// driver is away keeps its mount until the driver is back, then loses it;
// and when the pods are gone no mount of theirs is left.
func TestCSIDriverRestart(t *testing.T) {
	if !ourCluster() {
		t.Skip("reads the node's mount table: only on the cluster of hack/local-cluster/up")
	}
	ensureEcho(t)
	defer dump(t, ns)
	defer dump(t, releaseNS)
	startLoad(t, "csi-load", 20*time.Second, 200*time.Millisecond)
	server := livePods(t, ns, "app=echo-server")[0].Metadata.UID
	if mounts := csiMounts(t); !slices.Contains(mounts, server) {
		t.Fatalf("the server pod %s has no node directory mount; mounts: %v", server, mounts)
	}
	old := strings.Fields(kc(t, "-n", releaseNS, "get", "pods", "-l", nodePrepSelector, "-o", "jsonpath={.items[*].metadata.name}"))

	killed := time.Now()
	kc(t, "-n", releaseNS, "delete", "pod", "-l", nodePrepSelector, "--grace-period=0", "--force", "--wait=false")
	// A new pod while the driver is gone or coming back.
	clientJob(t, ns, "csi-client", "client", "-port", "echo", "-size", "1048576")
	waitFor(t, "a new kalpc-nodeprep pod", 2*time.Minute, func() (bool, string) {
		out, _ := kcErr("-n", releaseNS, "get", "pods", "-l", nodePrepSelector, "--field-selector", "status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}")
		names := strings.Fields(out)
		return len(names) == 1 && !slices.Contains(old, names[0]), out
	})
	kc(t, "-n", releaseNS, "rollout", "status", "daemonset/kalpc-nodeprep", "--timeout", "120s")
	t.Logf("driver back %v after its pod was killed", time.Since(killed).Round(time.Millisecond))

	logs := waitJob(t, ns, "csi-client", 3*time.Minute)
	if !strings.Contains(logs, "k8s-echo: all checks passed") {
		t.Errorf("the client started during the restart:\n%s", logs)
	}
	loadResult(t, "csi-load", false)

	driverLog := kc(t, "-n", releaseNS, "logs", "-l", nodePrepSelector, "--tail", "-1")
	if !regexp.MustCompile(`Recovered the published volumes from the mount table","count":[1-9]`).MatchString(driverLog) {
		t.Errorf("the new driver recovered no published volume:\n%s", tail(driverLog, 20))
	}
	if !strings.Contains(driverLog, "Registered with the kubelet") {
		t.Errorf("the new driver did not register with the kubelet:\n%s", tail(driverLog, 20))
	}

	// A pod deleted while the driver is away keeps its mount (only the
	// driver unmounts) and goes once the driver is back. The DaemonSet is
	// kept off the node by a nodeSelector no node matches.
	startLoad(t, "csi-orphan", 2*time.Minute, 0)
	orphan := livePods(t, ns, "app=csi-orphan")[0]
	const away = `{"spec":{"template":{"spec":{"nodeSelector":{"kalpc.io/e2e-no-node":"true"}}}}}`
	const back = `{"spec":{"template":{"spec":{"nodeSelector":{"kalpc.io/e2e-no-node":null}}}}}`
	kc(t, "-n", releaseNS, "patch", "daemonset", "kalpc-nodeprep", "-p", away)
	restored := false
	defer func() {
		if !restored {
			_, _ = kcErr("-n", releaseNS, "patch", "daemonset", "kalpc-nodeprep", "-p", back)
		}
	}()
	waitFor(t, "the CSI driver to leave the node", 2*time.Minute, func() (bool, string) {
		out, _ := kcErr("-n", releaseNS, "get", "pods", "-l", nodePrepSelector, "-o", "jsonpath={.items[*].metadata.name}")
		return strings.TrimSpace(out) == "", out
	})
	kc(t, "-n", ns, "delete", "pod", orphan.Metadata.Name, "--wait=false")
	time.Sleep(5 * time.Second)
	if !slices.Contains(csiMounts(t), orphan.Metadata.UID) {
		t.Errorf("the mount of pod %s went while the driver was away", orphan.Metadata.Name)
	}
	kc(t, "-n", releaseNS, "patch", "daemonset", "kalpc-nodeprep", "-p", back)
	restored = true
	kc(t, "-n", releaseNS, "rollout", "status", "daemonset/kalpc-nodeprep", "--timeout", "120s")
	waitFor(t, "the deleted pod's mount to go once the driver is back", 2*time.Minute, func() (bool, string) {
		return !slices.Contains(csiMounts(t), orphan.Metadata.UID), "still mounted"
	})

	// Nothing stale: once the Jobs' pods are gone, every node directory
	// mount belongs to a pod that exists.
	kc(t, "-n", ns, "delete", "job", "csi-client", "csi-load", "csi-orphan", "--wait")
	waitFor(t, "no node directory mount of a deleted pod", 2*time.Minute, func() (bool, string) {
		live := podUIDs(t)
		var stale []string
		for _, u := range csiMounts(t) {
			if !live[u] {
				stale = append(stale, u)
			}
		}
		return len(stale) == 0, "stale mounts of pods " + strings.Join(stale, ", ")
	})
}
