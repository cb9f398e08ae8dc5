package inject

import (
	"slices"

	corev1 "k8s.io/api/core/v1"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// inject adds the sidecar, its volumes and the app containers' mount and
// environment to pod, as the package documentation lists. It is idempotent:
// every piece is replaced in place when an element of the same name (or mount
// path) exists and appended otherwise, so a second run changes nothing. cfg
// must have been defaulted.
func inject(pod *corev1.Pod, cfg Config) {
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[kalpcv1alpha1.LabelSidecar] = kalpcv1alpha1.LabelSidecarInjected

	// The sidecar goes first so that every later init container and every
	// app container starts after it is ready.
	sidecar := sidecarContainer(cfg, pod.Annotations[kalpcv1alpha1.AnnotationReadyWhenPublished] != kalpcv1alpha1.ValueFalse)
	if i := slices.IndexFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == SidecarName }); i >= 0 {
		pod.Spec.InitContainers = slices.Delete(pod.Spec.InitContainers, i, i+1)
	}
	pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, 0, sidecar)

	// The projected token needs a ServiceAccount name. The ServiceAccount
	// admission plugin sets it before webhooks run; set it too so that the
	// result is valid without it.
	if pod.Spec.ServiceAccountName == "" {
		pod.Spec.ServiceAccountName = "default"
	}
	for _, v := range volumes(cfg) {
		pod.Spec.Volumes = upsert(pod.Spec.Volumes, v, func(a, b corev1.Volume) bool { return a.Name == b.Name })
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.VolumeMounts = upsert(c.VolumeMounts, appMount(), func(a, b corev1.VolumeMount) bool {
			return a.Name == b.Name || a.MountPath == b.MountPath
		})
		c.Env = upsert(c.Env, appEnv(), func(a, b corev1.EnvVar) bool { return a.Name == b.Name })
	}
}

// upsert replaces the first element of list that is the same as want (by
// same) with want and drops any later such element, or appends want when
// there is none. The result for a list that already holds want is the list
// itself, so running it twice neither reorders nor changes anything.
func upsert[T any](list []T, want T, same func(a, b T) bool) []T {
	i := slices.IndexFunc(list, func(e T) bool { return same(e, want) })
	if i < 0 {
		return append(list, want)
	}
	list[i] = want
	// A later duplicate (e.g. another volume mounted at our path) would make
	// the API server reject the pod; ours wins.
	tail := slices.DeleteFunc(slices.Clone(list[i+1:]), func(e T) bool { return same(e, want) })
	return append(list[:i+1], tail...)
}
