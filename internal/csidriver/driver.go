package csidriver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultName is the driver's name: the CSIDriver object's name and the
// driver field of the volume the webhook injects.
const DefaultName = "csi.kalpc.io"

// Volume context keys the kubelet sets for ephemeral inline volumes of a
// driver with podInfoOnMount.
const (
	contextEphemeral      = "csi.storage.k8s.io/ephemeral"
	contextPodName        = "csi.storage.k8s.io/pod.name"
	contextPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	contextPodUID         = "csi.storage.k8s.io/pod.uid"
	contextServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
)

// csiVolumesDir is the kubelet's directory of a pod's CSI volumes, below
// <kubelet dir>/pods/<pod uid>/.
const csiVolumesDir = "volumes/kubernetes.io~csi"

// Config configures a Driver.
type Config struct {
	// Name is the driver's name. Defaults to DefaultName.
	Name string

	// Version is reported as the plugin's vendor version. Defaults to "dev".
	Version string

	// NodeID is this node's name, reported by NodeGetInfo. Required.
	NodeID string

	// NodeDir is the directory that is bind-mounted into each volume: the
	// host's node directory as the driver sees it. Required.
	NodeDir string

	// KubeletDir is the kubelet's root directory, at the same path inside
	// the driver as on the host (the kubelet passes host paths). Target
	// paths outside <KubeletDir>/pods are refused. Required.
	KubeletDir string

	// Checker decides whether a pod may mount the node directory. Required.
	Checker PodChecker

	// Log receives the driver's log. Defaults to discarding it.
	Log *slog.Logger
}

// Driver implements the CSI Identity and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	cfg Config
	// mu serialises publish and unpublish: each reads the mount table and
	// changes it, and they are rare (one each per pod).
	mu sync.Mutex
}

var (
	_ csi.IdentityServer = &Driver{}
	_ csi.NodeServer     = &Driver{}
)

// New returns a Driver for cfg.
func New(cfg Config) (*Driver, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var errs []error
	if cfg.NodeID == "" {
		errs = append(errs, errors.New("node ID is required"))
	}
	for _, p := range []struct{ name, path string }{{"node directory", cfg.NodeDir}, {"kubelet directory", cfg.KubeletDir}} {
		if !filepath.IsAbs(p.path) || filepath.Clean(p.path) != p.path {
			errs = append(errs, fmt.Errorf("%s must be a clean absolute path, not %q", p.name, p.path))
		}
	}
	if cfg.Checker == nil {
		errs = append(errs, errors.New("pod checker is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid CSI driver config: %w", err)
	}
	return &Driver{cfg: cfg}, nil
}

// GetPluginInfo implements csi.IdentityServer.
func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: d.cfg.Name, VendorVersion: d.cfg.Version}, nil
}

// GetPluginCapabilities implements csi.IdentityServer: none, as there is no
// controller service.
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

// Probe implements csi.IdentityServer: ready when the node directory is in
// the mount table.
func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	mounts, err := readMounts()
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if _, err := findSource(mounts, d.cfg.NodeDir); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node directory: %v", err)
	}
	if fi, err := os.Stat(d.cfg.NodeDir); err != nil || !fi.IsDir() {
		return nil, status.Errorf(codes.FailedPrecondition, "node directory %s is not a directory (%v)", d.cfg.NodeDir, err)
	}
	return &csi.ProbeResponse{}, nil
}

// NodeGetInfo implements csi.NodeServer.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.cfg.NodeID}, nil
}

// NodeGetCapabilities implements csi.NodeServer: none (no staging, no
// stats).
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

// NodePublishVolume implements csi.NodeServer: it checks the pod and
// bind-mounts the node directory at the target path. Publishing a target
// that already holds the node directory succeeds without a change.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is missing")
	}
	if req.GetVolumeCapability() == nil {
		return nil, status.Error(codes.InvalidArgument, "volume capability is missing")
	}
	if req.GetVolumeCapability().GetMount() == nil {
		return nil, status.Error(codes.InvalidArgument, "only mount volumes are supported, not block volumes")
	}
	vc := req.GetVolumeContext()
	if vc[contextEphemeral] != "true" {
		return nil, status.Errorf(codes.InvalidArgument, "%s serves only ephemeral inline volumes (a csi: volume in the pod spec), not persistent volumes", d.cfg.Name)
	}
	pod := PodInfo{
		Name:           vc[contextPodName],
		Namespace:      vc[contextPodNamespace],
		UID:            vc[contextPodUID],
		ServiceAccount: vc[contextServiceAccount],
	}
	if pod.Name == "" || pod.Namespace == "" || pod.UID == "" {
		return nil, status.Errorf(codes.InvalidArgument, "pod information is missing from the volume context (is podInfoOnMount set in the CSIDriver %s?)", d.cfg.Name)
	}
	target, volume, err := d.parseTarget(req.GetTargetPath())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if volume.podUID != pod.UID {
		return nil, status.Errorf(codes.InvalidArgument, "target path %s is not in the directory of pod %s", target, pod.UID)
	}
	pod.Volume = volume.name
	log := d.cfg.Log.With("volumeID", req.GetVolumeId(), "target", target, "pod", pod.Namespace+"/"+pod.Name, "podUID", pod.UID)

	// Already published (a kubelet retry, or a restarted driver): done,
	// without asking the API server again.
	if published, err := d.publishedAt(target); err != nil || published {
		if err != nil {
			return nil, err
		}
		log.Debug("Volume already published")
		return &csi.NodePublishVolumeResponse{}, nil
	}

	// The check reads the API server (up to its timeout): outside the lock,
	// so that a slow API server delays only this pod's mount.
	if err := d.cfg.Checker.CheckPod(ctx, pod); err != nil {
		log.Info("Refused to publish the node directory", "error", err)
		if errors.Is(err, ErrRefused) {
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
		return nil, status.Errorf(codes.Unavailable, "failed to check pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	// Again under the lock: a concurrent call for the same target may have
	// mounted it meanwhile.
	if published, err := d.publishedAt(target); err != nil || published {
		if err != nil {
			return nil, err
		}
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := os.Mkdir(target, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, status.Errorf(codes.Internal, "failed to create the target directory: %v", err)
	}
	if fi, err := os.Lstat(target); err != nil || !fi.IsDir() {
		return nil, status.Errorf(codes.Internal, "target %s is not a directory (%v)", target, err)
	}
	if err := bindMount(d.cfg.NodeDir, target, req.GetReadonly()); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	log.Info("Published the node directory", "readOnly", req.GetReadonly())
	return &csi.NodePublishVolumeResponse{}, nil
}

// publishedAt reports whether the node directory is mounted at target (the
// topmost mount there), from the mount table. Another mount there is an
// AlreadyExists error.
func (d *Driver) publishedAt(target string) (bool, error) {
	mounts, err := readMounts()
	if err != nil {
		return false, status.Error(codes.Internal, err.Error())
	}
	src, err := findSource(mounts, d.cfg.NodeDir)
	if err != nil {
		return false, status.Errorf(codes.Internal, "node directory: %v", err)
	}
	at := mountsAt(mounts, target)
	if len(at) == 0 {
		return false, nil
	}
	if top := at[len(at)-1]; top.Dev != src.Dev || top.Root != src.Root {
		return false, status.Errorf(codes.AlreadyExists, "target %s already holds another mount (%s %s)", target, top.Dev, top.Root)
	}
	return true, nil
}

// NodeUnpublishVolume implements csi.NodeServer: it unmounts whatever is
// mounted at the target path and removes the directory. Unpublishing a
// target that is gone succeeds.
func (d *Driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume ID is missing")
	}
	target, _, err := d.parseTarget(req.GetTargetPath())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	mounts, err := readMounts()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	at := mountsAt(mounts, target)
	for range at {
		if err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
			return nil, status.Errorf(codes.Internal, "failed to unmount %s: %v", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "failed to remove the target directory: %v", err)
	}
	if len(at) > 0 {
		d.cfg.Log.Info("Unpublished the node directory", "volumeID", req.GetVolumeId(), "target", target)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// Published returns the target paths where the node directory is mounted
// now, read from the mount table: what a restarted driver recovers.
func (d *Driver) Published() ([]string, error) {
	mounts, err := readMounts()
	if err != nil {
		return nil, err
	}
	src, err := findSource(mounts, d.cfg.NodeDir)
	if err != nil {
		return nil, fmt.Errorf("node directory: %w", err)
	}
	pods := filepath.Join(d.cfg.KubeletDir, "pods")
	var targets []string
	for _, m := range mounts {
		if m.Dev == src.Dev && m.Root == src.Root && within(m.Point, pods) && m.Point != pods {
			targets = append(targets, m.Point)
		}
	}
	return targets, nil
}

// targetVolume is what a target path says about its volume.
type targetVolume struct {
	podUID string
	name   string
}

// parseTarget checks that target is <KubeletDir>/pods/<uid>/volumes/
// kubernetes.io~csi/<volume>/mount, the only place the kubelet publishes an
// ephemeral volume, and returns it cleaned with the pod UID and volume name.
func (d *Driver) parseTarget(target string) (string, targetVolume, error) {
	if target == "" {
		return "", targetVolume{}, errors.New("target path is missing")
	}
	if !filepath.IsAbs(target) || filepath.Clean(target) != target {
		return "", targetVolume{}, fmt.Errorf("target path %q is not a clean absolute path", target)
	}
	pods := filepath.Join(d.cfg.KubeletDir, "pods")
	rel, err := filepath.Rel(pods, target)
	if err != nil || !within(target, pods) {
		return "", targetVolume{}, fmt.Errorf("target path %s is not below %s", target, pods)
	}
	parts := strings.Split(rel, "/")
	if len(parts) != 5 || parts[1]+"/"+parts[2] != csiVolumesDir || parts[4] != "mount" || parts[0] == "" || parts[3] == "" {
		return "", targetVolume{}, fmt.Errorf("target path %s is not <kubelet dir>/pods/<uid>/%s/<volume>/mount", target, csiVolumesDir)
	}
	return target, targetVolume{podUID: parts[0], name: parts[3]}, nil
}

// bindMount bind-mounts dir at target with nosuid, nodev and noexec (and
// read-only when asked): the flags of a bind mount change only on a
// remount. A failed remount undoes the bind mount.
func bindMount(dir, target string, readOnly bool) error {
	if err := unix.Mount(dir, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("failed to bind-mount %s at %s: %w", dir, target, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		_ = unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		return fmt.Errorf("failed to make the mount at %s nosuid,nodev,noexec: %w", target, err)
	}
	return nil
}
