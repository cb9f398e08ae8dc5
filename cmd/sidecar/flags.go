package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/kalpc/kalpc/internal/sidecar"
)

// Environment variables the operator sets from the downward API.
const (
	envPodName        = "KALPC_POD_NAME"
	envPodNamespace   = "KALPC_POD_NAMESPACE"
	envPodUID         = "KALPC_POD_UID"
	envNodeName       = "KALPC_NODE_NAME"
	envServiceAccount = "KALPC_SERVICE_ACCOUNT"
)

type config struct {
	podSocket   string
	nodeDir     string
	tokenFile   string
	healthAddr  string
	metricsAddr string
	metricsAuth bool
	logLevel    slog.Level
	kubeconfig  string
	cpuProfile  string

	endpointAnswerTimeout time.Duration
	maxAppConnections     int
	maxPeerConnections    int

	podName, podNamespace, podUID, nodeName, serviceAccount string
}

// parseFlags parses args and the environment (getenv).
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	var c config
	fs := flag.NewFlagSet("kalpc-sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.podSocket, "pod-socket", "/var/run/kalpc/pod/kalpc.sock", "Pod-local control socket to serve for the pod's applications.")
	fs.StringVar(&c.nodeDir, "node-dir", "/var/run/kalpc/node", "The node directory (host /var/run/kalpc), shared by every sidecar on the node.")
	fs.StringVar(&c.tokenFile, "token-file", "/var/run/secrets/kalpc.io/serviceaccount/token", "Projected ServiceAccount token (audience kalpc.io) presented to peer sidecars; re-read on every use.")
	fs.StringVar(&c.healthAddr, "health-addr", ":15980", "Address of /healthz, /readyz and /readyz/published (passes while the application serves every ConnectionPort selecting this pod); 0 disables.")
	fs.StringVar(&c.metricsAddr, "metrics-addr", ":15981", "Address of the Prometheus /metrics endpoint and of /debug/connections; 0 disables both.")
	fs.BoolVar(&c.metricsAuth, "metrics-auth", false,
		"Serve /metrics only to callers whose bearer token the API server authenticates (TokenReview) and allows get on the non-resource URL /metrics (SubjectAccessReview). /debug/connections always requires get on pods/proxy of this pod.")
	level := fs.String("log-level", "info", "Log level: debug, info, warn or error.")
	fs.StringVar(&c.cpuProfile, "cpu-profile", "", "Write a CPU profile (pprof) of the whole run to this file when the sidecar stops; for benchmarks, off by default.")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "Kubeconfig for the API server; empty means in-cluster (or $KUBECONFIG).")
	fs.DurationVar(&c.endpointAnswerTimeout, "endpoint-answer-timeout", sidecar.DefaultEndpointAnswerTimeout,
		"How long a connect waits for a server sidecar's first answer on each endpoint before skipping it (a live sidecar answers at once, with no API call; the server application's decision after it has the handshake timeout).")
	fs.IntVar(&c.maxAppConnections, "max-app-connections", sidecar.DefaultMaxAppConnections,
		"Most connections open at once on the pod socket (requests in progress and published ports); more are refused at once.")
	fs.IntVar(&c.maxPeerConnections, "max-peer-connections", sidecar.DefaultMaxPeerConnections,
		"Most connections open at once from peer sidecars on all of the pod's endpoints together; more are refused at once.")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := c.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", *level)
	}
	if c.endpointAnswerTimeout <= 0 {
		return nil, fmt.Errorf("--endpoint-answer-timeout must be positive, not %v", c.endpointAnswerTimeout)
	}
	if c.maxAppConnections <= 0 || c.maxPeerConnections <= 0 {
		return nil, fmt.Errorf("--max-app-connections and --max-peer-connections must be positive (got %d, %d)", c.maxAppConnections, c.maxPeerConnections)
	}
	for name, v := range map[string]string{"--pod-socket": c.podSocket, "--node-dir": c.nodeDir, "--token-file": c.tokenFile} {
		if v == "" {
			return nil, fmt.Errorf("%s must not be empty", name)
		}
	}
	c.podName = getenv(envPodName)
	c.podNamespace = getenv(envPodNamespace)
	c.podUID = getenv(envPodUID)
	c.nodeName = getenv(envNodeName)
	c.serviceAccount = getenv(envServiceAccount)
	var missing []string
	for name, v := range map[string]string{envPodName: c.podName, envPodNamespace: c.podNamespace, envPodUID: c.podUID} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, errors.New("environment variables not set (the operator sets them from the downward API): " + strings.Join(missing, ", "))
	}
	return &c, nil
}
