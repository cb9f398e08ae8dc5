package csidriver_test

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/kalpc/kalpc/internal/csidriver"
)

const sidecarImage = "ghcr.io/kalpc/kalpc-sidecar:dev"

// injectedPod is a pod as the webhook leaves it in csi mode, scheduled.
func injectedPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "server-0", Namespace: "apps", UID: podUID, Labels: map[string]string{"kalpc.io/sidecar": "injected"}},
		Spec: corev1.PodSpec{
			NodeName:           "node-1",
			ServiceAccountName: "default",
			InitContainers: []corev1.Container{{
				Name: "kalpc-sidecar", Image: sidecarImage, Args: []string{"--node-dir=/var/run/kalpc/node"},
				RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
				VolumeMounts:  []corev1.VolumeMount{{Name: "kalpc-node", MountPath: "/var/run/kalpc/node"}},
			}},
			Containers: []corev1.Container{{Name: "app", Image: "app:1"}},
			Volumes: []corev1.Volume{{Name: "kalpc-node", VolumeSource: corev1.VolumeSource{
				CSI: &corev1.CSIVolumeSource{Driver: csidriver.DefaultName},
			}}},
		},
	}
}

// TestCheckSidecarPod lists what a hostile or mistaken pod might write into
// its spec and checks each is refused with its reason.
func TestCheckSidecarPod(t *testing.T) {
	info := csidriver.PodInfo{Name: "server-0", Namespace: "apps", UID: podUID, ServiceAccount: "default", Volume: "kalpc-node"}
	tests := []struct {
		name   string
		mutate func(p *corev1.Pod, i *csidriver.PodInfo)
		refuse string // "" means allowed
	}{
		{"injected sidecar", func(*corev1.Pod, *csidriver.PodInfo) {}, ""},
		{"pod replaced (other UID)", func(p *corev1.Pod, _ *csidriver.PodInfo) { p.UID = "new" }, "UID is new"},
		{"other ServiceAccount", func(p *corev1.Pod, _ *csidriver.PodInfo) { p.Spec.ServiceAccountName = "x" }, "ServiceAccount"},
		{"other node", func(p *corev1.Pod, _ *csidriver.PodInfo) { p.Spec.NodeName = "node-2" }, "node-2"},
		{"not labelled injected", func(p *corev1.Pod, _ *csidriver.PodInfo) { p.Labels = nil }, "not labelled"},
		{"volume of another driver", func(p *corev1.Pod, _ *csidriver.PodInfo) { p.Spec.Volumes[0].CSI.Driver = "other" }, "has no csi volume"},
		{"volume not in the spec", func(_ *corev1.Pod, i *csidriver.PodInfo) { i.Volume = "other" }, "has no csi volume"},
		{"app container mounts it", func(p *corev1.Pod, _ *csidriver.PodInfo) {
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "kalpc-node", MountPath: "/x"}}
		}, `container "app" mounts`},
		{"other init container mounts it", func(p *corev1.Pod, _ *csidriver.PodInfo) {
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "setup", Image: sidecarImage,
				VolumeMounts: []corev1.VolumeMount{{Name: "kalpc-node", MountPath: "/x"}}})
		}, `init container "setup"`},
		{"ephemeral container mounts it", func(p *corev1.Pod, _ *csidriver.PodInfo) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debug", VolumeMounts: []corev1.VolumeMount{{Name: "kalpc-node", MountPath: "/x"}}}}}
		}, `ephemeral container "debug"`},
		{"sidecar name, other image", func(p *corev1.Pod, _ *csidriver.PodInfo) { p.Spec.InitContainers[0].Image = "busybox" }, `image "busybox"`},
		{"sidecar image, own command", func(p *corev1.Pod, _ *csidriver.PodInfo) { p.Spec.InitContainers[0].Command = []string{"/bin/sh"} }, "entrypoint"},
		{"not a native sidecar", func(p *corev1.Pod, _ *csidriver.PodInfo) { p.Spec.InitContainers[0].RestartPolicy = nil }, "native sidecar"},
		{"nobody mounts it", func(p *corev1.Pod, _ *csidriver.PodInfo) { p.Spec.InitContainers[0].VolumeMounts = nil }, "no container mounts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod, i := injectedPod(), info
			tc.mutate(pod, &i)
			err := csidriver.CheckSidecarPod(pod, i, csidriver.DefaultName, "node-1", []string{"other:1", sidecarImage})
			if tc.refuse == "" {
				if err != nil {
					t.Errorf("CheckSidecarPod() = %v, want allowed", err)
				}
				return
			}
			if !errors.Is(err, csidriver.ErrRefused) || !strings.Contains(err.Error(), tc.refuse) {
				t.Errorf("CheckSidecarPod() = %v, want a refusal containing %q", err, tc.refuse)
			}
		})
	}
}
