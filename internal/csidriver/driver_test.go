package csidriver_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/kalpc/kalpc/internal/csidriver"
)

const podUID = "0b4c3a2e-1111-4222-8333-944455556666"

// node is a fake node's file system layout in a temporary directory: a node
// directory and a kubelet directory. The mounts are real.
type node struct {
	root, nodeDir, kubeletDir string
	sockets                   csidriver.Sockets
}

func newNode(t *testing.T) *node {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to bind-mount")
	}
	// A short path: socket paths must fit in a sockaddr_un.
	root, err := os.MkdirTemp("", "kcsi")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{root: root, nodeDir: filepath.Join(root, "node"), kubeletDir: filepath.Join(root, "kubelet")}
	n.sockets = csidriver.SocketsFor(n.kubeletDir, csidriver.DefaultName)
	if err := os.MkdirAll(n.nodeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever a failed test left mounted goes, then the tree.
		for _, m := range mountPointsBelow(t, root) {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return n
}

// target returns the kubelet's target path of volume for pod uid, with its
// parent created as the kubelet creates it.
func (n *node) target(t *testing.T, uid, volume string) string {
	t.Helper()
	dir := filepath.Join(n.kubeletDir, "pods", uid, "volumes", "kubernetes.io~csi", volume)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "mount")
}

// start runs a driver with checker on n until the returned stop is called.
func (n *node) start(t *testing.T, checker csidriver.PodChecker) (*csidriver.Driver, csi.NodeClient, func()) {
	t.Helper()
	d, err := csidriver.New(csidriver.Config{NodeID: "node-1", NodeDir: n.nodeDir, KubeletDir: n.kubeletDir, Checker: checker})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- csidriver.Serve(ctx, d, n.sockets) }()
	conn := dial(t, n.sockets.CSI)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		conn.Close()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve() = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after its context ended")
		}
	}
	t.Cleanup(stop)
	return d, csi.NewNodeClient(conn), stop
}

// dial connects to a Unix socket once it exists.
func dial(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s did not appear", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func allowAll() csidriver.PodChecker {
	return csidriver.PodCheckerFunc(func(context.Context, csidriver.PodInfo) error { return nil })
}

func publishRequest(target, uid string) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-" + uid,
		TargetPath: target,
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: map[string]string{
			"csi.storage.k8s.io/ephemeral":           "true",
			"csi.storage.k8s.io/pod.name":            "server-0",
			"csi.storage.k8s.io/pod.namespace":       "apps",
			"csi.storage.k8s.io/pod.uid":             uid,
			"csi.storage.k8s.io/serviceAccount.name": "default",
		},
	}
}

// mountLine returns the mountinfo line of the mount at point, or "".
func mountLine(t *testing.T, point string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := ""
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 4 && fields[4] == point {
			line = s.Text()
		}
	}
	return line
}

func mountPointsBelow(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var points []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	slices.Reverse(points)
	return points
}

// TestPublishUnpublish publishes a volume over the driver's real socket,
// sees the node directory through the bind mount, publishes it again, and
// unpublishes it twice.
func TestPublishUnpublish(t *testing.T) {
	n := newNode(t)
	d, client, _ := n.start(t, allowAll())
	ctx := t.Context()
	target := n.target(t, podUID, "kalpc-node")

	start := time.Now()
	if _, err := client.NodePublishVolume(ctx, publishRequest(target, podUID)); err != nil {
		t.Fatalf("NodePublishVolume() = %v", err)
	}
	t.Logf("NodePublishVolume (check allowed at once, bind mount, remount) took %v", time.Since(start))
	line := mountLine(t, target)
	if line == "" {
		t.Fatalf("no mount at %s after publishing", target)
	}
	for _, opt := range []string{"rw", "nosuid", "nodev", "noexec"} {
		if !slices.Contains(strings.Split(strings.Fields(line)[5], ","), opt) {
			t.Errorf("mount options of %q lack %s", line, opt)
		}
	}
	// What the sidecar writes there is in the node directory.
	if err := os.WriteFile(filepath.Join(target, "probe"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(n.nodeDir, "probe")); err != nil {
		t.Errorf("a file written through the volume is not in the node directory: %v", err)
	}

	// Idempotent: a second publish makes no second mount.
	if _, err := client.NodePublishVolume(ctx, publishRequest(target, podUID)); err != nil {
		t.Fatalf("second NodePublishVolume() = %v", err)
	}
	if got, err := d.Published(); err != nil || !slices.Equal(got, []string{target}) {
		t.Errorf("Published() = %q, %v; want [%s]", got, err, target)
	}

	unpublish := &csi.NodeUnpublishVolumeRequest{VolumeId: "csi-" + podUID, TargetPath: target}
	for i := range 2 {
		if _, err := client.NodeUnpublishVolume(ctx, unpublish); err != nil {
			t.Fatalf("NodeUnpublishVolume() #%d = %v", i+1, err)
		}
		if line := mountLine(t, target); line != "" {
			t.Fatalf("still mounted after unpublishing: %s", line)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target directory is left after unpublishing: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(n.nodeDir, "probe")); err != nil {
		t.Errorf("unpublishing touched the node directory: %v", err)
	}
}

// TestRestartRecovers stops the driver with a volume published, checks the
// mount outlives it, and has a new driver process see it in the mount
// table, publish it again without a second mount, and unpublish it.
func TestRestartRecovers(t *testing.T) {
	n := newNode(t)
	_, client, stop := n.start(t, allowAll())
	target := n.target(t, podUID, "kalpc-node")
	if _, err := client.NodePublishVolume(t.Context(), publishRequest(target, podUID)); err != nil {
		t.Fatalf("NodePublishVolume() = %v", err)
	}
	stop()
	for _, s := range []string{n.sockets.CSI, n.sockets.Registration} {
		if _, err := os.Lstat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left after the driver stopped: %v", s, err)
		}
	}
	if mountLine(t, target) == "" {
		t.Fatal("the mount did not outlive the driver")
	}
	// A driver that was killed leaves its sockets behind; the next one
	// replaces them.
	for _, s := range []string{n.sockets.CSI, n.sockets.Registration} {
		lis, err := net.Listen("unix", s)
		if err != nil {
			t.Fatal(err)
		}
		lis.(*net.UnixListener).SetUnlinkOnClose(false)
		lis.Close()
	}

	d2, client2, _ := n.start(t, csidriver.PodCheckerFunc(func(context.Context, csidriver.PodInfo) error {
		t.Error("a restarted driver checked the pod again for a volume already published")
		return nil
	}))
	if got, err := d2.Published(); err != nil || !slices.Equal(got, []string{target}) {
		t.Errorf("restarted driver's Published() = %q, %v; want [%s]", got, err, target)
	}
	if _, err := client2.NodePublishVolume(t.Context(), publishRequest(target, podUID)); err != nil {
		t.Fatalf("NodePublishVolume() after restart = %v", err)
	}
	if got, _ := d2.Published(); len(got) != 1 {
		t.Errorf("publishing after restart made another mount: %q", got)
	}
	if _, err := client2.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume() after restart = %v", err)
	}
	if got, _ := d2.Published(); len(got) != 0 {
		t.Errorf("mounts left after unpublishing: %q", got)
	}
}

// TestRefused shows that a refused pod or a malformed request gets a clear
// error and no mount.
func TestRefused(t *testing.T) {
	n := newNode(t)
	_, client, _ := n.start(t, csidriver.PodCheckerFunc(func(_ context.Context, p csidriver.PodInfo) error {
		if p.Volume != "kalpc-node" || p.Namespace != "apps" || p.Name != "server-0" || p.UID != podUID || p.ServiceAccount != "default" {
			t.Errorf("checker got %+v", p)
		}
		return errors.Join(csidriver.ErrRefused, errors.New("not a kalpc sidecar"))
	}))
	target := n.target(t, podUID, "kalpc-node")
	other := n.target(t, "other-uid", "kalpc-node")

	tests := []struct {
		name   string
		mutate func(r *csi.NodePublishVolumeRequest)
		code   codes.Code
		msg    string
	}{
		{"checker refuses", func(*csi.NodePublishVolumeRequest) {}, codes.PermissionDenied, "not a kalpc sidecar"},
		{"not ephemeral", func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, "csi.storage.k8s.io/ephemeral") }, codes.InvalidArgument, "ephemeral"},
		{"no pod info", func(r *csi.NodePublishVolumeRequest) { delete(r.VolumeContext, "csi.storage.k8s.io/pod.uid") }, codes.InvalidArgument, "podInfoOnMount"},
		{"block volume", func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}, codes.InvalidArgument, "block"},
		{"no volume ID", func(r *csi.NodePublishVolumeRequest) { r.VolumeId = "" }, codes.InvalidArgument, "volume ID"},
		{"target outside the kubelet directory", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = filepath.Join(n.root, "elsewhere") }, codes.InvalidArgument, "not below"},
		{"target not a csi volume", func(r *csi.NodePublishVolumeRequest) {
			r.TargetPath = filepath.Join(n.kubeletDir, "pods", podUID, "volumes", "kubernetes.io~empty-dir", "x", "mount")
		}, codes.InvalidArgument, "kubernetes.io~csi"},
		{"target unclean", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = target + "/../../x/mount" }, codes.InvalidArgument, "clean"},
		{"target of another pod", func(r *csi.NodePublishVolumeRequest) { r.TargetPath = other }, codes.InvalidArgument, "not in the directory of pod"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := publishRequest(target, podUID)
			tc.mutate(req)
			_, err := client.NodePublishVolume(t.Context(), req)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("NodePublishVolume() = %v, want %s containing %q", err, tc.code, tc.msg)
			}
			if mountLine(t, target) != "" || mountLine(t, other) != "" {
				t.Error("a refused request mounted something")
			}
		})
	}
	_, err := client.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: "/etc"})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("NodeUnpublishVolume(/etc) = %v, want InvalidArgument", err)
	}
}

// TestIdentityAndRegistration calls the Identity service and the kubelet's
// registration service as the kubelet does.
func TestIdentityAndRegistration(t *testing.T) {
	n := newNode(t)
	_, node, _ := n.start(t, allowAll())
	conn := dial(t, n.sockets.CSI)
	defer conn.Close()
	id := csi.NewIdentityClient(conn)
	info, err := id.GetPluginInfo(t.Context(), &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != "csi.kalpc.io" {
		t.Errorf("GetPluginInfo() = %v, %v", info, err)
	}
	if _, err := id.Probe(t.Context(), &csi.ProbeRequest{}); err != nil {
		t.Errorf("Probe() = %v", err)
	}
	if ni, err := node.NodeGetInfo(t.Context(), &csi.NodeGetInfoRequest{}); err != nil || ni.GetNodeId() != "node-1" {
		t.Errorf("NodeGetInfo() = %v, %v", ni, err)
	}
	if caps, err := node.NodeGetCapabilities(t.Context(), &csi.NodeGetCapabilitiesRequest{}); err != nil || len(caps.GetCapabilities()) != 0 {
		t.Errorf("NodeGetCapabilities() = %v, %v; want none (no staging)", caps, err)
	}

	regConn := dial(t, n.sockets.Registration)
	defer regConn.Close()
	reg := registerapi.NewRegistrationClient(regConn)
	pi, err := reg.GetInfo(t.Context(), &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo() = %v", err)
	}
	if pi.GetType() != registerapi.CSIPlugin || pi.GetName() != "csi.kalpc.io" || pi.GetEndpoint() != n.sockets.CSI || !slices.Contains(pi.GetSupportedVersions(), "1.0.0") {
		t.Errorf("GetInfo() = %v", pi)
	}
	if _, err := reg.NotifyRegistrationStatus(t.Context(), &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Errorf("NotifyRegistrationStatus() = %v", err)
	}
	for _, s := range []string{n.sockets.CSI, n.sockets.Registration} {
		if fi, err := os.Stat(s); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket %s: %v, %v; want mode 0600", s, fi.Mode(), err)
		}
	}
}

// TestSlowCheckDoesNotBlockOthers holds one pod's check (an API server that
// does not answer) and publishes another pod's volume meanwhile.
func TestSlowCheckDoesNotBlockOthers(t *testing.T) {
	n := newNode(t)
	release := make(chan struct{})
	_, client, _ := n.start(t, csidriver.PodCheckerFunc(func(ctx context.Context, p csidriver.PodInfo) error {
		if p.UID == podUID {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}))
	slow := n.target(t, podUID, "kalpc-node")
	const otherUID = "1b4c3a2e-1111-4222-8333-944455556666"
	fast := n.target(t, otherUID, "kalpc-node")
	done := make(chan error, 1)
	go func() {
		_, err := client.NodePublishVolume(context.Background(), publishRequest(slow, podUID))
		done <- err
	}()
	start := time.Now()
	if _, err := client.NodePublishVolume(t.Context(), publishRequest(fast, otherUID)); err != nil {
		t.Fatalf("NodePublishVolume(other pod) = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the other pod's publish took %v behind a slow check", d)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("NodePublishVolume(slow pod) = %v", err)
	}
	for _, target := range []string{slow, fast} {
		if mountLine(t, target) == "" {
			t.Errorf("%s not mounted", target)
		}
		if _, err := client.NodeUnpublishVolume(t.Context(), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
			t.Errorf("NodeUnpublishVolume(%s) = %v", target, err)
		}
	}
}

// TestTargetHoldsAnotherMount refuses to publish over something else
// mounted at the target.
func TestTargetHoldsAnotherMount(t *testing.T) {
	n := newNode(t)
	_, client, _ := n.start(t, allowAll())
	target := n.target(t, podUID, "kalpc-node")
	if err := os.Mkdir(target, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", target, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	_, err := client.NodePublishVolume(t.Context(), publishRequest(target, podUID))
	if status.Code(err) != codes.AlreadyExists {
		t.Errorf("NodePublishVolume over a tmpfs = %v, want AlreadyExists", err)
	}
	if line := mountLine(t, target); !strings.Contains(line, " - tmpfs ") {
		t.Errorf("the mount at the target changed: %s", line)
	}
}
