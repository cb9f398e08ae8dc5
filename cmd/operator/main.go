package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kalpc/kalpc/internal/operator"
	"github.com/kalpc/kalpc/internal/operator/cert"
)

// The operator authorizes metrics scrapes with TokenReviews and
// SubjectAccessReviews when --metrics-secure is set.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete,namespace=kalpc-system

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "kalpc-operator:", err)
		os.Exit(1)
	}
}

// run parses args and runs the operator until it receives SIGTERM or SIGINT.
func run(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&cfg.zap)))
	log := ctrl.Log.WithName("setup")

	scheme, err := operator.NewScheme()
	if err != nil {
		return err
	}

	var tlsOpts []func(*tls.Config)
	if !cfg.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}

	webhookOpts := webhook.Options{Port: cfg.webhookPort, TLSOpts: tlsOpts}
	var rotator *cert.Rotator
	if cfg.certProvider == certProviderOperator {
		rotator, err = cert.New(cert.Options{
			Secret:                   client.ObjectKey{Namespace: cfg.namespace, Name: cfg.certSecret},
			WebhookConfigurationName: cfg.webhookConfig,
			Hosts:                    cfg.webhookHosts(),
			CAValidity:               cfg.caValidity,
			CertValidity:             cfg.certValidity,
			CheckInterval:            cfg.certCheck,
		})
		if err != nil {
			return fmt.Errorf("failed to configure the webhook certificate rotator: %w", err)
		}
		webhookOpts.TLSOpts = append(webhookOpts.TLSOpts, rotator.TLSOption)
	} else {
		webhookOpts.CertDir = cfg.certDir
	}

	metricsOpts := metricsserver.Options{
		BindAddress:   cfg.metricsAddr,
		SecureServing: cfg.metricsSecure,
		TLSOpts:       tlsOpts,
	}
	if cfg.metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("failed to load the Kubernetes client configuration: %w", err)
	}
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         operator.CacheOptions(),
		Metrics:                       metricsOpts,
		WebhookServer:                 webhook.NewServer(webhookOpts),
		HealthProbeBindAddress:        cfg.probeAddr,
		LeaderElection:                cfg.leaderElect,
		LeaderElectionID:              cfg.leaderElectID,
		LeaderElectionNamespace:       cfg.leaderElectNS,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("failed to create the manager: %w", err)
	}

	if rotator != nil {
		if err := rotator.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	if err := operator.Setup(mgr, operator.Options{
		Namespace:          cfg.namespace,
		Sidecar:            cfg.sidecarConfig(),
		SidecarClusterRole: cfg.sidecarClusterRole,
	}); err != nil {
		return fmt.Errorf("failed to set up the operator: %w", err)
	}
	if cfg.leaderElect {
		// The Lease goes with the webhook configuration (helm uninstall).
		if err := mgr.Add(&operator.LeaseOwner{
			Client:                   mgr.GetClient(),
			Reader:                   mgr.GetAPIReader(),
			Lease:                    client.ObjectKey{Namespace: cfg.leaderElectNS, Name: cfg.leaderElectID},
			WebhookConfigurationName: cfg.webhookConfig,
		}); err != nil {
			return fmt.Errorf("failed to add the Lease owner: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("failed to add the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook-server", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return fmt.Errorf("failed to add the webhook readiness check: %w", err)
	}

	log.Info("Starting the kalpc operator", "namespace", cfg.namespace, "certProvider", cfg.certProvider, "leaderElection", cfg.leaderElect)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		return fmt.Errorf("operator stopped: %w", err)
	}
	return nil
}
