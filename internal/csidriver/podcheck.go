package csidriver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// ErrRefused is wrapped by a PodChecker's error when the pod may not mount
// the node directory (as opposed to the check failing).
var ErrRefused = errors.New("refused")

// PodInfo is what the kubelet says about the pod a volume is for, plus the
// volume's name in the pod spec (from the target path).
type PodInfo struct {
	Name           string
	Namespace      string
	UID            string
	ServiceAccount string
	// Volume is the name of the csi volume in the pod spec.
	Volume string
}

// PodChecker decides whether a pod may mount the node directory.
type PodChecker interface {
	// CheckPod returns nil to allow the mount, an error wrapping ErrRefused
	// to refuse it, or another error when it could not decide (the kubelet
	// retries).
	CheckPod(ctx context.Context, pod PodInfo) error
}

// PodCheckerFunc adapts a function to a PodChecker.
type PodCheckerFunc func(ctx context.Context, pod PodInfo) error

// CheckPod calls f.
func (f PodCheckerFunc) CheckPod(ctx context.Context, pod PodInfo) error { return f(ctx, pod) }

var _ PodChecker = PodCheckerFunc(nil)

// APIPodChecker reads the pod from the API server and allows the mount only
// to the injected kalpc sidecar (see CheckSidecarPod). It keeps no cache:
// one GET per mount, that is per pod start, bounded by the kubelet.
type APIPodChecker struct {
	// Pods reads pods. Required.
	Pods corev1client.PodsGetter
	// Driver is the driver's name. Required.
	Driver string
	// NodeName is this node; a pod scheduled elsewhere is refused. Required.
	NodeName string
	// SidecarImages are the sidecar images that may mount the node
	// directory. Required.
	SidecarImages []string
	// Timeout bounds the GET. Defaults to 10 s.
	Timeout time.Duration
}

var _ PodChecker = &APIPodChecker{}

// CheckPod implements PodChecker.
func (c *APIPodChecker) CheckPod(ctx context.Context, info PodInfo) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pod, err := c.Pods.Pods(info.Namespace).Get(ctx, info.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("failed to get pod %s/%s: %w", info.Namespace, info.Name, err)
	}
	return CheckSidecarPod(pod, info, c.Driver, c.NodeName, c.SidecarImages)
}

// CheckSidecarPod allows pod to mount the node directory through the csi
// volume info.Volume of driver only when it is the pod the kubelet named
// (UID, ServiceAccount, node) and the volume reaches exactly one container:
// the kalpc sidecar as the webhook injects it (a native sidecar init
// container of that name, running one of images with the image's own
// entrypoint). No application container, other init container or ephemeral
// container may mount it. Every refusal wraps ErrRefused and says why.
func CheckSidecarPod(pod *corev1.Pod, info PodInfo, driver, nodeName string, images []string) error {
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("%w: pod %s/%s: %s", ErrRefused, info.Namespace, info.Name, fmt.Sprintf(format, args...))
	}
	if string(pod.UID) != info.UID {
		return refuse("UID is %s, the kubelet asked for %s", pod.UID, info.UID)
	}
	if info.ServiceAccount != "" && pod.Spec.ServiceAccountName != info.ServiceAccount {
		return refuse("ServiceAccount is %q, the kubelet said %q", pod.Spec.ServiceAccountName, info.ServiceAccount)
	}
	if pod.Spec.NodeName != nodeName {
		return refuse("scheduled to node %q, not this node %q", pod.Spec.NodeName, nodeName)
	}
	i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == info.Volume })
	if i < 0 || pod.Spec.Volumes[i].CSI == nil || pod.Spec.Volumes[i].CSI.Driver != driver {
		return refuse("has no csi volume %q of driver %s", info.Volume, driver)
	}
	if pod.Labels[kalpcv1alpha1.LabelSidecar] != kalpcv1alpha1.LabelSidecarInjected {
		return refuse("is not labelled %s=%s by the kalpc webhook", kalpcv1alpha1.LabelSidecar, kalpcv1alpha1.LabelSidecarInjected)
	}
	mounts := func(c *corev1.Container) bool {
		return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == info.Volume })
	}
	for _, c := range pod.Spec.Containers {
		if mounts(&c) {
			return refuse("container %q mounts the kalpc node directory; only the kalpc sidecar may", c.Name)
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == info.Volume }) {
			return refuse("ephemeral container %q mounts the kalpc node directory; only the kalpc sidecar may", c.Name)
		}
	}
	found := false
	for _, c := range pod.Spec.InitContainers {
		if !mounts(&c) {
			continue
		}
		if c.Name != kalpcv1alpha1.SidecarContainerName {
			return refuse("init container %q mounts the kalpc node directory; only the kalpc sidecar may", c.Name)
		}
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			return refuse("container %q is not a native sidecar (restartPolicy Always)", c.Name)
		}
		if !slices.Contains(images, c.Image) {
			return refuse("container %q runs image %q, not a kalpc sidecar image", c.Name, c.Image)
		}
		if len(c.Command) > 0 {
			return refuse("container %q overrides the sidecar image's entrypoint", c.Name)
		}
		found = true
	}
	if !found {
		return refuse("no container mounts volume %q", info.Volume)
	}
	return nil
}
