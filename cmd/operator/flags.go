package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kalpc/kalpc/internal/operator/cert"
	"github.com/kalpc/kalpc/internal/operator/inject"
	"github.com/kalpc/kalpc/internal/operator/sidecarrbac/sidecarrole"
)

// Certificate providers of --webhook-cert-provider.
const (
	certProviderOperator    = "operator"
	certProviderCertManager = "cert-manager"
)

// config is everything the flags set.
type config struct {
	namespace string

	metricsAddr    string
	metricsSecure  bool
	probeAddr      string
	enableHTTP2    bool
	leaderElect    bool
	leaderElectNS  string
	leaderElectID  string
	webhookPort    int
	certProvider   string
	certDir        string
	certSecret     string
	webhookService string
	webhookConfig  string
	certValidity   time.Duration
	caValidity     time.Duration
	certCheck      time.Duration

	sidecarImage         string
	sidecarPullPolicy    string
	sidecarCPURequest    string
	sidecarMemoryRequest string
	sidecarCPULimit      string
	sidecarMemoryLimit   string
	sidecarLogLevel      string
	sidecarRunAsUser     int64
	sidecarHealthPort    int
	sidecarMetricsPort   int
	sidecarMetricsAuth   bool
	sidecarClusterRole   string
	sidecarNodeVolume    string
	csiDriver            string

	zap zap.Options
}

// parseFlags parses args (without the program name) into a config and checks
// it.
func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)

	defaultNS := os.Getenv("POD_NAMESPACE")
	if defaultNS == "" {
		defaultNS = "kalpc-system"
	}
	fs.StringVar(&c.namespace, "namespace", defaultNS, "The operator's own namespace: never injected, holds the webhook certificate Secret and, by default, the leader election lease. Defaults to $POD_NAMESPACE, else kalpc-system.")

	fs.StringVar(&c.metricsAddr, "metrics-bind-address", ":8443", "Address the Prometheus metrics endpoint binds to; \"0\" disables it.")
	fs.BoolVar(&c.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, allowing only callers authorized to get the /metrics non-resource URL (TokenReview and SubjectAccessReview).")
	fs.StringVar(&c.probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	fs.BoolVar(&c.enableHTTP2, "enable-http2", false, "Enable HTTP/2 for the webhook and metrics servers (off by default because of the HTTP/2 rapid reset and stream cancellation CVEs).")
	fs.BoolVar(&c.leaderElect, "leader-elect", false, "Elect a leader among replicas so that only one runs the reconcilers; required with more than one replica.")
	fs.StringVar(&c.leaderElectNS, "leader-election-namespace", "", "Namespace of the leader election Lease. Defaults to --namespace.")
	fs.StringVar(&c.leaderElectID, "leader-election-id", "kalpc-operator.kalpc.io", "Name of the leader election Lease.")

	fs.IntVar(&c.webhookPort, "webhook-port", 9443, "Port the webhook server listens on.")
	fs.StringVar(&c.certProvider, "webhook-cert-provider", certProviderOperator, "Who provides the webhook's TLS certificate: \"operator\" (self-signed CA managed by the operator, caBundle kept current) or \"cert-manager\" (files in --webhook-cert-dir, caBundle injected by cert-manager).")
	fs.StringVar(&c.certDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs", "Directory with tls.crt and tls.key when --webhook-cert-provider=cert-manager; reloaded when the files change.")
	fs.StringVar(&c.certSecret, "webhook-cert-secret", "kalpc-webhook-tls", "Secret in --namespace where the operator keeps its CA and serving certificate (--webhook-cert-provider=operator).")
	fs.StringVar(&c.webhookService, "webhook-service", "kalpc-webhook", "Service in --namespace that fronts the webhook server; the serving certificate is issued for its DNS names.")
	fs.StringVar(&c.webhookConfig, "webhook-configuration", inject.WebhookConfigurationName, "MutatingWebhookConfiguration whose caBundle the operator keeps current (--webhook-cert-provider=operator); it owns the certificate Secret and the leader election Lease, so they are deleted with it.")
	fs.DurationVar(&c.certValidity, "webhook-cert-validity", cert.DefaultCertValidity, "Lifetime of a serving certificate; it is renewed after two thirds of it.")
	fs.DurationVar(&c.caValidity, "webhook-ca-validity", cert.DefaultCAValidity, "Lifetime of the self-signed CA; it is renewed after two thirds of it.")
	fs.DurationVar(&c.certCheck, "webhook-cert-check-interval", cert.DefaultCheckInterval, "How often each replica re-reads the certificate Secret, renews what is due and reloads what another replica or a person wrote.")

	fs.StringVar(&c.sidecarImage, "sidecar-image", "", "Container image of the injected kalpc sidecar. Required.")
	fs.StringVar(&c.sidecarPullPolicy, "sidecar-image-pull-policy", string(corev1.PullIfNotPresent), "Image pull policy of the sidecar: Always, IfNotPresent or Never.")
	fs.StringVar(&c.sidecarCPURequest, "sidecar-cpu-request", "10m", "CPU request of the sidecar; empty for none.")
	fs.StringVar(&c.sidecarMemoryRequest, "sidecar-memory-request", "32Mi", "Memory request of the sidecar; empty for none.")
	fs.StringVar(&c.sidecarCPULimit, "sidecar-cpu-limit", "", "CPU limit of the sidecar; empty for none.")
	fs.StringVar(&c.sidecarMemoryLimit, "sidecar-memory-limit", "128Mi", "Memory limit of the sidecar; empty for none.")
	fs.StringVar(&c.sidecarLogLevel, "sidecar-log-level", inject.DefaultLogLevel, "Log level passed to the sidecar (--log-level): debug, info, warn or error.")
	fs.Int64Var(&c.sidecarRunAsUser, "sidecar-run-as-user", inject.DefaultRunAsUser, "UID and GID the sidecar runs as; the node directory /var/run/kalpc must be writable by it.")
	fs.IntVar(&c.sidecarHealthPort, "sidecar-health-port", inject.DefaultHealthPort, "Port, in each pod, of the sidecar's /healthz and /readyz (probes).")
	fs.IntVar(&c.sidecarMetricsPort, "sidecar-metrics-port", inject.DefaultMetricsPort, "Port, in each pod, of the sidecar's Prometheus metrics.")
	fs.BoolVar(&c.sidecarMetricsAuth, "sidecar-metrics-auth", false, "Start the sidecar with --metrics-auth: it serves /metrics only to bearer tokens allowed get on the non-resource URL /metrics (TokenReview and SubjectAccessReview).")
	fs.StringVar(&c.sidecarClusterRole, "sidecar-cluster-role", sidecarrole.Name, "ClusterRole the operator binds to the ServiceAccounts of injected pods.")
	fs.StringVar(&c.sidecarNodeVolume, "sidecar-node-volume", string(inject.NodeVolumeCSI), "How the node directory reaches the sidecar: csi (kalpc's CSI driver; admissible under Pod Security restricted) or hostPath (rejected by baseline and restricted).")
	fs.StringVar(&c.csiDriver, "csi-driver", inject.DefaultCSIDriver, "Name of kalpc's CSI driver, with --sidecar-node-volume=csi.")

	c.zap = zap.Options{}
	c.zap.BindFlags(fs)

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if c.leaderElectNS == "" {
		c.leaderElectNS = c.namespace
	}
	return c, c.validate()
}

// validate checks what the flag package cannot.
func (c *config) validate() error {
	var errs []error
	if c.namespace == "" {
		errs = append(errs, errors.New("--namespace must not be empty"))
	}
	if c.sidecarImage == "" {
		errs = append(errs, errors.New("--sidecar-image is required"))
	}
	switch c.certProvider {
	case certProviderOperator, certProviderCertManager:
	default:
		errs = append(errs, fmt.Errorf("--webhook-cert-provider must be %q or %q, not %q", certProviderOperator, certProviderCertManager, c.certProvider))
	}
	switch corev1.PullPolicy(c.sidecarPullPolicy) {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		errs = append(errs, fmt.Errorf("--sidecar-image-pull-policy must be Always, IfNotPresent or Never, not %q", c.sidecarPullPolicy))
	}
	switch inject.NodeVolumeMode(c.sidecarNodeVolume) {
	case inject.NodeVolumeCSI, inject.NodeVolumeHostPath:
	default:
		errs = append(errs, fmt.Errorf("--sidecar-node-volume must be %q or %q, not %q", inject.NodeVolumeCSI, inject.NodeVolumeHostPath, c.sidecarNodeVolume))
	}
	switch c.sidecarLogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--sidecar-log-level must be debug, info, warn or error, not %q", c.sidecarLogLevel))
	}
	for _, p := range []struct {
		name string
		port int
	}{{"--webhook-port", c.webhookPort}, {"--sidecar-health-port", c.sidecarHealthPort}, {"--sidecar-metrics-port", c.sidecarMetricsPort}} {
		if p.port < 1 || p.port > 65535 {
			errs = append(errs, fmt.Errorf("%s must be between 1 and 65535, not %d", p.name, p.port))
		}
	}
	if c.sidecarRunAsUser <= 0 {
		errs = append(errs, fmt.Errorf("--sidecar-run-as-user must be a non-root UID, not %d", c.sidecarRunAsUser))
	}
	if _, err := c.sidecarResources(); err != nil {
		errs = append(errs, err)
	}
	if c.certValidity <= 0 || c.caValidity <= 0 || c.certValidity > c.caValidity {
		errs = append(errs, errors.New("--webhook-cert-validity and --webhook-ca-validity must be positive, and the certificate's no longer than the CA's"))
	}
	if c.certCheck < time.Second {
		errs = append(errs, fmt.Errorf("--webhook-cert-check-interval %v must be at least 1s", c.certCheck))
	}
	return errors.Join(errs...)
}

// sidecarResources builds the sidecar's resource requirements from the flags.
func (c *config) sidecarResources() (corev1.ResourceRequirements, error) {
	r := corev1.ResourceRequirements{}
	set := func(list *corev1.ResourceList, name corev1.ResourceName, flagName, value string) error {
		if value == "" {
			return nil
		}
		q, err := resource.ParseQuantity(value)
		if err != nil {
			return fmt.Errorf("%s: invalid quantity %q: %w", flagName, value, err)
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
		return nil
	}
	return r, errors.Join(
		set(&r.Requests, corev1.ResourceCPU, "--sidecar-cpu-request", c.sidecarCPURequest),
		set(&r.Requests, corev1.ResourceMemory, "--sidecar-memory-request", c.sidecarMemoryRequest),
		set(&r.Limits, corev1.ResourceCPU, "--sidecar-cpu-limit", c.sidecarCPULimit),
		set(&r.Limits, corev1.ResourceMemory, "--sidecar-memory-limit", c.sidecarMemoryLimit),
	)
}

// sidecarConfig returns the injection settings.
func (c *config) sidecarConfig() inject.Config {
	res, _ := c.sidecarResources() // validated by parseFlags
	return inject.Config{
		Image:             c.sidecarImage,
		ImagePullPolicy:   corev1.PullPolicy(c.sidecarPullPolicy),
		Resources:         &res,
		LogLevel:          c.sidecarLogLevel,
		RunAsUser:         c.sidecarRunAsUser,
		HealthPort:        int32(c.sidecarHealthPort),
		MetricsPort:       int32(c.sidecarMetricsPort),
		MetricsAuth:       c.sidecarMetricsAuth,
		OperatorNamespace: c.namespace,
		NodeVolume:        inject.NodeVolumeMode(c.sidecarNodeVolume),
		CSIDriver:         c.csiDriver,
	}
}

// webhookHosts are the names the serving certificate is issued for.
func (c *config) webhookHosts() []string {
	svc := c.webhookService + "." + c.namespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}
