package inject

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Config says what sidecar to inject. The operator fills it from its flags.
type Config struct {
	// Image is the sidecar's container image. Required.
	Image string

	// ImagePullPolicy is the sidecar's image pull policy. Defaults to
	// IfNotPresent.
	ImagePullPolicy corev1.PullPolicy

	// Resources are the sidecar's resource requests and limits. Defaults to
	// DefaultResources().
	Resources *corev1.ResourceRequirements

	// LogLevel is passed to the sidecar as --log-level. Defaults to "info".
	LogLevel string

	// RunAsUser is the UID and GID the sidecar runs as. It must own the node
	// directory on every node. Defaults to 65532.
	RunAsUser int64

	// HealthPort is the port the sidecar serves /healthz and /readyz on,
	// inside the pod's network namespace. Defaults to 15980.
	HealthPort int32

	// MetricsPort is the port the sidecar serves Prometheus metrics on.
	// Defaults to 15981.
	MetricsPort int32

	// MetricsAuth starts the sidecar with --metrics-auth: it serves
	// /metrics only to bearer tokens the API server authenticates and
	// allows get on the non-resource URL /metrics. Defaults to false
	// (/metrics open to whoever reaches the pod's metrics port;
	// /debug/connections is always authorized).
	MetricsAuth bool

	// OperatorNamespace is the operator's own namespace, whose pods are never
	// injected. Required.
	OperatorNamespace string

	// NodeVolume says how the node directory reaches the sidecar:
	// NodeVolumeCSI (an ephemeral inline volume of kalpc's CSI driver,
	// admissible under Pod Security "restricted") or NodeVolumeHostPath (a
	// hostPath volume, for clusters without the driver; "baseline" and
	// "restricted" reject it). Defaults to NodeVolumeCSI.
	NodeVolume NodeVolumeMode

	// CSIDriver is the name of kalpc's CSI driver. Defaults to
	// DefaultCSIDriver.
	CSIDriver string
}

// NodeVolumeMode says how the node directory reaches the sidecar.
type NodeVolumeMode string

// Node volume modes.
const (
	NodeVolumeCSI      NodeVolumeMode = "csi"
	NodeVolumeHostPath NodeVolumeMode = "hostPath"
)

// DefaultCSIDriver is the name of kalpc's CSI driver (internal/csidriver).
const DefaultCSIDriver = "csi.kalpc.io"

// DefaultResources returns the sidecar's default requests and limits: the
// sidecar only brokers connections, so it is small.
func DefaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("10m"),
			corev1.ResourceMemory: resource.MustParse("32Mi"),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("128Mi"),
		},
	}
}

// Default values of Config.
const (
	DefaultLogLevel    = "info"
	DefaultRunAsUser   = 65532
	DefaultHealthPort  = 15980
	DefaultMetricsPort = 15981
)

// withDefaults returns a copy of c with every unset field defaulted, or an
// error when a required field is missing.
func (c Config) withDefaults() (Config, error) {
	if c.Image == "" {
		return c, errors.New("sidecar image is required")
	}
	if c.OperatorNamespace == "" {
		return c, errors.New("operator namespace is required")
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if c.Resources == nil {
		r := DefaultResources()
		c.Resources = &r
	}
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.RunAsUser == 0 {
		c.RunAsUser = DefaultRunAsUser
	}
	if c.HealthPort == 0 {
		c.HealthPort = DefaultHealthPort
	}
	if c.MetricsPort == 0 {
		c.MetricsPort = DefaultMetricsPort
	}
	switch c.NodeVolume {
	case "":
		c.NodeVolume = NodeVolumeCSI
	case NodeVolumeCSI, NodeVolumeHostPath:
	default:
		return c, fmt.Errorf("node volume mode must be %q or %q, not %q", NodeVolumeCSI, NodeVolumeHostPath, c.NodeVolume)
	}
	if c.CSIDriver == "" {
		c.CSIDriver = DefaultCSIDriver
	}
	if c.HealthPort == c.MetricsPort {
		return c, fmt.Errorf("sidecar health and metrics ports must differ, both are %d", c.HealthPort)
	}
	return c, nil
}
