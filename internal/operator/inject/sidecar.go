package inject

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
)

// Names and paths of what Inject adds. They are the contract between the
// webhook, the sidecar and the applications; see docs/operations.md.
const (
	// SidecarName is the name of the injected init container.
	SidecarName = kalpcv1alpha1.SidecarContainerName

	// NodeVolumeName is the volume of the node directory: a csi volume of
	// kalpc's driver or a hostPath volume (Config.NodeVolume).
	NodeVolumeName = "kalpc-node"
	// NodeHostPath is the node directory on the host.
	NodeHostPath = "/var/run/kalpc"
	// NodeMountPath is where the sidecar sees the node directory. It is not
	// NodeHostPath so that the pod directory below never nests inside the
	// hostPath mount (the kubelet would create its mount point on the host).
	NodeMountPath = "/var/run/kalpc/node"

	// PodVolumeName is the emptyDir shared by the sidecar and the apps.
	PodVolumeName = "kalpc-pod"
	// PodMountPath is where the sidecar and every app container see it.
	PodMountPath = "/var/run/kalpc/pod"
	// SocketPath is the pod-local control socket the sidecar serves.
	SocketPath = PodMountPath + "/kalpc.sock"
	// SocketEnv is the variable that tells apps where SocketPath is.
	SocketEnv = "KALPC_SOCKET"

	// TokenVolumeName is the projected ServiceAccount token volume.
	TokenVolumeName = "kalpc-token"
	// TokenMountPath is where the sidecar sees the token volume.
	TokenMountPath = "/var/run/secrets/kalpc.io/serviceaccount"
	// TokenPath is the token file the sidecar presents to peer sidecars.
	TokenPath = TokenMountPath + "/token"
	// TokenAudience is the audience of the projected token; peers verify it.
	TokenAudience = "kalpc.io"
	// TokenExpirationSeconds is the token's lifetime; the kubelet refreshes
	// it at 80 % of it. 600 s is the shortest lifetime the kubelet accepts.
	TokenExpirationSeconds = 600

	// APIAccessVolumeName is the sidecar's own API server credentials: a
	// ServiceAccount token, the cluster CA and the namespace, as the
	// ServiceAccount admission plugin projects them. That plugin runs before
	// mutating webhooks, so it never mounts its kube-api-access volume into
	// a container a webhook adds (and not at all with
	// automountServiceAccountToken: false).
	APIAccessVolumeName = "kalpc-api-access"
	// APIAccessMountPath is where client-go's in-cluster config looks.
	APIAccessMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"
	// APIAccessExpirationSeconds is the lifetime of that token (the
	// kubelet refreshes it), the value the admission plugin uses.
	APIAccessExpirationSeconds = 3607

	// Environment variables set in the sidecar from the downward API.
	EnvPodName        = "KALPC_POD_NAME"
	EnvPodNamespace   = "KALPC_POD_NAMESPACE"
	EnvPodUID         = "KALPC_POD_UID"
	EnvNodeName       = "KALPC_NODE_NAME"
	EnvServiceAccount = "KALPC_SERVICE_ACCOUNT"

	// ReadyPath is the sidecar's own readiness: it serves its pod socket.
	// It is the startup probe (app containers start once it passes) and
	// the readiness probe of pods that opted out of PublishedPath.
	ReadyPath = "/readyz"
	// PublishedPath is the sidecar's readiness probe by default: it passes
	// only while the pod's application publishes every ConnectionPort that
	// selects the pod as a server (internal/sidecar.PublishedPath).
	PublishedPath = "/readyz/published"
)

// Timing of the readiness probe. The kubelet probes the sidecar inside the
// pod (no API request); the pod's Ready condition, and with it the ports'
// readyServers, follows a publication within PublishedProbePeriod and an
// unpublication within PublishedProbePeriod*PublishedProbeFailures.
const (
	PublishedProbePeriod   = 2
	PublishedProbeFailures = 2
)

// sidecarContainer returns the complete sidecar container for cfg. It spells
// out the values the API server would default (probe scheme and success
// threshold, volume modes) so that injecting into an already injected pod,
// whose spec the API server has defaulted, produces no change.
// readyWhenPublished selects the readiness probe: PublishedPath, or
// ReadyPath for pods that opted out.
func sidecarContainer(cfg Config, readyWhenPublished bool) corev1.Container {
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path:   path,
				Port:   intstr.FromString(kalpcv1alpha1.SidecarHealthPortName),
				Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds:    period,
			TimeoutSeconds:   1,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}
	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
		}}
	}
	// The pod's Ready condition requires every container ready, a native
	// sidecar's readiness probe included: with PublishedPath a server pod
	// is Ready only while its application serves its ports.
	readiness := probe(PublishedPath, PublishedProbePeriod, PublishedProbeFailures)
	if !readyWhenPublished {
		readiness = probe(ReadyPath, 5, 3)
	}
	args := []string{
		"--pod-socket=" + SocketPath,
		"--node-dir=" + NodeMountPath,
		"--token-file=" + TokenPath,
		"--health-addr=:" + strconv.Itoa(int(cfg.HealthPort)),
		"--metrics-addr=:" + strconv.Itoa(int(cfg.MetricsPort)),
		"--log-level=" + cfg.LogLevel,
	}
	if cfg.MetricsAuth {
		args = append(args, "--metrics-auth")
	}
	return corev1.Container{
		Name:            SidecarName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            args,
		Env: []corev1.EnvVar{
			fieldEnv(EnvPodName, "metadata.name"),
			fieldEnv(EnvPodNamespace, "metadata.namespace"),
			fieldEnv(EnvPodUID, "metadata.uid"),
			fieldEnv(EnvNodeName, "spec.nodeName"),
			fieldEnv(EnvServiceAccount, "spec.serviceAccountName"),
		},
		Ports: []corev1.ContainerPort{
			{Name: kalpcv1alpha1.SidecarHealthPortName, ContainerPort: cfg.HealthPort, Protocol: corev1.ProtocolTCP},
			{Name: kalpcv1alpha1.SidecarMetricsPortName, ContainerPort: cfg.MetricsPort, Protocol: corev1.ProtocolTCP},
		},
		Resources: *cfg.Resources.DeepCopy(),
		// A native sidecar: it starts before, and outlives, the app containers.
		RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways),
		// App containers start only once the startup probe passed: up to 60 s.
		StartupProbe:   probe(ReadyPath, 1, 60),
		ReadinessProbe: readiness,
		LivenessProbe:  probe("/healthz", 10, 3),
		VolumeMounts: []corev1.VolumeMount{
			{Name: NodeVolumeName, MountPath: NodeMountPath},
			{Name: PodVolumeName, MountPath: PodMountPath},
			{Name: TokenVolumeName, MountPath: TokenMountPath, ReadOnly: true},
			{Name: APIAccessVolumeName, MountPath: APIAccessMountPath, ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To(cfg.RunAsUser),
			RunAsGroup:               ptr.To(cfg.RunAsUser),
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Privileged:               ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// nodeVolume returns the volume of the node directory for cfg's mode.
func nodeVolume(cfg Config) corev1.Volume {
	if cfg.NodeVolume == NodeVolumeHostPath {
		return corev1.Volume{Name: NodeVolumeName, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
			Path: NodeHostPath,
			Type: ptr.To(corev1.HostPathDirectoryOrCreate),
		}}}
	}
	// The driver learns the pod from the kubelet (podInfoOnMount) and
	// checks it against the API server; the volume carries nothing a pod
	// could forge.
	return corev1.Volume{Name: NodeVolumeName, VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: cfg.CSIDriver,
	}}}
}

// volumes returns the pod volumes the sidecar and the apps use.
func volumes(cfg Config) []corev1.Volume {
	return []corev1.Volume{
		nodeVolume(cfg),
		{Name: PodVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: TokenVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](corev1.ProjectedVolumeSourceDefaultMode),
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          TokenAudience,
				ExpirationSeconds: ptr.To[int64](TokenExpirationSeconds),
				Path:              "token",
			}}},
		}}},
		{Name: APIAccessVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr.To[int32](corev1.ProjectedVolumeSourceDefaultMode),
			Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					ExpirationSeconds: ptr.To[int64](APIAccessExpirationSeconds),
					Path:              "token",
				}},
				{ConfigMap: &corev1.ConfigMapProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
					Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
				}},
				{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
					Path:     "namespace",
					FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
				}}}},
			},
		}}},
	}
}

// appMount is the pod directory mount of every app container.
func appMount() corev1.VolumeMount {
	return corev1.VolumeMount{Name: PodVolumeName, MountPath: PodMountPath}
}

// appEnv is the socket variable of every app container.
func appEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: SocketEnv, Value: SocketPath}
}
