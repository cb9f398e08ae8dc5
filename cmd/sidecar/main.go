package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	kalpcv1alpha1 "github.com/kalpc/kalpc/api/v1alpha1"
	"github.com/kalpc/kalpc/internal/podid"
	"github.com/kalpc/kalpc/internal/sidecar"
	"github.com/kalpc/kalpc/internal/sidecar/connections"
	"github.com/kalpc/kalpc/internal/sidecar/httpauth"
	"github.com/kalpc/kalpc/internal/sidecar/metrics"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "kalpc-sidecar:", err)
		os.Exit(1)
	}
}

// run parses args and runs the sidecar until SIGTERM or SIGINT.
func run(args []string) error {
	cfg, err := parseFlags(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	handler := slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel})
	log := slog.New(handler).With("pod", cfg.podNamespace+"/"+cfg.podName)
	slog.SetDefault(log)
	ctrllog.SetLogger(logr.FromSlogHandler(handler))
	klog.SetSlogLogger(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	restCfg, err := restConfig(cfg.kubeconfig)
	if err != nil {
		return fmt.Errorf("failed to load the API server configuration: %w", err)
	}
	restCfg.UserAgent = "kalpc-sidecar"
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := kalpcv1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	// ConnectionPorts and Namespaces come from informers (get, list, watch);
	// pods only by GET, which is all the sidecar's RBAC allows.
	informers, err := cache.New(restCfg, cache.Options{
		Scheme: scheme,
		ByObject: map[client.Object]cache.ByObject{
			&kalpcv1alpha1.ConnectionPort{}: {},
			&corev1.Namespace{}:             {},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	})
	if err != nil {
		return fmt.Errorf("failed to create the informer cache: %w", err)
	}
	direct, err := client.New(restCfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("failed to create the API client: %w", err)
	}
	authn, err := authnclient.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("failed to create the TokenReview client: %w", err)
	}
	authz, err := authzclient.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("failed to create the SubjectAccessReview client: %w", err)
	}
	m := metrics.New()
	s, err := sidecar.New(sidecar.Options{
		PodSocket: cfg.podSocket,
		NodeDir:   cfg.nodeDir,
		TokenFile: cfg.tokenFile,
		Pod: podid.Identity{Namespace: cfg.podNamespace, PodName: cfg.podName, PodUID: cfg.podUID,
			ServiceAccount: cfg.serviceAccount},
		NodeName:     cfg.nodeName,
		Reader:       informers,
		APIReader:    direct,
		TokenReviews: authn.TokenReviews(),
		Metrics:      m,
		Log:          log,

		EndpointAnswerTimeout: cfg.endpointAnswerTimeout,
		MaxAppConnections:     cfg.maxAppConnections,
		MaxPeerConnections:    cfg.maxPeerConnections,
	})
	if err != nil {
		return err
	}

	cacheCtx, stopCache := context.WithCancel(context.Background())
	defer stopCache()
	go func() {
		if err := informers.Start(cacheCtx); err != nil {
			log.Error("informer cache stopped", "error", err)
		}
	}()

	var servers []*http.Server
	if cfg.healthAddr != "0" {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
			if err := s.Ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
		// The readiness probe the webhook injects: the application serves
		// every ConnectionPort that selects this pod (docs/sidecar.md).
		mux.HandleFunc(sidecar.PublishedPath, func(w http.ResponseWriter, r *http.Request) {
			if err := s.Published(r.Context()); err != nil {
				http.Error(w, "not serving: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
		servers = append(servers, &http.Server{Addr: cfg.healthAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second})
	}
	if cfg.metricsAddr != "0" {
		// The connection list names client pods of other namespaces: only
		// callers the API server lets reach this pod's ports (get
		// pods/proxy of this pod) may read it. See docs/security.md.
		guard, err := httpauth.New(httpauth.Guard{TokenReviews: authn.TokenReviews(), AccessReviews: authz.SubjectAccessReviews(), Log: log})
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		metricsHandler := m.Handler()
		if cfg.metricsAuth {
			metricsHandler = guard.Protect(func(*http.Request) httpauth.Attributes { return httpauth.NonResourceURL("/metrics") }, metricsHandler)
		}
		mux.Handle("/metrics", metricsHandler)
		debugAttrs := httpauth.PodProxy(cfg.podNamespace, cfg.podName)
		mux.Handle(connections.Path, guard.Protect(func(*http.Request) httpauth.Attributes { return debugAttrs }, s.ConnectionsHandler()))
		servers = append(servers, &http.Server{Addr: cfg.metricsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second})
	}
	for _, srv := range servers {
		ln, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			return fmt.Errorf("failed to listen on %s: %w", srv.Addr, err)
		}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server failed", "addr", srv.Addr, "error", err)
			}
		}()
	}
	runErr := s.Run(ctx)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutdownCtx)
	}
	log.Info("sidecar stopped")
	return runErr
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return ctrlconfig.GetConfig()
}
